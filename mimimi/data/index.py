"""Index a dataset root: one row per clip, from file names alone (no audio is decoded).

Four layouts are recognised anywhere below the root (column ``layout``; their facts are ``mimimi.data.dcase``'s
``LAYOUTS``):

* ``"dcase2020"``, DCASE 2020 Task 2: ``[dev_data/]<type>/{train,test}/{normal,anomaly}_id_XX_NNNNNNNN.wav``,
  and the evaluation set's unlabeled ``<type>/test/id_XX_NNNNNNNN.wav``;
* ``"dcase2021"``, DCASE 2021 Task 2: ``<type>/train/section_XX_{source,target}_train_normal_NNNN_<attr>.wav``,
  ``<type>/{source,target}_test/section_XX_{source,target}_test_{normal,anomaly}_NNNN.wav``, and the
  evaluation set's ``section_XX_{source,target}_test_NNNN.wav`` (domain in the name, label hidden);
* ``"dcase2022"``, DCASE 2022 to 2025 Task 2: ``<type>/{train,test}/section_XX_{source,target}_{train,test}_
  {normal,anomaly}_NNNN[_<attr>].wav`` (``<attr>`` may be ``noAttribute``; numbering 0- or 1-based), the
  attribute files ``<type>/attributes_XX.csv``, the evaluation set's ``<type>/test/section_XX_test_NNNN.wav``
  (label and domain hidden) and 2025's ``<type>/supplemental/section_XX_<kind>_NNNN_.wav`` (split
  ``"supplemental"``; label ``normal`` for ``machine`` clips, else ``unknown``);
* ``"mimii"``: ``[<snr>_dB_<type>/]<type>/id_XX/{normal,abnormal}/NNNNNNNN.wav``, split like the MIMII
  baseline: per (snr, type, ID) the first N normal clips in name order plus all N abnormal clips are
  the test split, the remaining normal clips the training split.

The 2021 and 2022 train names are the same, so the layout is decided per type folder: ``dcase2021`` if it
has ``source_test/`` or ``target_test/`` (or 2021 evaluation names), ``dcase2022`` if it has 2022 test
names, ``supplemental/`` or an attribute file; a type folder holding only ``train/`` (an additional training
set) takes the layout of the nearest type folders that have one (siblings first, then cousins: ``eval_data/fan``
follows ``dev_data/*`` of the same year's folder), else dcase2022.

Columns (``COLUMNS``): ``path``, ``machine_type``, ``machine_id``, ``split`` (``SPLITS``), ``label``
(``LABELS``; ``unknown`` = hidden), ``snr`` (MIMII's dB folder, else NaN), ``layout``, ``section`` (``"XX"``
for dcase2021/dcase2022, else ``""``), ``domain`` (``source`` | ``target`` | ``unknown`` = hidden; ``source``
for dcase2020 and MIMII) and ``attributes`` (the name's part after ``NNNN_``: ``"vel_12"``, ``"m-n_W"``,
``"noAttribute"``; ``""`` when none). The role of ``machine_id`` depends on the layout: the machine ID
(``id_XX``) for dcase2020 and MIMII, the section (``section_XX``, the class of the self-supervised
classifier) for dcase2021 and dcase2022; ``DatasetIndex.id_role`` says which ("machine ID" | "section").

The attribute files are read into ``DatasetIndex.attributes``. The hidden labels (and the 2022+ domains, and
the 2023/2024 attributes) of an evaluation set are filled from the published ground truth with
``index_dataset(root, ground_truth=folder)``.

Files that match no layout are returned in ``DatasetIndex.unmatched`` and logged, never dropped quietly.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for rel in ["fan/train/normal_id_00_00000000.wav", "fan/test/anomaly_id_00_00000000.wav",
...             "6_dB_valve/valve/id_02/abnormal/00000003.wav", "notes.txt"]:
...     (root / rel).parent.mkdir(parents=True, exist_ok=True); (root / rel).touch()
>>> idx = index_dataset(root)
>>> idx.clips[["machine_type", "machine_id", "split", "label", "snr"]].to_string(index=False)
'machine_type machine_id split   label  snr\\n         fan         00  test anomaly  NaN\\n         fan         00 train  normal  NaN\\n       valve         02  test anomaly  6.0'
>>> [p.name for p in idx.unmatched], idx.id_role
(['notes.txt'], 'machine ID')

A 2022-style development clip and a hidden evaluation clip, then the evaluation clip's ground truth:

>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for rel in ["dev_data/fan/test/section_00_target_test_anomaly_0003_m-n_W.wav",
...             "eval_data/fan/test/section_03_test_0000.wav"]:
...     (root / rel).parent.mkdir(parents=True, exist_ok=True); (root / rel).touch()
>>> idx = index_dataset(root)
>>> cols = ["machine_type", "machine_id", "split", "label", "domain", "attributes", "layout"]
>>> idx.clips[cols].values.tolist(), idx.id_role  # doctest: +NORMALIZE_WHITESPACE
([['fan', '00', 'test', 'anomaly', 'target', 'm-n_W', 'dcase2022'],
  ['fan', '03', 'test', 'unknown', 'unknown', '', 'dcase2022']], 'section')
>>> gt = pathlib.Path(tempfile.mkdtemp())
>>> for folder, value in [("ground_truth_data", 1), ("ground_truth_domain", 0)]:  # 1 = anomaly; 0 = source
...     (gt / folder).mkdir()
...     _ = (gt / folder / "ground_truth_fan_section_03_test.csv").write_text(f"section_03_0000.wav,{value}\\n")
>>> index_dataset(root, ground_truth=gt).clips[cols].values.tolist()[1]
['fan', '03', 'test', 'anomaly', 'source', '', 'dcase2022']
"""
from __future__ import annotations

