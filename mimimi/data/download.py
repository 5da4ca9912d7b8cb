"""Download, verify and unpack the DCASE 2020–2025 Task 2 and MIMII datasets from Zenodo.

The command over it is ``python -m mimimi.download --dataset NAME --out DIR [--part dev,eval-train,eval-test]
[--machine-types fan,pump] [--snr=6,0,-6] [--base-url URL] [--keep-archives] [--dry-run] [--urls]`` (also
``mimimi download ...``). The records, archive names and machine types are the years' in ``mimimi.data.dcase``
(``YEARS``); ``DATASETS`` is the downloader's view of them.

What goes where (``DIR`` is ``--out``; archives unpack as they are, nothing is reshuffled). Each DCASE 2021–2025
dataset lives in its own folder ``DIR/dcase<year>`` (its dev types reuse names like ``fan`` and its archive names
like ``dev_fan.zip`` repeat from year to year), laid out like DCASE 2020 below it:

==============  ==============  ===========================================  =========================================
dataset         ``--part``      Zenodo record -> archives                    unpacked into
==============  ==============  ===========================================  =========================================
dcase2020-dev                   3678171 -> ``dev_data_<type>.zip``           ``DIR/dev_data/<type>/{train,test}``
dcase2020-eval                  3727685 -> ``eval_data_train_<type>.zip``    ``DIR/eval_data/<type>/train``
                                3841772 -> ``eval_data_test_<type>.zip``     ``DIR/eval_data/<type>/test``
mimii                           3384388 -> ``<snr>_dB_<type>.zip``           ``DIR/<snr>_dB_<type>/<type>/id_XX/..``
dcase2021       dev             4562016 -> ``dev_data_<type>.zip``           ``DIR/dcase2021/dev_data/<type>/..``
                eval-train      4660992 -> ``eval_data_<type>_train.zip``    ``DIR/dcase2021/eval_data/<type>/train``
                eval-test       4884786 -> ``eval_data_<type>_test.zip``     ``DIR/dcase2021/eval_data/<type>/..``
dcase2022       dev             6355122 -> ``dev_<type>.zip``                ``DIR/dcase2022/dev_data/<type>/..``
                eval-train      6462969 -> ``eval_data_<type>_train.zip``    ``DIR/dcase2022/eval_data/<type>/train``
                eval-test       6586456 -> ``eval_data_<type>_test.zip``     ``DIR/dcase2022/eval_data/<type>/test``
dcase2023       (same parts)    7882613, 7830345, 7860847 (names as 2022)    ``DIR/dcase2023/{dev_data,eval_data}/..``
dcase2024       (same parts)    10902294, 11259435, 11363076 (as 2022, but   ``DIR/dcase2024/{dev_data,eval_data}/..``
                                ``eval_data_{3DPrinter,RoboticArm}_train_r2.zip``)
dcase2025       (same parts)    15097779, 15392814, 15519362 (as 2022)       ``DIR/dcase2025/{dev_data,eval_data}/..``
==============  ==============  ===========================================  =========================================

Every archive holds one top-level ``<type>/`` folder: ``train/`` and ``test/`` (2021: ``source_test/`` and
``target_test/``), the ``attributes_XX.csv`` files from 2022 on, and in 2025's additional training set a
``supplemental/`` folder; an archive that unpacks to anything else is logged as a warning. These are the layouts
:func:`mimimi.data.index.index_dataset` reads; index ``DIR/dcase<year>`` for one year (indexing ``DIR``
would also take in every year below it). The MIMII archive name is kept as a folder because the archives of
the three SNRs hold the same ``<type>/id_XX`` paths.

``--part`` (DCASE 2021–2025 only; default: all three) picks the development set ``dev``, the additional training
set ``eval-train`` and the evaluation test set ``eval-test`` (``eval`` = both). From 2023 on the evaluation
machine types differ from the development ones, so ``--machine-types`` is checked against the chosen parts and
each part fetches only the listed types it has.

Steps per archive: the file list, sizes and MD5s come from Zenodo's records API
(``GET {base_url}/api/records/{id}``); where an archive's MD5 is also known from a second source (DCASE 2023:
soundata's ``dcase23_task2`` loader) the records API must list that same MD5, or nothing is downloaded. The
archive is streamed into ``<year folder>/.mimimi-download/<name>.part``
(resumed with an HTTP ``Range`` request when a ``.part`` is already there; restarted from zero when the
server ignores the range), checked against the size and MD5 (a mismatch deletes the file and downloads it
again, ``retries`` times), every zip entry is checked to stay inside its target folder before anything is
extracted, then ``.mimimi-download/<name>.done`` (JSON, with the MD5) is written and the archive is
deleted unless ``--keep-archives``. The state folder is ``DIR/.mimimi-download`` for DCASE 2020 and MIMII and
``DIR/dcase<year>/.mimimi-download`` for the later years.

Re-running is a no-op: an archive with a ``.done`` marker is skipped without any HTTP request, and a
record whose wanted archives are all done is not even asked for its file list. Delete the marker to fetch
an archive again. The folder ``.mimimi-download`` starts with a dot, so the dataset indexer skips it.

``--base-url`` points everything at a mirror (or a test server): the records JSON is fetched from it and
the download links in that JSON are rewritten onto it (same path, the mirror's scheme, host and prefix).
``--urls`` prints each archive's Zenodo address (``https://zenodo.org/records/<id>/files/<name>``) without any
request, for fetching by hand.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import requests
from tqdm import tqdm

from mimimi.data import dcase

log = logging.getLogger(__name__)

ZENODO_URL = "https://zenodo.org"
STATE_DIR = ".mimimi-download"  # markers, kept archives and partial downloads live here
TIMEOUT = (10.0, 60.0)  # (connect, read) seconds, on every request
CHUNK = 1 << 16  # bytes per read from the network; a broken read loses at most this much
USER_AGENT = "mimimi-download/0.1 (+https://zenodo.org/records/3678171)"


class DownloadError(RuntimeError):
    """A download, verification or extraction that failed; the message is one line."""


class UnsafeArchiveError(DownloadError):
    """A zip entry that would land outside its target folder (absolute path, ``..``, symlink)."""


@dataclass(frozen=True)
class Part:
    """One Zenodo record of a dataset (its facts: ``record``, from ``dcase.YEARS``) as the downloader fetches it."""

    record: dcase.Record
    name: str = ""  # its --part (DCASE 2021-2025); "" where a dataset has no parts to choose
    md5: tuple[tuple[str, str], ...] = ()  # (archive name, MD5) known from a second source

    @property
    def record_id(self) -> int:
        return self.record.record_id

    @property
    def subdir(self) -> str:
        """Where its archives unpack, under the dataset's root (str.format with {type} and {snr})."""
        return self.record.folder

    def archive(self, machine_type: str, snr: int | None = None) -> str:
        return self.record.archive(machine_type, snr)


