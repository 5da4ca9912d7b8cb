"""Download, verify and unpack the DCASE 2020 Task 2 and MIMII datasets from Zenodo.

``python -m mimimi.download --dataset {dcase2020-dev,dcase2020-eval,mimii} --out DIR
[--machine-types fan,pump] [--snr=6,0,-6] [--base-url URL] [--keep-archives] [--dry-run]``

What goes where (``DIR`` is ``--out``; archives unpack as they are, nothing is reshuffled):

================  ==========================================  ====================================
dataset           Zenodo record -> archives                   unpacked into
================  ==========================================  ====================================
dcase2020-dev     3678171 -> ``dev_data_<type>.zip``          ``DIR/dev_data/<type>/{train,test}``
dcase2020-eval    3727685 -> ``eval_data_train_<type>.zip``   ``DIR/eval_data/<type>/train``
                  3841772 -> ``eval_data_test_<type>.zip``    ``DIR/eval_data/<type>/test``
mimii             3384388 -> ``<snr>_dB_<type>.zip``          ``DIR/<snr>_dB_<type>/<type>/id_XX/..``
================  ==========================================  ====================================

These are the layouts :func:`mimimi.data.index.index_dataset` reads (the MIMII archive name is kept as a
folder because the archives of the three SNRs hold the same ``<type>/id_XX`` paths).

Steps per archive: the file list, sizes and MD5s come from Zenodo's records API
(``GET {base_url}/api/records/{id}``); the archive is streamed into ``DIR/.mimimi-download/<name>.part``
(resumed with an HTTP ``Range`` request when a ``.part`` is already there; restarted from zero when the
server ignores the range), checked against the size and MD5 (a mismatch deletes the file and downloads it
again, ``retries`` times), every zip entry is checked to stay inside its target folder before anything is
extracted, then ``DIR/.mimimi-download/<name>.done`` (JSON, with the MD5) is written and the archive is
deleted unless ``--keep-archives``.

Re-running is a no-op: an archive with a ``.done`` marker is skipped without any HTTP request, and a
record whose wanted archives are all done is not even asked for its file list. Delete the marker to fetch
an archive again. The folder ``.mimimi-download`` starts with a dot, so the dataset indexer skips it.

``--base-url`` points everything at a mirror (or a test server): the records JSON is fetched from it and
the download links in that JSON are rewritten onto it (same path, the mirror's scheme, host and prefix).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import requests
from tqdm import tqdm

log = logging.getLogger(__name__)

ZENODO_URL = "https://zenodo.org"
STATE_DIR = ".mimimi-download"  # markers, kept archives and partial downloads live here
TIMEOUT = (10.0, 60.0)  # (connect, read) seconds, on every request
CHUNK = 1 << 16  # bytes per read from the network; a broken read loses at most this much
USER_AGENT = "mimimi-download/0.1 (+https://zenodo.org/records/3678171)"

MIMII_TYPES = ("fan", "pump", "slider", "valve")
DCASE_TYPES = ("fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor")
MIMII_SNRS = (6, 0, -6)


class DownloadError(RuntimeError):
    """A download, verification or extraction that failed; the message is one line."""


class UnsafeArchiveError(DownloadError):
    """A zip entry that would land outside its target folder (absolute path, ``..``, symlink)."""


@dataclass(frozen=True)
class Part:
    """One Zenodo record of a dataset: its archive name pattern and where its archives unpack."""

    record_id: int
    pattern: str  # str.format with {type} and {snr}
    subdir: str  # folder under --out, same fields


@dataclass(frozen=True)
class DatasetSpec:
    parts: tuple[Part, ...]
    machine_types: tuple[str, ...]
    snrs: tuple[int, ...] = ()  # empty: the dataset has no SNR variants


DATASETS: dict[str, DatasetSpec] = {
    "dcase2020-dev": DatasetSpec((Part(3678171, "dev_data_{type}.zip", "dev_data"),), DCASE_TYPES),
    "dcase2020-eval": DatasetSpec(
        (
            Part(3727685, "eval_data_train_{type}.zip", "eval_data"),  # "additional training dataset"
            Part(3841772, "eval_data_test_{type}.zip", "eval_data"),  # evaluation test set, unlabeled
        ),
        DCASE_TYPES,
    ),
    "mimii": DatasetSpec((Part(3384388, "{snr}_dB_{type}.zip", "{snr}_dB_{type}"),), MIMII_TYPES, MIMII_SNRS),
}


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


def select_archives(
    dataset: str,
    machine_types: Sequence[str] | str | None = None,
    snr: Sequence[int | str] | int | str | None = None,
) -> list[tuple[Part, str, str]]:
    """Validate the selection and list ``(part, archive name, target subdir)``, in download order.

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
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    by_lower = {t.lower(): t for t in spec.machine_types}
    types: list[str] = []
    for t in _split_list(machine_types) or list(spec.machine_types):
        if t.lower() not in by_lower:
            raise ValueError(f"unknown machine type {t!r} for {dataset}; valid: {', '.join(spec.machine_types)}")
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
    for part in spec.parts:
        for snr_db in snrs or [None]:
            for t in types:
                out.append((part, part.pattern.format(type=t, snr=snr_db), part.subdir.format(type=t, snr=snr_db)))
    return out


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
                desc=desc, disable=not progress, leave=False,
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
    base_url: str = ZENODO_URL,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = TIMEOUT,
) -> list[Archive]:
    """The archives a download needs, each with its remote file unless it is already done.

    Asks the records API only for records that have an archive still to fetch, and fails with a one-line
    :class:`DownloadError` when a wanted archive is not in its record.
    """
    out = Path(out)
    archives = [
        Archive(part.record_id, key, out / subdir, out / STATE_DIR)
        for part, key, subdir in select_archives(dataset, machine_types, snr)
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
        a.remote = files[a.key]
    return archives


def download(
    dataset: str,
    machine_types: Sequence[str] | None = None,
    out: str | Path = "data",
    *,
    snr: Sequence[int | str] | None = None,
    base_url: str = ZENODO_URL,
    keep_archives: bool = False,
    retries: int = 1,
    progress: bool = True,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = TIMEOUT,
) -> list[Path]:
    """Download, verify and unpack a dataset into ``out``; return the top-level paths unpacked.

    ``machine_types`` defaults to all of the dataset's, ``snr`` (mimii only) to 6, 0 and -6. Already done
    archives (``.done`` marker) are skipped without HTTP. See the module docstring for the layout.
    """
    session = session or _session()
    archives = plan(dataset, machine_types, out, snr=snr, base_url=base_url, session=session, timeout=timeout)
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


# ---------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mimimi.download",
        description="Download, verify (size + MD5) and unpack DCASE 2020 Task 2 / MIMII archives from Zenodo. "
        "Interrupted downloads resume; re-running skips what is done.",
    )
    p.add_argument("--dataset", required=True, choices=list(DATASETS))
    p.add_argument("--machine-types", nargs="+", metavar="TYPE", help="comma- or space-separated (default: all)")
    p.add_argument("--snr", nargs="+", metavar="DB",
                   help="mimii only: 6, 0, -6 (default: all); write a leading negative as --snr=-6,0")
    p.add_argument("--out", required=True, type=Path, help="dataset root to unpack into")
    p.add_argument("--base-url", default=ZENODO_URL, help=f"Zenodo or a mirror of it (default: {ZENODO_URL})")
    p.add_argument("--keep-archives", action="store_true", help=f"keep the zips in OUT/{STATE_DIR}/")
    p.add_argument("--dry-run", action="store_true", help="list what would be downloaded, change nothing")
    p.add_argument("--retries", type=int, default=1, help="downloads again after a checksum mismatch (default: 1)")
    p.add_argument("--timeout", type=float, default=TIMEOUT[1], help="read timeout in seconds (default: 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; errors end in one ``error:`` line on stderr (exit 2: arguments, 1: download)."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    timeout = (TIMEOUT[0], args.timeout)
    try:
        if args.dry_run:
            archives = plan(args.dataset, args.machine_types, args.out, snr=args.snr, base_url=args.base_url,
                            timeout=timeout)
            total = 0
            for a in archives:
                if a.remote is None:
                    print(f"done  {a.key}  ->  {a.extract_to}")
                else:
                    total += a.remote.size
                    print(f"get   {a.key}  {a.remote.size / 1e9:.2f} GB  md5 {a.remote.md5}  {a.remote.url}"
                          f"  ->  {a.extract_to}")
            print(f"{sum(a.remote is not None for a in archives)} archive(s) to download, {total / 1e9:.2f} GB")
            return 0
        paths = download(args.dataset, args.machine_types, args.out, snr=args.snr, base_url=args.base_url,
                         keep_archives=args.keep_archives, retries=args.retries, progress=not args.no_progress,
                         timeout=timeout)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
