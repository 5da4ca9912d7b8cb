"""`mlflow models serve` of a registered MIMIMI model answers REST requests like `python -m mimimi.score` (slow)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
from scoring_helpers import MODEL_NAME, valve_clips


pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
START_TIMEOUT_S = 240  # the server imports torch and MLflow and loads the model before /ping answers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, payload) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_for_ping(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    pytest.fail(f"mlflow models serve did not answer /ping within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def start_server(model_uri: str, store: str, tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    """`mlflow models serve` of ``model_uri`` from ``store`` on a free loopback port: (process, URL, its log)."""
    port, log = free_port(), tmp / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
           "local", "--host", "127.0.0.1", "--port", str(port)]
    # the server execs `uvicorn`: the virtual environment's bin folder must be on PATH, even when not activated
    env = {**os.environ, "MLFLOW_TRACKING_URI": store,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # its own process group
    return proc, f"http://127.0.0.1:{port}", log


@pytest.fixture(scope="module")
def served(tmp_path_factory, valve_model):
    """Version 1 of mimimi-valve (the session's store), served on 127.0.0.1 by `mlflow models serve`."""
    tmp, store = tmp_path_factory.mktemp("serve"), valve_model["store"]
    proc, url, log = start_server(f"models:/{MODEL_NAME}/1", store, tmp)
    try:
        wait_for_ping(url, proc, log)
        yield {"url": url, "store": store, "tmp": tmp}
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (mlflow and the uvicorn it runs), SIGKILL after 30 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the group is gone already
            pass
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


def cli_scores(served, paths) -> list[dict]:
    cmd = [sys.executable, "-m", "mimimi.score", "--model", f"models:/{MODEL_NAME}/1", "--tracking-uri",
           served["store"], "--format", "json", *map(str, paths)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=served["tmp"], timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_served_model_answers_like_mimimi_score(served, real_samples):
    clips = valve_clips(real_samples)
    mimii = real_samples / "mimii" / "valve" / "id_06" / "abnormal" / "00000008.wav"
    paths = [str(c) for c in clips] + [str(mimii)]
    expected = cli_scores(served, paths)
    # real clips lie beyond the synthetic-trained model's normal-only thresholds: flagged (ID 06: no threshold)
    assert len(expected) == len(paths) and {r["decision"] for r in expected} == {"anomaly", None}

    status, body = post(served["url"], {"dataframe_split": {"columns": ["path"], "data": [[p] for p in paths]}})
    assert status == 200, body
    got = body["predictions"]
    assert len(got) == len(paths)
    for g, e in zip(got, expected):
        assert g["score"] == pytest.approx(e["score"], abs=1e-6)
        assert (g["decision"], g["machine_id"], g["pred_id"]) == (e["decision"], e["machine_id"], e["pred_id"])
        assert g["threshold"] == (None if e["threshold"] is None else pytest.approx(e["threshold"]))

    # raw 16 kHz waveforms with their machine IDs, in records orientation
    picked = [0, 5, len(paths) - 1]
    records = []
    for i in picked:
        wave = sf.read(paths[i], dtype="float32")[0]
        records.append({"waveform": (wave if wave.ndim == 1 else wave[:, 0]).tolist(),
                        "machine_id": expected[i]["machine_id"]})
    status, body = post(served["url"], {"dataframe_records": records})
    assert status == 200, body
    for g, i in zip(body["predictions"], picked):
        assert g["score"] == pytest.approx(expected[i]["score"], abs=1e-6)
        assert g["decision"] == expected[i]["decision"]


@pytest.mark.parametrize("payload, message", [
    ({"dataframe_split": {"columns": ["machine_id"], "data": [["00"]]}}, "needs a 'path' column"),
    ({"dataframe_records": [{"path": "/nowhere/normal_id_00_00000000.wav"}]}, "no such file"),
    ({"dataframe_records": [{"path": "/nowhere/clip.wav"}]}, "/nowhere/clip.wav: no such file"),
    ({"dataframe_records": [{"waveform": [0.0, 0.1, 0.2], "machine_id": "00"}]}, "is too short"),
    ({"dataframe_split": {"columns": ["wav"], "data": [["x.wav"]]}}, "columns other than path, waveform"),
    ({"dataframe_records": [{"waveform": "not samples", "machine_id": "00"}]}, "waveform"),
    ({"dataframe_records": [{"waveform": [0.0] * 4000, "machine_id": "09"}]}, "machine ID '09'"),
    ({"columns": ["path"], "data": [["x.wav"]]}, "dataframe_split"),
    (b"{not json", "valid JSON"),
])
def test_malformed_request_gets_a_4xx_with_a_message(served, payload, message):
    status, body = post(served["url"], payload)
    assert 400 <= status < 500, (status, body)
    assert message in body.get("message", ""), body
    if message not in ("valid JSON", "dataframe_split"):  # the model's answers (those two are MLflow's parser's)
        assert "\n" not in body["message"].strip() and "Failed to predict" not in body["message"], body  # no dump


def test_good_and_bad_rows_are_answered_row_by_row(served, real_samples):
    good = str(valve_clips(real_samples)[0])
    status, body = post(served["url"], {"dataframe_records": [{"path": good}, {"path": "/nowhere/clip.wav"},
                                                              {"waveform": [0.1] * 3, "machine_id": "00"}]})
    assert status == 200, body
    first, missing, short = body["predictions"]
    assert first["error"] is None and first["machine_id"] == "00" and first["decision"] in ("normal", "anomaly")
    assert missing["error"] == "/nowhere/clip.wav: no such file" and missing["decision"] is None
    assert "too short" in short["error"] and short["machine_id"] == "00"


def test_a_tampered_model_is_not_served(tmp_path, valve_model):
    """A checkpoint changed in the artifact store after logging: MimimiModel.load_context refuses it, so the
    scoring server's app fails to load and `mlflow models serve` exits with an error; /ping never answers."""
    from mimimi.tracking import Tracker

    tr = Tracker(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")  # a store of its own: the session's stays intact
    run = tr.start_run(tr.ensure_experiment("serve"), "tampered")
    ref = tr.log_model(run, valve_model["checkpoint"], registered_name=MODEL_NAME)
    tr.end_run(run)
    folder = Path(tr.client.get_logged_model(ref.model_uri.removeprefix("models:/")).artifact_location
                  .removeprefix("file://"))
    ckpt = folder / "artifacts" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:-1] + bytes([ckpt.read_bytes()[-1] ^ 1]))

    proc, url, log = start_server(f"models:/{MODEL_NAME}/{ref.version}", tr.uri, tmp_path)
    try:
        rc = proc.wait(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail(f"mlflow models serve kept running with a tampered model:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert rc != 0, text[-3000:]
    refusals = [line for line in text.splitlines() if line.startswith("mimimi.verify.ModelVerificationError: ")]
    assert refusals and "artifacts/checkpoint.pt: sha256" in refusals[0] and "does not match" in refusals[0], text[-3000:]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/ping", timeout=2)
