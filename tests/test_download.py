"""Downloader tests against a local fake Zenodo on 127.0.0.1 (records API + ranged file downloads).

No test touches the internet: the fake records JSON advertises links on ``zenodo.invalid`` (a name that
never resolves), so only a working ``--base-url`` rewrite reaches the local server.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mimimi import download as command
from mimimi.data import download as dl
from mimimi.data.download import DownloadError, UnsafeArchiveError

ADVERTISED = "https://zenodo.invalid"  # what the fake JSON claims; must be rewritten onto the fake server


def make_zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name as written ('..', '/abs')
        for name, link_target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, link_target)
    return buf.getvalue()


def dev_zip(machine: str, n: int = 40) -> bytes:
    """A DCASE-like dev archive: ``<type>/{train,test}/..._id_00_NNNNNNNN.wav`` with distinct bytes."""
    members = {f"{machine}/train/normal_id_00_{i:08d}.wav": bytes([i % 251]) * 997 for i in range(n)}
    members[f"{machine}/test/anomaly_id_00_00000000.wav"] = b"anomaly" * 100
    return make_zip(members)


class FakeZenodo(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.records: dict[str, dict] = {}  # record id -> JSON payload
        self.blobs: dict[str, bytes] = {}  # URL path -> bytes
        self.log: list[tuple[str, str | None]] = []  # (path, Range header) of every request
        self.sent: dict[str, int] = {}  # URL path -> body bytes sent
        self.truncate_once: dict[str, int] = {}  # URL path -> send only this many bytes, once
        self.corrupt: dict[str, int] = {}  # URL path -> number of corrupted replies still to send
        self.ignore_range = False
        self.busy_once: set[str] = set()  # URL paths that answer 503 (Retry-After: 0) once
        self.lock = threading.Lock()

    def add_record(self, record_id: int, files: dict[str, bytes]) -> None:
        entries = []
        for key, data in files.items():
            path = f"/api/records/{record_id}/files/{key}/content"
            self.blobs[path] = data
            entries.append({
                "id": f"uuid-{key}", "key": key, "size": len(data),
                "checksum": "md5:" + hashlib.md5(data).hexdigest(),
                "links": {"self": ADVERTISED + path},
            })
        self.records[str(record_id)] = {"id": record_id, "files": entries}

    def file_path(self, record_id: int, key: str) -> str:
        return f"/api/records/{record_id}/files/{key}/content"

    def file_requests(self, path: str | None = None) -> list[tuple[str, str | None]]:
        return [r for r in self.log if "/files/" in r[0] and (path is None or r[0] == path)]


class _Handler(BaseHTTPRequestHandler):
    server: FakeZenodo

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None, send_only: int | None = None,
              count: str | None = None):
        """Reply; with ``count`` (a URL path), add the body bytes to ``sent`` BEFORE they go out, so a client
        that has read them all never sees the count lag behind (the test thread asserts right after)."""
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        data = body if send_only is None else body[:send_only]
        if count is not None:
            with self.server.lock:
                self.server.sent[count] = self.server.sent.get(count, 0) + len(data)
        self.wfile.write(data)
        self.wfile.flush()
        return len(data)

    def do_GET(self):
        srv = self.server
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        with srv.lock:
            srv.log.append((path, rng))
        m = re.fullmatch(r"/api/records/(\d+)", path)
        if m:
            if m.group(1) not in srv.records:
                self._send(404, b'{"status": 404, "message": "not found"}')
                return
            self._send(200, json.dumps(srv.records[m.group(1)]).encode(), {"Content-Type": "application/json"})
            return
        if path not in srv.blobs:
            self._send(404, b"no such file")
            return
        data = srv.blobs[path]
        if path in srv.busy_once:
            srv.busy_once.discard(path)
            self._send(503, b"busy", {"Retry-After": "0"})
            return
        with srv.lock:
            if srv.corrupt.get(path, 0) > 0:
                srv.corrupt[path] -= 1
                data = corrupted(data)
            cut = srv.truncate_once.pop(path, None)
        start = 0
        if rng and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            self._send(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
                       send_only=cut, count=path)
        else:
            self._send(200, data, {"Accept-Ranges": "bytes"}, send_only=cut, count=path)
        if cut is not None:
            self.close_connection = True


def corrupted(data: bytes) -> bytes:
    """Same length, one byte flipped in the middle."""
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


def serve_fake_zenodo():
    """A ``FakeZenodo`` serving on 127.0.0.1 until this generator is closed (the ``zenodo`` fixture here and
    in test_download_years)."""
    srv = FakeZenodo()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def zenodo():
    yield from serve_fake_zenodo()


@pytest.fixture
def dev_record(zenodo):
    """Record 3678171 with fan and pump dev archives; returns the archives' bytes."""
    files = {"dev_data_fan.zip": dev_zip("fan"), "dev_data_pump.zip": dev_zip("pump")}
    zenodo.add_record(3678171, files)
    return files