import csv
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mimimi.data import dcase

log = logging.getLogger(__name__)

COLUMNS = ["path", "machine_type", "machine_id", "split", "label", "snr", "layout", "section", "domain",
           "attributes"]
SPLITS = ("train", "test", "supplemental")  # supplemental: 2025's extra clean machine/noise clips, never train
LABELS = ("normal", "anomaly", "unknown")
DOMAINS = (*dcase.DOMAINS, "unknown")
ATTRIBUTE_KEYS = ["machine_type", "section", "file_name"]  # DatasetIndex.attributes' first columns

_DCASE2020_FILE = re.compile(r"^(?:(?P<label>normal|anomaly)_)?id_(?P<id>\d{2})_\d{8}\.wav$")
_DCASE2020_FOLDERS = ("train", "test")
_DOMAIN = "(?P<domain>" + "|".join(dcase.DOMAINS) + ")"
_SECTION_CLIP = re.compile(  # section_00_source_test_normal_0000_m-n_W.wav, ..._0000.wav, ..._0000_.wav
    rf"^section_(?P<section>\d{{2}})_{_DOMAIN}_(?P<split>train|test)_(?P<label>normal|anomaly)"
    r"_\d{4}(?:_(?P<attributes>.*))?\.wav$")
_SECTION_EVAL2021 = re.compile(rf"^section_(?P<section>\d{{2}})_{_DOMAIN}_test_\d{{4}}\.wav$")
_SECTION_EVAL = re.compile(r"^section_(?P<section>\d{2})_test_(?P<number>\d{4})\.wav$")
_SECTION_SUPPLEMENTAL = re.compile(
    r"^section_(?P<section>\d{2})_(?P<kind>[A-Za-z]+)_\d{4}(?:_(?P<attributes>.*))?\.wav$")
_SECTION_IN_NAME = re.compile(r"^section_(\d{2})_")
_ATTRIBUTES_CSV = re.compile(r"^attributes_(?P<section>\d{2})\.csv$")
_MIMII_FILE = re.compile(r"^\d{8}\.wav$")
_MIMII_ID = re.compile(r"^id_(?P<id>\d{2})$")
_MIMII_SNR = re.compile(r"^(?P<snr>-?\d+)_dB_(?P<type>.+)$")
_ID_IN_NAME = re.compile(r"(?:^|_)id_(\d{2})(?=_|\.|$)")  # any name: normal_id_02_00000007.wav, id_02.wav


class DatasetError(ValueError):
    """A dataset root that cannot be indexed (missing, empty, no recognisable clips, a malformed CSV)."""


