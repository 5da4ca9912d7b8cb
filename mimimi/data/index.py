"""Index a dataset root: one row per clip, from file names alone (no audio is decoded).

Two layouts are recognised anywhere below the root:

* DCASE 2020 Task 2: ``[dev_data/]<type>/{train,test}/{normal,anomaly}_id_XX_NNNNNNNN.wav``, and the
  evaluation set's unlabeled ``<type>/test/id_XX_NNNNNNNN.wav``;
* MIMII: ``[<snr>_dB_<type>/]<type>/id_XX/{normal,abnormal}/NNNNNNNN.wav``, split like the MIMII
  baseline: per (snr, type, ID) the first N normal clips in name order plus all N abnormal clips are
  the test split, the remaining normal clips the training split.

Files that match neither are returned in ``DatasetIndex.unmatched`` and logged, never dropped quietly.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for rel in ["fan/train/normal_id_00_00000000.wav", "fan/test/anomaly_id_00_00000000.wav",
...             "6_dB_valve/valve/id_02/abnormal/00000003.wav", "notes.txt"]:
...     (root / rel).parent.mkdir(parents=True, exist_ok=True); (root / rel).touch()
>>> idx = index_dataset(root)
>>> idx.clips[["machine_type", "machine_id", "split", "label", "snr"]].to_string(index=False)
'machine_type machine_id split   label  snr\\n         fan         00  test anomaly  NaN\\n         fan         00 train  normal  NaN\\n       valve         02  test anomaly  6.0'
>>> [p.name for p in idx.unmatched]
['notes.txt']
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

COLUMNS = ["path", "machine_type", "machine_id", "split", "label", "snr", "layout"]
SPLITS = ("train", "test")
LABELS = ("normal", "anomaly", "unknown")

_DCASE_FILE = re.compile(r"^(?:(?P<label>normal|anomaly)_)?id_(?P<id>\d{2})_\d{8}\.wav$")
_MIMII_FILE = re.compile(r"^\d{8}\.wav$")
_MIMII_ID = re.compile(r"^id_(?P<id>\d{2})$")
_MIMII_SNR = re.compile(r"^(?P<snr>-?\d+)_dB_(?P<type>.+)$")
_ID_IN_NAME = re.compile(r"(?:^|_)id_(\d{2})(?=_|\.|$)")  # any name: normal_id_02_00000007.wav, id_02.wav


class DatasetError(ValueError):
    """A dataset root that cannot be indexed (missing, empty, no recognisable clips)."""


@dataclass
class DatasetIndex:
    """``clips``: one row per clip (columns ``COLUMNS``); ``unmatched``: files in neither layout."""

    root: Path
    clips: pd.DataFrame
    unmatched: list[Path] = field(default_factory=list)


def _parse_dcase(p: Path) -> dict | None:
    m = _DCASE_FILE.match(p.name)
    if not m or p.parent.name not in SPLITS or len(p.parts) < 3:
        return None
    return dict(
        machine_type=p.parent.parent.name,
        machine_id=m["id"],
        split=p.parent.name,
        label=m["label"] or "unknown",
        snr=math.nan,
        layout="dcase",
    )


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
    return dict(machine_type=machine_type, machine_id=m["id"], split="", label=label, snr=snr, layout="mimii")


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


def index_dataset(root: str | Path) -> DatasetIndex:
    """Walk ``root`` and return every clip it holds, in a deterministic order."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset root does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    rows, mimii_rows, unmatched = [], [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # caches, download markers
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            row = _parse_dcase(p)
            if row is None:
                row = _parse_mimii(p)
                if row is not None:
                    mimii_rows.append(row)
            if row is None:
                unmatched.append(p)
                continue
            row["path"] = str(p)
            rows.append(row)
    if not rows:
        what = f"{len(unmatched)} other file(s), e.g. {unmatched[0]}" if unmatched else "it is empty"
        raise DatasetError(f"{root}: no clips in the DCASE 2020 or MIMII layout ({what})")
    _mimii_split(mimii_rows)
    if unmatched:
        log.warning(
            "%s: %d file(s) match neither the DCASE nor the MIMII layout and are not indexed, e.g. %s",
            root, len(unmatched), ", ".join(str(p) for p in unmatched[:3]),
        )
    clips = pd.DataFrame(rows, columns=COLUMNS)
    clips = clips.sort_values(["machine_type", "machine_id", "split", "label", "path"], ignore_index=True)
    return DatasetIndex(root=root, clips=clips, unmatched=unmatched)


def select(clips: pd.DataFrame, machine_type: str | None = None, split: str | None = None,
           label: str | None = None) -> pd.DataFrame:
    """Rows matching every filter given (None = any)."""
    mask = pd.Series(True, index=clips.index)
    for col, value in (("machine_type", machine_type), ("split", split), ("label", label)):
        if value is not None:
            mask &= clips[col] == value
    return clips[mask].reset_index(drop=True)


def counts(clips: pd.DataFrame) -> pd.DataFrame:
    """Clips per (type, ID) and (split, label): the table the demo and the CLI print."""
    table = clips.pivot_table(index=["machine_type", "machine_id"], columns=["split", "label"],
                              values="path", aggfunc="count", fill_value=0)
    table.columns = [f"{s}/{l}" for s, l in table.columns]
    return table


def machine_id_from_path(path: str | Path) -> str | None:
    """The ``XX`` of ``..._id_XX_...`` in a file name, else of the nearest ``id_XX`` folder (MIMII); or None.

    >>> machine_id_from_path("fan/test/anomaly_id_02_00000007.wav")
    '02'
    >>> machine_id_from_path("6_dB_fan/fan/id_04/normal/00000001.wav"), machine_id_from_path("x.wav")
    ('04', None)
    """
    p = Path(path)
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mimimi.index", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="dataset root (DCASE 2020 Task 2 or MIMII layout)")
    ap.add_argument("--list-unmatched", action="store_true", help="print every file that was not indexed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        idx = index_dataset(args.root)
    except DatasetError as e:
        sys.exit(f"error: {e}")
    print(f"{len(idx.clips)} clips under {idx.root}")
    print(counts(idx.clips).to_string())
    if idx.unmatched:
        print(f"{len(idx.unmatched)} file(s) not in either layout")
        if args.list_unmatched:
            print("\n".join(str(p) for p in idx.unmatched))


if __name__ == "__main__":
    main()