def get(zenodo, out, machine_types=("fan",), dataset="dcase2020-dev", **kw):
    kw.setdefault("progress", False)
    return dl.download(dataset, list(machine_types), out, base_url=zenodo.url, **kw)


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


# --------------------------------------------------------------------------------------------------


def test_good_archive_downloads_verifies_and_extracts_as_it_unpacks(zenodo, dev_record, tmp_path):
    out = tmp_path / "data"
    paths = get(zenodo, out)
    assert paths == [out / "dev_data" / "fan"]
    with zipfile.ZipFile(io.BytesIO(dev_record["dev_data_fan.zip"])) as z:
        for name in z.namelist():
            assert (out / "dev_data" / name).read_bytes() == z.read(name)
    marker = json.loads((out / ".mimimi-download" / "dev_data_fan.zip.done").read_text())
    assert marker["md5"] == hashlib.md5(dev_record["dev_data_fan.zip"]).hexdigest()
    # archive deleted by default, no leftovers, pump never requested
    assert tree(out / ".mimimi-download") == {"dev_data_fan.zip.done"}
    assert [p for p, _ in zenodo.log] == ["/api/records/3678171", zenodo.file_path(3678171, "dev_data_fan.zip")]


def test_keep_archives_keeps_the_verified_zip(zenodo, dev_record, tmp_path):
    get(zenodo, tmp_path, keep_archives=True)
    kept = tmp_path / ".mimimi-download" / "dev_data_fan.zip"
    assert kept.read_bytes() == dev_record["dev_data_fan.zip"]


def test_resume_requests_only_the_missing_bytes(zenodo, dev_record, tmp_path):
    data = dev_record["dev_data_fan.zip"]
    k = len(data) // 3
    state = tmp_path / ".mimimi-download"
    state.mkdir()
    (state / "dev_data_fan.zip.part").write_bytes(data[:k])
    get(zenodo, tmp_path)
    path = zenodo.file_path(3678171, "dev_data_fan.zip")
    assert zenodo.file_requests(path) == [(path, f"bytes={k}-")]
    assert zenodo.sent[path] == len(data) - k
    assert (tmp_path / "dev_data" / "fan" / "test" / "anomaly_id_00_00000000.wav").exists()


def test_transfer_cut_off_midway_is_resumed(zenodo, tmp_path):
    data = dev_zip("fan", n=400)  # ~400 kB: several network chunks
    zenodo.add_record(3678171, {"dev_data_fan.zip": data})
    path = zenodo.file_path(3678171, "dev_data_fan.zip")
    cut = 300_000
    zenodo.truncate_once[path] = cut
    get(zenodo, tmp_path, keep_archives=True)
    (first, r1), (second, r2) = zenodo.file_requests(path)
    assert r1 is None and 0 < int(re.fullmatch(r"bytes=(\d+)-", r2).group(1)) <= cut  # resumed, not restarted
    assert zenodo.sent[path] < 2 * len(data) - cut // 2
    assert (tmp_path / ".mimimi-download" / "dev_data_fan.zip").read_bytes() == data