@dataclass
class DatasetIndex:
    """``clips``: one row per clip (columns ``COLUMNS``); ``unmatched``: files in no layout;
    ``attributes``: the rows of every ``attributes_XX.csv`` (``ATTRIBUTE_KEYS``, then the CSVs' own columns)."""

    root: Path
    clips: pd.DataFrame
    unmatched: list[Path] = field(default_factory=list)
    attributes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ATTRIBUTE_KEYS))

    @property
    def id_role(self) -> str:
        """What ``machine_id`` holds: ``"machine ID"`` (dcase2020, mimii) or ``"section"`` (dcase2021,
        dcase2022). An index holding both kinds has no single role: DatasetError."""
        layouts = sorted(set(self.clips["layout"]))
        # the first layout of each role
        by_role = {dcase.LAYOUTS[layout].id_role: layout for layout in reversed(layouts)}
        if len(by_role) > 1:
            raise DatasetError(
                f"{self.root}: the index mixes {by_role['machine ID']} clips (machine_id is a machine ID) and "
                f"{by_role['section']} clips (machine_id is a section); index them separately")
        return next(iter(by_role), "machine ID")


def _parse_dcase2020(p: Path) -> dict | None:
    m = _DCASE2020_FILE.match(p.name)
    if not m or p.parent.name not in _DCASE2020_FOLDERS or len(p.parts) < 3:
        return None
    return dict(machine_type=p.parent.parent.name, machine_id=m["id"], split=p.parent.name,
                label=m["label"] or "unknown", snr=math.nan, layout="dcase2020", section="", domain="source",
                attributes="")


def _parse_section(p: Path) -> dict | None:
    """A 2021+ clip. Its ``layout`` is what its name or folder proves (dcase2021 / dcase2022), or None for a
    train clip (the same name in both years): ``_resolve_layouts`` decides those per type folder."""
    if len(p.parts) < 3:
        return None
    folder, name = p.parent.name, p.name
    if m := _SECTION_CLIP.match(name):
        if folder == m["split"]:
            proof = "dcase2022" if folder == "test" else None
        elif m["split"] == "test" and folder == f"{m['domain']}_test":
            proof = "dcase2021"
        else:
            return None
        row = dict(split=m["split"], label=m["label"], domain=m["domain"], attributes=m["attributes"] or "")
    elif (m := _SECTION_EVAL2021.match(name)) and folder in ("test", f"{m['domain']}_test"):
        proof, row = "dcase2021", dict(split="test", label="unknown", domain=m["domain"], attributes="")
    elif (m := _SECTION_EVAL.match(name)) and folder == "test":
        proof, row = "dcase2022", dict(split="test", label="unknown", domain="unknown", attributes="")
    elif (m := _SECTION_SUPPLEMENTAL.match(name)) and folder == "supplemental":
        proof = "dcase2022"
        row = dict(split="supplemental", label="normal" if m["kind"] == "machine" else "unknown",
                   domain="unknown", attributes=m["attributes"] or "")
    else:
        return None
    return dict(row, machine_type=p.parent.parent.name, machine_id=m["section"], section=m["section"],
                snr=math.nan, layout=proof)


def _resolve_layouts(rows: list[dict], attribute_dirs: set[Path]) -> None:
    """Give every 2021+ row its type folder's layout, in place (see the module docstring)."""
    proofs: dict[Path, set] = {d: {"dcase2022"} for d in attribute_dirs}
    for r in rows:
        proofs.setdefault(Path(r["path"]).parent.parent, set()).update({r["layout"]} - {None})
    decided = {d: ("dcase2021" if "dcase2021" in s else "dcase2022") for d, s in proofs.items() if s}
    for r in rows:
        d = Path(r["path"]).parent.parent
        r["layout"] = decided.get(d) or _nearest_layout(d, decided)


def _nearest_layout(type_dir: Path, decided: dict[Path, str]) -> str:
    """The layout of the decided type folders nearest to ``type_dir`` (sharing its closest ancestor that
    holds any), when they agree; else dcase2022."""
    for ancestor in type_dir.parents:
        pool = {layout for d, layout in decided.items() if ancestor in d.parents}
        if pool:
            return pool.pop() if len(pool) == 1 else "dcase2022"
    return "dcase2022"