@dataclass(frozen=True)
class DatasetSpec:
    parts: tuple[Part, ...]
    snrs: tuple[int, ...] = ()  # empty: the dataset has no SNR variants
    root: str = ""  # folder under --out that holds it all, state folder included ("": --out itself)

    def types_of(self, part: Part) -> tuple[str, ...]:
        return part.record.machine_types


def dataset_spec(year: dcase.Year, parts: Sequence[str] | None = None) -> DatasetSpec:
    """The downloader's view of a year of ``dcase.YEARS``: every record, each a ``--part`` (``parts`` None), or
    only the records of ``parts``, fetched whole (DCASE 2020's development and evaluation sets)."""
    md5 = tuple(sorted(year.md5.items()))
    return DatasetSpec(tuple(Part(r, r.part if parts is None else "", md5) for r in year.records
                             if parts is None or r.part in parts), year.snrs, year.folder)


# --dataset -> what it fetches: each year under its own name, DCASE 2020 as dcase2020-dev and dcase2020-eval
DATASETS: dict[str, DatasetSpec] = {name: dataset_spec(year, parts) for year in dcase.YEARS.values()
                                    for name, parts in year.downloads or ((year.name, None),)}


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Zenodo record, as its records API lists it."""

    key: str
    size: int
    md5: str
    url: str


@dataclass
class Archive:
    """One archive to have on disk: where it comes from, where it goes, whether it is already done."""

    record_id: int
    key: str
    extract_to: Path
    state_dir: Path
    remote: RemoteFile | None = None  # None until the record was fetched (never, when done)
    machine_type: str = ""  # the one top-level folder it should unpack; "": not checked
    known_md5: str | None = None  # from a second source; the records API must list the same

    @property
    def zenodo_url(self) -> str:
        return zenodo_url(self.record_id, self.key)

    @property
    def marker(self) -> Path:
        return self.state_dir / f"{self.key}.done"

    @property
    def path(self) -> Path:
        return self.state_dir / self.key

    def done_paths(self) -> list[Path] | None:
        """The top-level paths it unpacked, from its marker; None when it is not done."""
        try:
            info = json.loads(self.marker.read_text())
            return [self.extract_to / t for t in info["top_level"]]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable marker (%s); fetching it again", self.marker, exc)
            return None


# ---------------------------------------------------------------------------------------------------
# Selection


def _split_list(values: Iterable[str | int] | str | int | None) -> list[str]:
    """``["fan,pump", "valve"]`` or ``"fan,pump,valve"`` -> ``["fan", "pump", "valve"]``."""
    if isinstance(values, (str, int)):
        values = [values]
    return [t.strip() for v in values or () for t in str(v).split(",") if t.strip()]


@dataclass(frozen=True)
class Selected:
    """One archive a selection names: its record, type (and SNR), file name and folder under ``--out``."""

    part: Part
    machine_type: str
    snr: int | None
    key: str
    subdir: str  # relative to --out, the dataset's root included

    @property
    def known_md5(self) -> str | None:
        return dict(self.part.md5).get(self.key)


def _parts(dataset: str, spec: DatasetSpec, parts: Sequence[str] | str | None) -> list[Part]:
    """The dataset's records that ``--part`` names (all of them by default), in the dataset's order."""
    tokens = [t.lower() for t in _split_list(parts)]
    if not tokens:
        return list(spec.parts)
    named = [p.name for p in spec.parts if p.name]
    if not named:
        with_parts = ", ".join(d for d, s in DATASETS.items() if any(p.name for p in s.parts))
        raise ValueError(f"--part applies only to {with_parts}, not to {dataset}")
    wanted: set[str] = set()
    for t in tokens:
        if t == "eval":
            wanted.update(("eval-train", "eval-test"))
        elif t in named:
            wanted.add(t)
        else:
            raise ValueError(f"unknown part {t!r} for {dataset}; valid: {', '.join(named)}, eval")
    return [p for p in spec.parts if p.name in wanted]


def select(
    dataset: str,
    machine_types: Sequence[str] | str | None = None,
    snr: Sequence[int | str] | int | str | None = None,
    parts: Sequence[str] | str | None = None,
) -> list[Selected]:
    """Validate the selection and list its archives, in download order (part by part, then SNR, then type).

    ``parts`` (DCASE 2021-2025 only): ``dev``, ``eval-train``, ``eval-test`` or ``eval`` (both), default all. A
    machine type must belong to one of the chosen parts; each part then fetches the chosen types it has.

    >>> [(a.key, a.subdir) for a in select("dcase2023", "fan,Vacuum")]
    [('dev_fan.zip', 'dcase2023/dev_data'), ('eval_data_Vacuum_train.zip', 'dcase2023/eval_data'), \
('eval_data_Vacuum_test.zip', 'dcase2023/eval_data')]
    >>> [a.key for a in select("dcase2024", ["roboticarm"], parts="eval-train")]
    ['eval_data_RoboticArm_train_r2.zip']
    >>> select("dcase2023", ["fan"], parts="eval")
    Traceback (most recent call last):
    ...
    ValueError: unknown machine type 'fan' for dcase2023 eval-train, eval-test; valid: bandsaw, grinder, \