def test_busy_server_is_retried_and_the_transfer_resumed(zenodo, dev_record, tmp_path):
    data = dev_record["dev_data_fan.zip"]
    path = zenodo.file_path(3678171, "dev_data_fan.zip")
    state = tmp_path / ".mimimi-download"
    state.mkdir()
    (state / "dev_data_fan.zip.part").write_bytes(data[:1000])
    zenodo.busy_once.add(path)
    get(zenodo, tmp_path, keep_archives=True)
    assert zenodo.file_requests(path) == [(path, "bytes=1000-"), (path, "bytes=1000-")]
    assert (state / "dev_data_fan.zip").read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(zenodo, dev_record, tmp_path):
    state = tmp_path / ".mimimi-download"
    state.mkdir()
    (state / "dev_data_fan.zip.part").write_bytes(b"garbage that is not a prefix" * 10)
    zenodo.ignore_range = True
    get(zenodo, tmp_path, retries=0, keep_archives=True)  # no second chance: appending would fail the MD5
    path = zenodo.file_path(3678171, "dev_data_fan.zip")
    assert len(zenodo.file_requests(path)) == 1 and zenodo.file_requests(path)[0][1] is not None
    assert (state / "dev_data_fan.zip").read_bytes() == dev_record["dev_data_fan.zip"]


def test_corrupt_download_is_deleted_and_fetched_again(zenodo, dev_record, tmp_path):
    path = zenodo.file_path(3678171, "dev_data_fan.zip")
    zenodo.corrupt[path] = 1
    get(zenodo, tmp_path, keep_archives=True)
    assert zenodo.file_requests(path) == [(path, None), (path, None)]  # second one from zero
    assert (tmp_path / ".mimimi-download" / "dev_data_fan.zip").read_bytes() == dev_record["dev_data_fan.zip"]


def test_persistent_corruption_names_the_file_and_both_checksums(zenodo, dev_record, tmp_path):
    path = zenodo.file_path(3678171, "dev_data_fan.zip")
    zenodo.corrupt[path] = 99
    data = dev_record["dev_data_fan.zip"]
    with pytest.raises(DownloadError) as err:
        get(zenodo, tmp_path, retries=2)
    msg = str(err.value)
    assert "dev_data_fan.zip" in msg and "\n" not in msg
    assert hashlib.md5(data).hexdigest() in msg and hashlib.md5(corrupted(data)).hexdigest() in msg
    assert len(zenodo.file_requests(path)) == 3
    assert tree(tmp_path) == set()  # no .part, no zip, no marker, nothing unpacked


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_escaping_archive_is_refused_and_nothing_is_extracted(tmp_path, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target" / "dev_data"
    members = {"fan/train/normal_id_00_00000000.wav": b"fine"}  # a good entry first: must not appear either
    links = None
    if kind == "dotdot":
        bad = "../../outside/evil.wav"
        members[bad] = b"evil"
    elif kind == "absolute":
        bad = str(outside / "evil.wav")
        members[bad] = b"evil"
    else:
        bad = "fan/link"
        links = {bad: str(outside)}
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip(members, links))
    with pytest.raises(UnsafeArchiveError) as err:
        dl.safe_extract(archive, target)
    assert "evil.zip" in str(err.value) and repr(bad) in str(err.value)
    assert tree(tmp_path / "target") == set() and tree(outside) == set()
    assert not (tmp_path / "evil.wav").exists()


def test_escaping_archive_through_download_leaves_no_marker(zenodo, tmp_path):
    zenodo.add_record(3678171, {"dev_data_fan.zip": make_zip({"fan/a.wav": b"a", "../evil.wav": b"x"})})
    out = tmp_path / "data"
    with pytest.raises(UnsafeArchiveError, match=r"dev_data_fan\.zip.*'\.\./evil\.wav'"):
        get(zenodo, out)
    assert not (tmp_path / "evil.wav").exists() and not (out / "dev_data").exists()
    assert not (out / ".mimimi-download" / "dev_data_fan.zip.done").exists()


def test_rerun_is_a_noop_without_any_request(zenodo, dev_record, tmp_path):
    first = get(zenodo, tmp_path, machine_types=("fan", "pump"))
    before = {p: (tmp_path / p).stat().st_mtime_ns for p in tree(tmp_path)}
    n = len(zenodo.log)
    second = get(zenodo, tmp_path, machine_types=("fan", "pump"))
    assert second == first == [tmp_path / "dev_data" / "fan", tmp_path / "dev_data" / "pump"]
    assert len(zenodo.log) == n  # not even the records JSON
    assert {p: (tmp_path / p).stat().st_mtime_ns for p in tree(tmp_path)} == before
    # one more type: only its archive (and the record listing) is fetched
    zenodo.add_record(3678171, {**dev_record, "dev_data_valve.zip": dev_zip("valve")})
    get(zenodo, tmp_path, machine_types=("fan", "pump", "valve"))
    assert [p for p, _ in zenodo.log[n:]] == ["/api/records/3678171",
                                              zenodo.file_path(3678171, "dev_data_valve.zip")]