def _parse_mimii(p: Path) -> dict | None:
    if not _MIMII_FILE.match(p.name) or p.parent.name not in ("normal", "abnormal") or len(p.parts) < 5:
        return None
    m = _MIMII_ID.match(p.parent.parent.name)
    if not m:
        return None
    machine_type = p.parent.parent.parent.name
    snr = math.nan
    s = _MIMII_SNR.match(p.parent.parent.parent.parent.name)
    if s and s["type"] == machine_type:
        snr = float(s["snr"])
    label = "normal" if p.parent.name == "normal" else "anomaly"
    return dict(machine_type=machine_type, machine_id=m["id"], split="", label=label, snr=snr, layout="mimii",
                section="", domain="source", attributes="")


def _mimii_split(rows: list[dict]) -> None:
    """MIMII baseline split, in place: per (snr, type, ID), all anomalies + as many normals -> test."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (str(Path(r["path"]).parent.parent), r["machine_type"], r["machine_id"])
        groups.setdefault(key, []).append(r)
    for group in groups.values():
        normals = sorted((r for r in group if r["label"] == "normal"), key=lambda r: Path(r["path"]).name)
        n_anomaly = sum(r["label"] == "anomaly" for r in group)
        for i, r in enumerate(normals):
            r["split"] = "test" if i < n_anomaly else "train"
        for r in group:
            if r["label"] == "anomaly":
                r["split"] = "test"


def _csv_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line of a CSV file."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [(n, fields) for n, fields in enumerate(csv.reader(f), 1) if any(x.strip() for x in fields)]


def _read_attributes(path: Path) -> list[dict]:
    """The rows of an ``attributes_XX.csv`` (header ``file_name,d1p,d1v,...`` required), keyed by column."""
    lines = _csv_lines(path)
    if not lines:
        raise DatasetError(f"{path}: attribute file is empty (need a header row file_name,d1p,d1v,...)")
    header = [h.strip() for h in lines[0][1]]
    if header[0].lower().endswith(".wav"):
        raise DatasetError(f"{path}: attribute file has no header row (line {lines[0][0]} is the clip "
                           f"{header[0]!r}; need file_name,d1p,d1v,...)")
    if "file_name" not in header:
        raise DatasetError(f"{path}: attribute file has no file_name column (header {','.join(header)})")
    if "" in header or len(set(header)) != len(header) or set(header) & {"machine_type", "section"}:
        raise DatasetError(f"{path}: attribute file header {','.join(header)} has an empty, repeated or "
                           "reserved (machine_type, section) column name")
    rows = []
    for n, fields in lines[1:]:
        if len(fields) != len(header):
            raise DatasetError(f"{path}: line {n} has {len(fields)} field(s), the header has {len(header)}")
        rows.append(dict(zip(header, fields)))
    return rows


def _attributes_table(files: list[Path]) -> pd.DataFrame:
    """``DatasetIndex.attributes``: every attribute file's rows, with its machine type and section."""
    rows, columns = [], list(ATTRIBUTE_KEYS)
    for path in files:
        section = _ATTRIBUTES_CSV.match(path.name)["section"]
        for row in _read_attributes(path):
            columns += [c for c in row if c not in columns]
            rows.append(dict(row, machine_type=path.parent.name, section=section))
    return pd.DataFrame(rows, columns=columns).fillna("")


# ---------------------------------------------------------------------------------------------
# ground truth of evaluation sets with hidden labels