shaker, ToyDrone, ToyNscale, ToyTank, Vacuum ('fan' is in dcase2023 dev)
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    chosen = _parts(dataset, spec, parts)
    valid = list(dict.fromkeys(t for p in chosen for t in spec.types_of(p)))
    by_lower = {t.lower(): t for t in valid}
    types: list[str] = []
    for t in _split_list(machine_types) or valid:
        if t.lower() not in by_lower:
            where = dataset if chosen == list(spec.parts) else f"{dataset} {', '.join(p.name for p in chosen)}"
            others = [p.name for p in spec.parts if p not in chosen and t.lower() in map(str.lower, spec.types_of(p))]
            hint = f" ({t!r} is in {dataset} {', '.join(others)})" if others else ""
            raise ValueError(f"unknown machine type {t!r} for {where}; valid: {', '.join(valid)}{hint}")
        if by_lower[t.lower()] not in types:
            types.append(by_lower[t.lower()])
    snr_tokens = _split_list(snr)
    if snr_tokens and not spec.snrs:
        raise ValueError(f"--snr applies only to mimii, not to {dataset}")
    snrs: list[int | None] = []
    for s in snr_tokens or [str(v) for v in spec.snrs]:
        m = re.fullmatch(r"([+-]?\d+)(?:_?dB)?", s, flags=re.IGNORECASE)
        if not m or int(m.group(1)) not in spec.snrs:
            raise ValueError(f"unknown SNR {s!r} for {dataset}; valid: {', '.join(map(str, spec.snrs))}")
        if int(m.group(1)) not in snrs:
            snrs.append(int(m.group(1)))
    out = []
    for part in chosen:
        for snr_db in snrs or [None]:
            for t in types:
                if t in spec.types_of(part):
                    subdir = part.subdir.format(type=t, snr=snr_db)
                    out.append(Selected(part, t, snr_db, part.archive(t, snr_db),
                                        f"{spec.root}/{subdir}" if spec.root else subdir))
    return out