def test_eval_set_comes_from_two_records_into_eval_data(zenodo, tmp_path):
    zenodo.add_record(3727685, {"eval_data_train_ToyCar.zip": make_zip({"ToyCar/train/normal_id_05_00000000.wav": b"t"})})
    zenodo.add_record(3841772, {"eval_data_test_ToyCar.zip": make_zip({"ToyCar/test/id_05_00000000.wav": b"e"})})
    paths = get(zenodo, tmp_path, machine_types=("toycar",), dataset="dcase2020-eval")
    assert paths == [tmp_path / "eval_data" / "ToyCar"]
    assert tree(tmp_path / "eval_data") == {"ToyCar/train/normal_id_05_00000000.wav", "ToyCar/test/id_05_00000000.wav"}


def test_mimii_archives_unpack_per_snr_and_are_indexed(zenodo, tmp_path):
    from mimimi.data.index import index_dataset

    zenodo.add_record(3384388, {
        f"{snr}_dB_fan.zip": make_zip({f"fan/id_00/{lab}/0000000{i}.wav": b"w" for lab in ("normal", "abnormal")
                                       for i in range(2)})
        for snr in (6, 0, -6)
    })
    paths = get(zenodo, tmp_path, dataset="mimii", snr=["6,-6"])
    assert paths == [tmp_path / "6_dB_fan" / "fan", tmp_path / "-6_dB_fan" / "fan"]
    clips = index_dataset(tmp_path).clips
    assert sorted(set(clips["snr"])) == [-6.0, 6.0] and len(clips) == 8
    assert zenodo.file_requests(zenodo.file_path(3384388, "0_dB_fan.zip")) == []


@pytest.mark.parametrize("snr_args, keys", [
    (["--snr=-6,0"], ["-6_dB_fan.zip", "0_dB_fan.zip"]),
    (["--snr", "-6", "6"], ["-6_dB_fan.zip", "6_dB_fan.zip"]),
    ([], ["6_dB_fan.zip", "0_dB_fan.zip", "-6_dB_fan.zip"]),
])
def test_cli_snr_selection(zenodo, tmp_path, capsys, snr_args, keys):
    zenodo.add_record(3384388, {f"{snr}_dB_fan.zip": make_zip({"fan/id_00/normal/00000000.wav": b"w"})
                                for snr in (6, 0, -6)})
    argv = ["--dataset", "mimii", "--machine-types", "fan", "--out", str(tmp_path), "--base-url", zenodo.url]
    assert command.main(argv + snr_args + ["--dry-run"]) == 0
    assert re.findall(r"^get +(\S+)", capsys.readouterr().out, flags=re.M) == keys