def _read_ground_truth(path: Path, clips: dict[str, dict], what: str) -> list[tuple[int, dict, str]]:
    """(line, clip row, value) of a headerless ``<clip name>,<value>`` file whose rows must name exactly the
    hidden ``clips`` (ground-truth name -> row) of one machine type and section."""
    if not path.is_file():
        example = Path(next(iter(clips.values()))["path"]).name
        raise DatasetError(f"{path}: no such ground-truth file, needed for the {what} of {len(clips)} hidden "
                           f"clip(s), e.g. {example}")
    out, seen, unknown = [], set(), []
    for n, fields in _csv_lines(path):
        if len(fields) != 2:
            raise DatasetError(f"{path}: line {n} has {len(fields)} field(s), expected 2 (clip name, {what})")
        name, value = fields[0].strip(), fields[1].strip()
        if name in seen:
            raise DatasetError(f"{path}: line {n} repeats the clip {name}")
        seen.add(name)
        if name in clips:
            out.append((n, clips[name], value))
        else:
            unknown.append(name)
    if unknown:
        raise DatasetError(f"{path}: {len(unknown)} row(s) name no hidden clip of the index, e.g. {unknown[0]}")
    if missing := [name for name in clips if name not in seen]:
        raise DatasetError(f"{path}: no row for {len(missing)} hidden clip(s) of the index, e.g. "
                           f"{Path(clips[missing[0]]['path']).name} (row {missing[0]})")
    return out


def _fill(path: Path, clips: dict[str, dict], column: str, values: dict[str, str]) -> None:
    """Set ``column`` of each hidden clip from ``path`` (value ``0``/``1`` -> ``values``)."""
    for n, row, value in _read_ground_truth(path, clips, column):
        if value not in values:
            raise DatasetError(f"{path}: line {n} has {column} {value!r}, expected one of {sorted(values)}")
        row[column] = values[value]


def _apply_ground_truth(rows: list[dict], gt: Path) -> None:
    """Fill label (and the hidden domain, and attributes where ``ground_truth_attributes/`` has them) of every
    hidden 2021+ evaluation clip from the published ground-truth folder ``gt``, in place."""
    labels, domains = {"0": "normal", "1": "anomaly"}, dict(zip("01", dcase.DOMAINS))  # the evaluators' 0 and 1
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r["layout"] in dcase.SECTION_LAYOUTS and r["split"] == "test" and r["label"] == "unknown":
            name = Path(r["path"]).name
            if r["layout"] == "dcase2022":  # section_03_test_0000.wav is section_03_0000.wav in the ground truth
                name = f"section_{r['section']}_{_SECTION_EVAL.match(name)['number']}.wav"
            key = (r["layout"], r["machine_type"], r["section"], r["domain"])
            groups.setdefault(key, {})[name] = r
    if not groups:
        log.warning("%s: ground truth given, but the index holds no evaluation clip with a hidden label", gt)
    for (layout, mtype, section, domain), clips in sorted(groups.items()):
        if layout == "dcase2021":  # one file per domain, in the folder itself or in ground_truth_data/
            name = f"ground_truth_{mtype}_section_{section}_{domain}_test.csv"
            nested = gt / "ground_truth_data" / name
            _fill(nested if nested.is_file() and not (gt / name).is_file() else gt / name, clips, "label", labels)
            continue
        name = f"ground_truth_{mtype}_section_{section}_test.csv"
        _fill(gt / "ground_truth_data" / name, clips, "label", labels)
        _fill(gt / "ground_truth_domain" / name, clips, "domain", domains)
        if (path := gt / "ground_truth_attributes" / name).is_file():  # 2023/2024: the clip's full name
            for n, row, full in _read_ground_truth(path, clips, "full name"):
                if not (m := _SECTION_CLIP.match(f"{full}.wav")):
                    raise DatasetError(f"{path}: line {n} has {full!r}, not a full clip name "
                                       "section_XX_<domain>_test_<label>_NNNN_<attributes>")
                row["attributes"] = m["attributes"] or ""