def select_archives(
    dataset: str,
    machine_types: Sequence[str] | str | None = None,
    snr: Sequence[int | str] | int | str | None = None,
    parts: Sequence[str] | str | None = None,
) -> list[tuple[Part, str, str]]:
    """:func:`select` as ``(part, archive name, target subdir)`` tuples.

    >>> [k for _, k, _ in select_archives("mimii", ["fan"], [6, -6])]
    ['6_dB_fan.zip', '-6_dB_fan.zip']
    >>> [k for _, k, _ in select_archives("mimii", "valve", "-6dB")]
    ['-6_dB_valve.zip']
    >>> [(k, d) for _, k, d in select_archives("dcase2020-eval", ["toycar"])]
    [('eval_data_train_ToyCar.zip', 'eval_data'), ('eval_data_test_ToyCar.zip', 'eval_data')]
    >>> select_archives("dcase2020-dev", ["drill"])
    Traceback (most recent call last):
    ...
    ValueError: unknown machine type 'drill' for dcase2020-dev; valid: fan, pump, slider, valve, ToyCar, ToyConveyor
    """
    return [(a.part, a.key, a.subdir) for a in select(dataset, machine_types, snr, parts)]


def zenodo_url(record_id: int, key: str) -> str:
    """An archive's address on Zenodo (what a browser or ``wget`` fetches; this module asks the records API).

    >>> zenodo_url(7882613, "dev_fan.zip")
    'https://zenodo.org/records/7882613/files/dev_fan.zip'
    """
    return f"{ZENODO_URL}/records/{record_id}/files/{quote(key)}"


def archive_urls(
    dataset: str,
    machine_types: Sequence[str] | str | None = None,
    snr: Sequence[int | str] | int | str | None = None,
    parts: Sequence[str] | str | None = None,
) -> list[str]:
    """The Zenodo addresses of a selection's archives, without any request.

    >>> archive_urls("dcase2021", "gearbox", parts="dev,eval-test")
    ['https://zenodo.org/records/4562016/files/dev_data_gearbox.zip', \
'https://zenodo.org/records/4884786/files/eval_data_gearbox_test.zip']
    """
    return [zenodo_url(a.part.record_id, a.key) for a in select(dataset, machine_types, snr, parts)]


# ---------------------------------------------------------------------------------------------------
# Zenodo records API


def rebase_url(url: str, base_url: str) -> str:
    """Resolve ``url`` against ``base_url`` and, for a non-Zenodo base, move it onto that host.

    >>> rebase_url("https://zenodo.org/api/records/1/files/a.zip/content", "http://127.0.0.1:8000")
    'http://127.0.0.1:8000/api/records/1/files/a.zip/content'
    >>> rebase_url("https://zenodo.org/api/records/1/files/a.zip/content", "https://mirror.example/zen/")
    'https://mirror.example/zen/api/records/1/files/a.zip/content'
    >>> rebase_url("/api/records/1/files/a.zip/content", "https://zenodo.org")
    'https://zenodo.org/api/records/1/files/a.zip/content'
    >>> rebase_url("https://zenodo.org/records/1/files/a.zip?download=1", "https://zenodo.org/")
    'https://zenodo.org/records/1/files/a.zip?download=1'
    """
    base = urlsplit(base_url.rstrip("/") + "/")
    u = urlsplit(urljoin(urlunsplit(base), url))
    if (u.scheme, u.netloc) == (base.scheme, base.netloc) or base_url.rstrip("/") == ZENODO_URL:
        return urlunsplit(u)
    prefix = base.path.rstrip("/")
    path = u.path if prefix and u.path.startswith(prefix + "/") else prefix + u.path
    return urlunsplit((base.scheme, base.netloc, path, u.query, ""))