def test_unknown_machine_type_is_a_one_line_error_naming_the_valid_ones(tmp_path, capsys):
    one_line = r"^unknown machine type 'ToyCar' for mimii; valid: fan, pump, slider, valve$"
    with pytest.raises(ValueError, match=one_line):
        dl.download("mimii", ["ToyCar"], tmp_path)
    with pytest.raises(SystemExit) as exit_:
        command.main(["--dataset", "dcase2020-dev", "--machine-types", "fan,drill", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'drill'" in err and "ToyConveyor" in err
    assert tree(tmp_path) == set()


@pytest.mark.parametrize("dataset, snr, message", [
    ("dcase2020-dev", ["6"], "--snr applies only to mimii"),
    ("dcase2020-eval", ["0"], "--snr applies only to mimii"),
    ("mimii", ["3"], "unknown SNR '3' for mimii; valid: 6, 0, -6"),
])
def test_bad_snr_is_refused(tmp_path, dataset, snr, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dl.download(dataset, None, tmp_path, snr=snr)


def test_server_down_is_a_clear_error_naming_the_url(tmp_path, capsys):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(DownloadError, match=re.escape(f"cannot reach {url}/api/records/3678171")):
        dl.download("dcase2020-dev", ["fan"], tmp_path, base_url=url, timeout=2)
    with pytest.raises(SystemExit) as exit_:
        command.main(["--dataset", "dcase2020-dev", "--machine-types", "fan", "--out", str(tmp_path),
                      "--base-url", url, "--no-progress"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach") and err.count("\n") == 1


def test_http_errors_and_missing_files_name_the_url_or_file(zenodo, tmp_path):
    with pytest.raises(DownloadError, match=re.escape(f"HTTP 404 Not Found from {zenodo.url}/api/records/3678171")):
        get(zenodo, tmp_path)
    zenodo.add_record(3678171, {"dev_data_pump.zip": dev_zip("pump")})
    missing = r"^record 3678171 has no file 'dev_data_fan\.zip' \(it has: dev_data_pump\.zip\)$"
    with pytest.raises(DownloadError, match=missing):
        get(zenodo, tmp_path)
    del zenodo.blobs[zenodo.file_path(3678171, "dev_data_pump.zip")]
    with pytest.raises(DownloadError, match=r"HTTP 404 .*dev_data_pump\.zip/content"):
        get(zenodo, tmp_path, machine_types=("pump",))


@pytest.mark.parametrize("entry, url", [
    # current /api/records/<id> form
    ({"key": "a.zip", "size": 3, "checksum": "md5:900150983cd24fb0d6963f7d28e17f72",
      "links": {"self": "https://zenodo.org/api/records/9/files/a.zip/content"}},
     "/api/records/9/files/a.zip/content"),
    # pre-October-2023 form: bucket link
    ({"key": "a.zip", "size": 3, "checksum": "md5:900150983cd24fb0d6963f7d28e17f72", "bucket": "b",
      "links": {"self": "https://zenodo.org/api/files/b/a.zip"}},
     "/api/files/b/a.zip"),
    # interim post-migration form: filename/filesize, bare checksum, broken self + working download link
    ({"filename": "a.zip", "filesize": 3, "checksum": "900150983cd24fb0d6963f7d28e17f72",
      "links": {"self": "https://zenodo.org/api/records/9/files/uuid",
                "download": "https://zenodo.org/records/9/files/a.zip"}},
     "/records/9/files/a.zip"),
    # no links at all: the documented content URL
    ({"key": "a.zip", "size": 3, "checksum": "md5:900150983cd24fb0d6963f7d28e17f72"},
     "/api/records/9/files/a.zip/content"),
])
def test_parse_record_understands_zenodo_formats(entry, url):
    f = dl.parse_record({"files": [entry]}, 9, "http://127.0.0.1:1")["a.zip"]
    assert (f.size, f.md5, f.url) == (3, "900150983cd24fb0d6963f7d28e17f72", "http://127.0.0.1:1" + url)


def test_parse_record_invenio_entries_and_bad_payloads():
    rdm = {"files": {"enabled": True, "entries": {"a.zip": {
        "key": "a.zip", "size": 3, "checksum": "md5:900150983cd24fb0d6963f7d28e17f72",
        "links": {"self": "https://zenodo.org/api/records/9/files/a.zip",
                  "content": "https://zenodo.org/api/records/9/files/a.zip/content"}}}}}
    assert dl.parse_record(rdm, 9)["a.zip"].url == "https://zenodo.org/api/records/9/files/a.zip/content"
    with pytest.raises(DownloadError, match="lists no files"):
        dl.parse_record({"status": 410, "message": "gone"}, 9)
    with pytest.raises(DownloadError, match="without a usable name, size or MD5"):
        dl.parse_record({"files": [{"key": "a.zip", "size": 3, "checksum": "sha256:abc"}]}, 9)


def test_cli_downloads_and_dry_run_changes_nothing(zenodo, dev_record, tmp_path, capsys):
    out = tmp_path / "data"
    base = ["--dataset", "dcase2020-dev", "--machine-types", "fan", "pump", "--out", str(out),
            "--base-url", zenodo.url, "--no-progress"]
    assert command.main(base + ["--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "get   dev_data_fan.zip" in printed and "2 archive(s) to download" in printed
    assert not out.exists() and zenodo.file_requests() == []
    assert command.main(base) == 0
    assert capsys.readouterr().out.split() == [str(out / "dev_data" / "fan"), str(out / "dev_data" / "pump")]
    n = len(zenodo.log)
    assert command.main(base + ["--dry-run"]) == 0
    assert "0 archive(s) to download" in capsys.readouterr().out and len(zenodo.log) == n


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "mimimi.download", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--dataset" in r.stdout and "dcase2020-eval" in r.stdout