def index_dataset(root: str | Path, ground_truth: str | Path | None = None) -> DatasetIndex:
    """Walk ``root`` and return every clip it holds, in a deterministic order. ``ground_truth``: a folder of
    published ground truth (2021: ``ground_truth_<type>_section_XX_<domain>_test.csv``; 2022+:
    ``ground_truth_{data,domain}/ground_truth_<type>_section_XX_test.csv``, optional
    ``ground_truth_attributes/``) filling the hidden labels, domains and attributes of evaluation clips."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset root does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    gt = None if ground_truth is None else Path(ground_truth)
    if gt is not None and not gt.is_dir():
        raise DatasetError(f"{gt}: ground-truth folder does not exist or is not a directory")
    skip = gt.resolve() if gt is not None else None  # a ground-truth folder inside the root is not dataset content
    rows, section_rows, mimii_rows, attribute_files, unmatched = [], [], [], [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")  # caches, download markers
                             and (skip is None or (Path(dirpath) / d).resolve() != skip))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if _ATTRIBUTES_CSV.match(name):
                attribute_files.append(p)
                continue
            for parse, bucket in ((_parse_dcase2020, None), (_parse_section, section_rows),
                                  (_parse_mimii, mimii_rows)):
                if (row := parse(p)) is not None:
                    row["path"] = str(p)
                    rows.append(row)
                    if bucket is not None:
                        bucket.append(row)
                    break
            else:
                unmatched.append(p)
    if not rows:
        what = f"{len(unmatched)} other file(s), e.g. {unmatched[0]}" if unmatched else "it is empty"
        raise DatasetError(f"{root}: no clips in a DCASE Task 2 (2020-2025) or MIMII layout ({what})")
    _mimii_split(mimii_rows)
    _resolve_layouts(section_rows, {p.parent for p in attribute_files})
    if gt is not None:
        _apply_ground_truth(section_rows, gt)
    if unmatched:
        log.warning(
            "%s: %d file(s) match neither the DCASE nor the MIMII layouts and are not indexed, e.g. %s",
            root, len(unmatched), ", ".join(str(p) for p in unmatched[:3]),
        )
    clips = pd.DataFrame(rows, columns=COLUMNS)
    clips = clips.sort_values(["machine_type", "machine_id", "split", "label", "path"], ignore_index=True)
    return DatasetIndex(root=root, clips=clips, unmatched=unmatched, attributes=_attributes_table(attribute_files))


def select(clips: pd.DataFrame, machine_type: str | None = None, split: str | None = None,
           label: str | None = None) -> pd.DataFrame:
    """Rows matching every filter given (None = any)."""
    mask = pd.Series(True, index=clips.index)
    for col, value in (("machine_type", machine_type), ("split", split), ("label", label)):
        if value is not None:
            mask &= clips[col] == value
    return clips[mask].reset_index(drop=True)


def counts(clips: pd.DataFrame) -> pd.DataFrame:
    """Clips per (type, ID) and (split, label): the table the demo and the CLI print. Where 2021+ clips are
    present the columns are (split, domain, label), and an index of 2021+ clips only names its rows section."""
    section = (clips["layout"].isin(dcase.SECTION_LAYOUTS) if "layout" in clips.columns
               else pd.Series(False, clips.index))
    columns = ["split", "domain", "label"] if section.any() else ["split", "label"]
    table = clips.pivot_table(index=["machine_type", "machine_id"], columns=columns,
                              values="path", aggfunc="count", fill_value=0)
    table.columns = ["/".join(c) for c in table.columns]
    if section.all():
        table.index = table.index.set_names(["machine_type", "section"])
    return table


def machine_id_from_path(path: str | Path) -> str | None:
    """The ``XX`` of a 2021+ name ``section_XX_...`` (the section), else of ``..._id_XX_...`` in a file name,
    else of the nearest ``id_XX`` folder (MIMII); or None.

    >>> machine_id_from_path("fan/test/anomaly_id_02_00000007.wav")
    '02'
    >>> machine_id_from_path("6_dB_fan/fan/id_04/normal/00000001.wav"), machine_id_from_path("x.wav")
    ('04', None)
    >>> machine_id_from_path("ToyCar/test/section_01_source_test_normal_0003_vel_8.wav")
    '01'
    """
    p = Path(path)
    if m := _SECTION_IN_NAME.match(p.name):
        return m[1]
    if m := _ID_IN_NAME.search(p.name):
        return m[1]
    for part in reversed(p.parent.parts):
        if m := _MIMII_ID.match(part):
            return m["id"]
    return None


def normalize_id(value) -> str | None:
    """A machine ID as given by a user (``"id_02"``, ``2``, ``"2"``, ``"02"``) -> ``"02"``; None, NaN, "" -> None.

    >>> normalize_id("id_02"), normalize_id(2), normalize_id(" 7 "), normalize_id(float("nan")), normalize_id("")
    ('02', '02', '07', None, None)
    """
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    s = str(value).strip().removeprefix("id_")
    return (s.zfill(2) if s.isdigit() else s) or None