def _one_line(exc: BaseException) -> str:
    """A short one-line reason: the OS error inside requests' wrappers when there is one."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    m = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if m:
        return m.group(0).strip()
    return text if len(text) <= 300 else text[:297] + "..."


def parse_record(payload: dict, record_id: int | str, base_url: str = ZENODO_URL) -> dict[str, RemoteFile]:
    """Map file name -> :class:`RemoteFile` from a records-API JSON, in any of Zenodo's formats.

    Handled: the current ``/api/records/<id>`` form (``key``, ``size``, ``checksum: "md5:<hex>"``,
    ``links.self`` = ``.../files/<key>/content``); the pre-2023 form (``links.self`` =
    ``/api/files/<bucket>/<key>``); the form served for a while after the October 2023 InvenioRDM
    migration (``filename``, ``filesize``, bare hex checksum, a working ``links.download``); and
    InvenioRDM's ``files: {"entries": ...}`` with ``links.content``. Links are rebased onto ``base_url``.

    >>> p = {"files": [{"key": "a.zip", "size": 3, "checksum": "md5:900150983cd24fb0d6963f7d28e17f72",
    ...                 "links": {"self": "https://zenodo.org/api/records/7/files/a.zip/content"}}]}
    >>> f = parse_record(p, 7, "http://127.0.0.1:9")["a.zip"]
    >>> f.size, f.md5, f.url
    (3, '900150983cd24fb0d6963f7d28e17f72', 'http://127.0.0.1:9/api/records/7/files/a.zip/content')
    """
    files = payload.get("files") if isinstance(payload, dict) else None
    if isinstance(files, dict):  # InvenioRDM: {"enabled": true, "entries": [...] or {key: {...}}}
        files = files.get("entries")
    if isinstance(files, dict):
        files = [dict(v, key=v.get("key", k)) for k, v in files.items()]
    if not isinstance(files, list) or not files:
        raise DownloadError(f"record {record_id}: the records API lists no files (restricted or removed record?)")
    out: dict[str, RemoteFile] = {}
    for f in files:
        key = f.get("key") or f.get("filename")
        size = f.get("size", f.get("filesize"))
        algo, _, digest = str(f.get("checksum") or "").rpartition(":")
        if not key or not isinstance(size, int) or algo not in ("", "md5") or not re.fullmatch(r"[0-9a-fA-F]{32}", digest):
            raise DownloadError(
                f"record {record_id}: file entry without a usable name, size or MD5: {json.dumps(f)[:200]}"
            )
        links = f.get("links") or {}
        link = (
            links.get("content")
            or links.get("download")
            or links.get("self")
            or f"{base_url.rstrip('/')}/api/records/{record_id}/files/{quote(key)}/content"
        )
        out[key] = RemoteFile(key=key, size=size, md5=digest.lower(), url=rebase_url(link, base_url))
    return out


def fetch_record(
    record_id: int | str,
    base_url: str = ZENODO_URL,
    *,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = TIMEOUT,
) -> dict[str, RemoteFile]:
    """``GET {base_url}/api/records/{record_id}`` and parse its file list (see :func:`parse_record`)."""
    url = f"{base_url.rstrip('/')}/api/records/{record_id}"
    session = session or _session()
    try:
        resp = session.get(url, headers={"Accept": "application/json"}, timeout=timeout)
    except requests.RequestException as exc:
        raise DownloadError(f"cannot reach {url}: {_one_line(exc)}") from exc
    with resp:
        if resp.status_code != 200:
            raise DownloadError(f"HTTP {resp.status_code} {resp.reason} from {url}")
        try:
            payload = resp.json()
        except ValueError as exc:
            raise DownloadError(f"{url} did not return JSON: {_one_line(exc)}") from exc
    return parse_record(payload, record_id, base_url)


def _session() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    return s


# ---------------------------------------------------------------------------------------------------
# Download, verify


def file_md5(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def verify_md5(path: str | Path, expected: str) -> bool:
    """True when the file's MD5 is ``expected`` (hex, with or without an ``md5:`` prefix).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"abc")
    >>> verify_md5(p, "md5:900150983cd24fb0d6963f7d28e17f72"), verify_md5(p, "0" * 32)
    (True, False)
    """
    return file_md5(path) == expected.rpartition(":")[2].lower()


class _Interrupted(Exception):
    """The transfer broke off after the server had answered, the server is busy (``wait`` seconds), or
    the reply could not continue the ``.part`` (then dropped): worth another request, resuming."""

    def __init__(self, message: str, wait: float = 0.0):
        super().__init__(message)
        self.wait = wait


_BUSY = (429, 500, 502, 503, 504)  # worth another try after a pause (Zenodo rate-limits with 429)


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _fetch_once(
    session: requests.Session,
    url: str,
    part: Path,
    size: int,
    *,
    timeout,
    progress: bool,
    chunk_size: int,
    desc: str,
) -> hashlib._Hash:
    """Bring ``part`` as far towards ``size`` bytes as one request allows; return the MD5 of its bytes."""
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:  # cannot be a prefix of the file
        part.unlink()
        offset = 0
    if offset == size:
        h = hashlib.md5()
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h
    headers = {"Accept-Encoding": "identity"}  # byte ranges must count raw bytes
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as exc:  # no answer at all: give up (a rerun resumes the .part)
        raise DownloadError(f"cannot reach {url}: {_one_line(exc)}") from exc
    with resp:
        if resp.status_code == 416 and offset:  # the server will not continue this .part: start over
            part.unlink()
            raise _Interrupted(f"HTTP 416 for a resume at byte {offset} of {url}")
        if resp.status_code in _BUSY:
            after = resp.headers.get("Retry-After", "")
            wait = min(float(after), 120.0) if after.isdigit() else 10.0
            raise _Interrupted(f"HTTP {resp.status_code} {resp.reason} from {url}", wait=wait)
        if resp.status_code not in (200, 206):
            raise DownloadError(f"HTTP {resp.status_code} {resp.reason} from {url}")
        h = hashlib.md5()
        if resp.status_code == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _Interrupted(f"unexpected Content-Range {resp.headers.get('Content-Range')!r} from {url}")
            mode = "ab"
            if offset:  # hash the bytes already on disk, then continue with the new ones
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
        else:  # 200: the whole file, whether or not we asked for a range
            if offset:
                log.info("%s: server ignored the range request; downloading from the start", desc)
            offset, mode = 0, "wb"
        try:
            with open(part, mode) as f, tqdm(
                total=size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, disable=None if progress else True, leave=False,  # None: a bar only on a terminal
            ) as bar:
                for block in resp.iter_content(chunk_size):
                    f.write(block)
                    h.update(block)
                    bar.update(len(block))
        except requests.RequestException as exc:
            raise _Interrupted(f"transfer from {url} broke off: {_one_line(exc)}") from exc
    return h


def download_file(
    url: str,
    dest: str | Path,
    *,
    size: int,
    md5: str,
    retries: int = 1,
    max_resumes: int = 5,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = TIMEOUT,
    progress: bool = True,
    chunk_size: int = CHUNK,
) -> Path:
    """Download ``url`` to ``dest`` and check its size and MD5; return ``dest``.

    Streams into ``<dest>.part``; an existing ``.part`` is resumed with ``Range: bytes=N-`` (a ``200``
    reply restarts from zero). A transfer that breaks off mid-stream (or ends short), or a busy reply
    (429/5xx, after its ``Retry-After``), is resumed up to ``max_resumes`` times; a server that cannot be reached fails at once (a rerun resumes). A file of the
    right size with the wrong MD5 (or too long) is deleted and downloaded again ``retries`` times; after
    that a :class:`DownloadError` names the file and both checksums. An existing ``dest`` that verifies
    is kept without any request.
    """
    dest = Path(dest)
    expected = md5.rpartition(":")[2].lower()
    if dest.exists():
        if dest.stat().st_size == size and verify_md5(dest, expected):
            log.info("%s: already downloaded and verified", dest.name)
            return dest
        log.warning("%s: existing file does not verify; downloading it again", dest.name)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    session = session or _session()
    corrupt_left, resumes_left = retries, max_resumes
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            h = _fetch_once(session, url, part, size, timeout=timeout, progress=progress, chunk_size=chunk_size,
                            desc=dest.name)
        except _Interrupted as exc:
            if resumes_left > 0:
                resumes_left -= 1
                now = part.stat().st_size if part.exists() else 0
                log.warning("%s: %s; continuing from byte %d%s", dest.name, exc, now,
                            f" in {exc.wait:.0f} s" if exc.wait else "")
                time.sleep(exc.wait)
                continue
            raise DownloadError(f"{dest.name}: {exc}") from exc
        have = part.stat().st_size
        if have < size:  # the body ended early without an error: ask for the rest
            if resumes_left > 0 and have > before:
                resumes_left -= 1
                log.warning("%s: got %d of %d bytes; continuing", dest.name, have, size)
                continue
            raise DownloadError(f"{dest.name}: download from {url} stopped at {have} of {size} bytes")
        got = h.hexdigest() if have == size else None
        if got == expected:
            part.replace(dest)
            log.info("%s: %d bytes, MD5 %s verified", dest.name, size, expected)
            return dest
        part.unlink()
        problem = (
            f"MD5 mismatch: expected {expected}, got {got}"
            if got is not None
            else f"size mismatch: expected {size} bytes, got {have}"
        )
        if corrupt_left <= 0:
            raise DownloadError(f"{dest.name}: {problem} (after {retries + 1} attempt(s) from {url})")
        corrupt_left -= 1
        log.warning("%s: %s; deleted, downloading again", dest.name, problem)


# ---------------------------------------------------------------------------------------------------
# Extract


def _unsafe_reason(info: zipfile.ZipInfo, root: str) -> str | None:
    """Why extracting this entry under ``root`` (absolute, normalised) is refused; None when it is fine."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return "it is a symbolic link"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "it is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "it contains '..'"
    full = os.path.normpath(os.path.join(root, name))
    if full != root and not full.startswith(root + os.sep):
        return "it resolves outside the target folder"
    return None


def safe_extract(archive: str | Path, target: str | Path) -> list[Path]:
    """Extract a zip into ``target`` after checking that every entry stays inside it.

    Refuses the whole archive (extracting nothing) when any entry is absolute, contains ``..``, is a
    symbolic link or otherwise resolves outside ``target``. Paths are checked as written; links that
    already exist inside ``target`` are the user's own. Returns the top-level paths it created.

    >>> import tempfile, pathlib, zipfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(d / "a.zip", "w") as z:
    ...     z.writestr("fan/train/normal_id_00_00000000.wav", b"RIFF")
    >>> [p.relative_to(d).as_posix() for p in safe_extract(d / "a.zip", d / "out")]
    ['out/fan']
    >>> with zipfile.ZipFile(d / "bad.zip", "w") as z:
    ...     z.writestr("fan/ok.wav", b"RIFF"); z.writestr("../evil.wav", b"x")
    >>> try:
    ...     safe_extract(d / "bad.zip", d / "out2")
    ... except UnsafeArchiveError as exc:
    ...     print(exc)
    bad.zip: refusing entry '../evil.wav' (it contains '..'); nothing was extracted
    >>> (d / "out2").exists()
    False
    """
    archive, target = Path(archive), Path(target)
    root = os.path.normpath(os.path.abspath(target))
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:  # validate everything before writing anything
                reason = _unsafe_reason(info, root)
                if reason:
                    raise UnsafeArchiveError(
                        f"{archive.name}: refusing entry {info.filename!r} ({reason}); nothing was extracted"
                    )
            target.mkdir(parents=True, exist_ok=True)
            for info in infos:
                zf.extract(info, target)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive.name}: not a readable zip archive: {_one_line(exc)}") from exc
    tops = set()
    for info in infos:
        parts = [p for p in re.split(r"[/\\]", info.filename) if p not in ("", ".")]
        if parts:
            tops.add(parts[0])
    return [target / t for t in sorted(tops)]


# ---------------------------------------------------------------------------------------------------
# Whole datasets


def plan(
    dataset: str,
    machine_types: Sequence[str] | None = None,
    out: str | Path = "data",
    *,
    snr: Sequence[int | str] | None = None,
    parts: Sequence[str] | str | None = None,
    base_url: str = ZENODO_URL,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = TIMEOUT,
) -> list[Archive]:
    """The archives a download needs, each with its remote file unless it is already done.

    Asks the records API only for records that have an archive still to fetch, and fails with a one-line
    :class:`DownloadError` when a wanted archive is not in its record, or when the record lists another MD5
    than the one known from a second source (then its bytes are not what that source checked).
    """
    out = Path(out)
    selected = select(dataset, machine_types, snr, parts)
    state_dir = out / DATASETS[dataset].root / STATE_DIR  # per year: archive names repeat across years
    archives = [
        Archive(a.part.record_id, a.key, out / a.subdir, state_dir, machine_type=a.machine_type,
                known_md5=a.known_md5)
        for a in selected
    ]
    records: dict[int, dict[str, RemoteFile]] = {}
    session = session or _session()
    for a in archives:
        if a.done_paths() is not None:
            continue
        if a.record_id not in records:
            records[a.record_id] = fetch_record(a.record_id, base_url, session=session, timeout=timeout)
        files = records[a.record_id]
        if a.key not in files:
            raise DownloadError(
                f"record {a.record_id} has no file {a.key!r} (it has: {', '.join(sorted(files)[:20])})"
            )
        remote = files[a.key]
        if a.known_md5 is not None and remote.md5 != a.known_md5:
            raise DownloadError(
                f"record {a.record_id} lists {a.key} with MD5 {remote.md5}, not the known {a.known_md5}; "
                "the file changed or the mirror serves another one, so nothing was downloaded"
            )
        a.remote = remote
    return archives


def download(
    dataset: str,
    machine_types: Sequence[str] | None = None,
    out: str | Path = "data",
    *,
    snr: Sequence[int | str] | None = None,
    parts: Sequence[str] | str | None = None,
    base_url: str = ZENODO_URL,
    keep_archives: bool = False,
    retries: int = 1,
    progress: bool = True,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = TIMEOUT,
) -> list[Path]:
    """Download, verify and unpack a dataset into ``out``; return the top-level paths unpacked.

    ``machine_types`` defaults to all of the dataset's (of the chosen ``parts``), ``snr`` (mimii only) to 6, 0
    and -6, ``parts`` (DCASE 2021-2025 only) to ``dev``, ``eval-train`` and ``eval-test``. Already done
    archives (``.done`` marker) are skipped without HTTP. See the module docstring for the layout.
    """
    session = session or _session()
    archives = plan(dataset, machine_types, out, snr=snr, parts=parts, base_url=base_url, session=session,
                    timeout=timeout)
    todo = [a for a in archives if a.remote is not None]
    if todo:
        need = sum(a.remote.size for a in todo) * 2  # archive + unpacked copy (wav in zip barely shrinks)
        Path(out).mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out).free
        if need > free:
            log.warning("%s: %.1f GB free, about %.1f GB needed", out, free / 1e9, need / 1e9)
    result: list[Path] = []
    for a in archives:
        paths = a.done_paths()
        if paths is not None:
            log.info("%s: already downloaded and unpacked (marker %s)", a.key, a.marker)
        else:
            assert a.remote is not None  # plan() fetched it
            log.info("%s: %.2f GB from record %d", a.key, a.remote.size / 1e9, a.record_id)
            download_file(a.remote.url, a.path, size=a.remote.size, md5=a.remote.md5, retries=retries,
                          session=session, timeout=timeout, progress=progress)
            paths = safe_extract(a.path, a.extract_to)
            if a.machine_type and [p.name for p in paths] != [a.machine_type]:
                log.warning("%s: unpacked %s into %s, not one %r folder; the index may not find its clips",
                            a.key, ", ".join(p.name for p in paths) or "nothing", a.extract_to, a.machine_type)
            marker = {
                "archive": a.key,
                "record": a.record_id,
                "md5": a.remote.md5,
                "size": a.remote.size,
                "extracted_to": os.path.relpath(a.extract_to, Path(out)),
                "top_level": [p.name for p in paths],
            }
            tmp = a.marker.with_name(a.marker.name + ".tmp")
            tmp.write_text(json.dumps(marker, indent=1) + "\n")
            tmp.replace(a.marker)
            if not keep_archives:
                a.path.unlink()
            log.info("%s: unpacked into %s", a.key, a.extract_to)
        for p in paths:
            if p not in result:
                result.append(p)
    return result
