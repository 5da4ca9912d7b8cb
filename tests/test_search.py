"""The tuning platform end to end on a local Ray: smoke search, resume, crashing trial (slow)."""
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEARCH = REPO / "tuning" / "search.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def search_cmd(tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SEARCH), "--smoke-test", "--storage-path", str(tmp / "storage"),
            "--tracking-uri", f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}", "--num-cpus", "2", *extra]


def run(cmd, cwd, env=None, timeout=600):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def client(tmp: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")


def runs_by_role(c, role):
    exp = c.get_experiment_by_name("mimimi")
    return c.search_runs([exp.experiment_id], filter_string=f"tags.`mimimi.role` = '{role}'")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    cwd = tmp / "cwd"
    cwd.mkdir()
    r = run(search_cmd(tmp, "--name", "smoke"), cwd)
    return tmp, cwd, r


def test_smoke_search_records_everything(smoke):
    tmp, cwd, r = smoke
    assert "| valve |" in r.stdout and "mlflow ui --backend-store-uri sqlite:///" in r.stdout
    # quiet by default: a progress line per trial and the results, not Tune's tables or Ray's logs
    assert "valve: 2 trials of up to 2 epochs" in r.stdout and "valve: trial 01 " in r.stdout
    assert "2/2 trials" in r.stdout and "Trial status:" not in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "(TrainController" not in r.stdout + r.stderr
    assert len((r.stdout + r.stderr).splitlines()) < 60, r.stdout + r.stderr
    assert "python -m mimimi.evaluate --run-id" in r.stdout
    assert list(cwd.iterdir()) == []  # nothing written outside the storage path and the tracking store
    c = client(tmp)
    (search,) = runs_by_role(c, "search")
    (parent,) = runs_by_role(c, "type-search")
    trials = runs_by_role(c, "trial")
    assert parent.data.tags["mlflow.parentRunId"] == search.info.run_id
    assert len(trials) == 2 and all(t.data.tags["mlflow.parentRunId"] == parent.info.run_id for t in trials)
    assert all(t.info.status == "FINISHED" for t in trials)
    assert all("train.lr" in t.data.params for t in trials)
    history = c.get_metric_history(trials[0].info.run_id, "val_loss")
    assert [m.step for m in history] == list(range(len(history))) and len(history) >= 1
    # the search's metric (leak-free proxy AUC) per epoch, in percent, first in every run (the UI lists
    # metrics in the order they were first logged, and charts the "search" section first)
    proxy = c.get_metric_history(trials[0].info.run_id, "search/cv_proxy_auc_network")
    assert len(proxy) == len(history) and all(0.0 <= m.value <= 100.0 and m.value == round(m.value, 2) for m in proxy)
    assert all(list(run.data.metrics)[0] == "search/cv_proxy_auc_network" for run in [parent, *trials])
    assert "cv_proxy_auc_network" not in trials[0].data.metrics  # once, under its search name
    assert "backend/knn/cv_proxy_auc" in trials[0].data.metrics and "mimimi.backend" in trials[0].data.tags
    assert all(0 <= v <= 100 and v == round(v, 2) for k, v in parent.data.metrics.items() if "auc" in k)
    assert "stats-knn (no training)" in r.stdout and "back-end (chosen on validation)" in r.stdout
    assert "valve: chose trial " in r.stdout and "noise (± SE)" in r.stdout  # the pick, its ties and its noise
    assert {"test/scorers/stats-knn/mean/auc", "test/scorers/ce/mean/auc", "search/cv_proxy_auc_network",
            "search/noise"} <= set(parent.data.metrics)
    assert parent.data.tags["mimimi.pick"].startswith("chose trial ") and parent.data.params["backend"]
    assert {"test/valve/mean_auc", "test/valve/mean_pauc", "test/valve/pooled_auc"} <= set(parent.data.metrics)
    assert "best.train.lr" in parent.data.params and parent.info.status == "FINISHED"
    # legible in the UI: the type first in run names, trials numbered, the space one artifact, not 50 params
    assert parent.info.run_name == "valve · smoke"
    assert sorted(t.info.run_name for t in trials) == ["valve · trial 01", "valve · trial 02"]
    assert not [k for k in parent.data.params if k.startswith("space.")]
    assert "search_space.json" in {a.path for a in c.list_artifacts(parent.info.run_id)}
    artifacts = {a.path for a in c.list_artifacts(parent.info.run_id, "evaluation")}
    assert "evaluation/results.md" in artifacts and "evaluation/anomaly_score_valve_id_00.csv" in artifacts
    assert "summary.md" in {a.path for a in c.list_artifacts(search.info.run_id)}
    (version,) = c.search_model_versions("name='mimimi-valve'")
    assert version.run_id == parent.info.run_id
    assert "test mean per-ID AUC" in version.description and "back-end" in version.description
    assert version.tags["mimimi.metric"] == "cv_proxy_auc_network" and version.tags["mimimi.champion"] == "true"
    assert parent.data.tags["mimimi.champion.reason"] == "no champion yet: the first version becomes champion"
    assert "Champion: no champion yet" in parent.data.tags["mlflow.note.content"]  # the run's description


def test_the_optuna_study_is_kept_beside_the_tracking_store(smoke):
    import optuna

    tmp, _, _ = smoke
    parent = runs_by_role(client(tmp), "type-search")[0]
    url = parent.data.tags["mimimi.optuna_storage"]
    assert url == f"sqlite:///{tmp / 'mlruns' / 'optuna.db'}"
    study = optuna.load_study(study_name=parent.data.tags["mimimi.optuna_study"], storage=url)
    assert study.study_name == "smoke/valve" and len(study.trials) == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.value is not None for t in study.trials)


def test_evaluate_run_id_reproduces_the_parent_test_auc(smoke):
    tmp, cwd, _ = smoke
    c = client(tmp)
    (parent,) = runs_by_role(c, "type-search")
    uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    r = run([sys.executable, "-m", "mimimi.evaluate", "--run-id", parent.info.run_id, "--tracking-uri", uri], cwd)
    assert "| valve |" in r.stdout
    (ev,) = runs_by_role(c, "evaluation")
    assert ev.data.tags["mimimi.source_run_id"] == parent.info.run_id
    for key in ("test/valve/mean_auc", "test/valve/mean_pauc"):
        assert ev.data.metrics[key] == pytest.approx(parent.data.metrics[key], abs=1e-9)
    # a child (trial) run has its own model
    trial = runs_by_role(c, "trial")[0]
    run([sys.executable, "-m", "mimimi.evaluate", "--run-id", trial.info.run_id, "--tracking-uri", uri], cwd)
    # unknown run id: one line
    r = subprocess.run([sys.executable, "-m", "mimimi.evaluate", "--run-id", "0" * 32, "--tracking-uri", uri],
                       cwd=cwd, capture_output=True, text=True)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "0" * 32 in r.stderr


def test_crashing_trial_is_retried_and_the_search_completes(tmp_path):
    marker = tmp_path / "crashed"
    env = {**os.environ, "MIMIMI_FAULT_INJECT": str(marker)}
    run(search_cmd(tmp_path, "--name", "crash"), tmp_path, env=env)
    assert marker.exists()  # a trial did crash
    c = client(tmp_path)
    trials = runs_by_role(c, "trial")
    assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)
    assert any("mimimi.retried" in t.data.tags for t in trials)
    assert c.search_model_versions("name='mimimi-valve'")


def test_worker_killed_mid_training_is_retried_with_one_run_per_trial(tmp_path):
    """SIGKILL of a Train worker after its first epoch (the OOM killer, a lost node): the trial is trained
    again, the search completes, every trial has one MLflow run and each epoch is logged once."""
    marker = tmp_path / "killed"
    env = {**os.environ, "MIMIMI_FAULT_INJECT": str(marker), "MIMIMI_FAULT_INJECT_AT": "epoch"}
    run(search_cmd(tmp_path, "--name", "kill"), tmp_path, env=env)
    assert marker.read_text() == "failed once, at epoch\n"
    c = client(tmp_path)
    trials = runs_by_role(c, "trial")
    ids = [t.data.tags["mimimi.trial_id"] for t in trials]
    assert len(ids) == len(set(ids)) == 2 and all(t.info.status == "FINISHED" for t in trials)
    assert any("mimimi.retried" in t.data.tags for t in trials)
    for t in trials:
        steps = [m.step for m in c.get_metric_history(t.info.run_id, "val_loss")]
        assert steps and len(steps) == len(set(steps)), (t.info.run_name, steps)
    assert c.search_model_versions("name='mimimi-valve'")


def test_driver_killed_after_a_trial_finished_resumes_without_training_it_again(tmp_path):
    """SIGKILL of the search driver right after its first trial finished (before Tune recorded it), then
    --resume: every trial has one MLflow run with each epoch logged once and one model, and the finished
    trial is not trained again (its worker reports its Train run's final checkpoint back)."""
    marker = tmp_path / "driver-killed"
    env = {**os.environ, "MIMIMI_FAULT_INJECT": str(marker), "MIMIMI_FAULT_INJECT_AT": "driver-after-trial"}
    cmd = search_cmd(tmp_path, "--name", "dkill", "--max-concurrent", "1")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL, out[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the local Ray the killed driver started (its process group)
    assert marker.read_text() == "failed once, at driver-after-trial\n"
    r = run(search_cmd(tmp_path, "--name", "dkill", "--resume"), tmp_path)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    c = client(tmp_path)
    trials = runs_by_role(c, "trial")
    ids = [t.data.tags["mimimi.trial_id"] for t in trials]
    assert len(ids) == len(set(ids)) == 2 and all(t.info.status == "FINISHED" for t in trials)
    restored = [t for t in trials if "mimimi.restored" in t.data.tags]
    assert len(restored) == 1, [t.data.tags for t in trials]  # the trial that had finished, reported back
    for t in trials:
        assert "mimimi.epochs_repeated" not in t.data.tags, (t.info.run_name, t.data.tags)  # nothing retrained
        steps = [m.step for m in c.get_metric_history(t.info.run_id, "val_loss")]
        assert steps and steps == sorted(set(steps)), (t.info.run_name, steps)
        if t.data.tags.get("mimimi.model", "").startswith("none"):
            continue
        models = c.search_logged_models([t.info.experiment_id], filter_string=f"source_run_id = '{t.info.run_id}'")
        assert len(models) == 1, (t.info.run_name, len(models))
    assert c.search_model_versions("name='mimimi-valve'")


def test_driver_killed_after_registering_resumes_without_a_second_version(tmp_path):
    """SIGKILL right after a type's best model was registered, before the search state marks the type done:
    --resume evaluates again but logs each figure once and keeps the one registered version."""
    marker = tmp_path / "killed-after-register"
    env = {**os.environ, "MIMIMI_FAULT_INJECT": str(marker), "MIMIMI_FAULT_INJECT_AT": "driver-after-register"}
    proc = subprocess.Popen(search_cmd(tmp_path, "--name", "rkill"), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL, out[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert marker.read_text() == "failed once, at driver-after-register\n"
    run(search_cmd(tmp_path, "--name", "rkill", "--resume"), tmp_path)
    c = client(tmp_path)
    (parent,) = runs_by_role(c, "type-search")
    assert parent.info.status == "FINISHED"
    (version,) = c.search_model_versions("name='mimimi-valve'")
    assert version.run_id == parent.info.run_id and version.tags["mimimi.champion"] == "true"
    for key in ("search/cv_proxy_auc_network", "test/valve/mean_pauc"):
        assert len(c.get_metric_history(parent.info.run_id, key)) == 1, key


def test_interrupted_search_resumes_without_losing_or_repeating_trials(tmp_path):
    cmd = search_cmd(tmp_path, "--name", "resume", "--max-concurrent", "1")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    db = tmp_path / "mlruns" / "mlflow.db"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:  # wait until the first trial has finished
            time.sleep(2)
            if db.exists():
                with sqlite3.connect(db) as con:
                    n = con.execute("select count(*) from runs r join tags t on r.run_uuid = t.run_uuid "
                                    "where t.key = 'mimimi.role' and t.value = 'trial' and r.status = 'FINISHED'"
                                    ).fetchone()[0]
                if n >= 1:
                    break
            assert proc.poll() is None, proc.stdout.read()[-3000:]
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=120)
        assert proc.returncode == 130, proc.stdout.read()[-3000:]  # interrupted, not "done"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run(search_cmd(tmp_path, "--name", "resume", "--resume"), tmp_path)
    c = client(tmp_path)
    trials = runs_by_role(c, "trial")
    ids = [t.data.tags["mimimi.trial_id"] for t in trials]
    assert len(ids) == len(set(ids)) == 2
    finished = [t for t in trials if t.info.status == "FINISHED"]
    assert len(finished) == 2
    for t in trials:  # no epoch logged twice, even for a trial Tune had to train again
        steps = [m.step for m in c.get_metric_history(t.info.run_id, "val_loss")]
        assert steps and len(steps) == len(set(steps)), (t.info.run_name, steps)
    assert c.search_model_versions("name='mimimi-valve'")


@pytest.fixture
def s3_server():
    """An S3-compatible server (moto) on 127.0.0.1 with an empty bucket, and the environment that points
    pyarrow (Tune's storage, the search state) and boto at it."""
    from moto.server import ThreadedMotoServer
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket="mimimi")
    try:
        yield env
    finally:
        server.stop()


def test_resume_with_cloud_storage(tmp_path, s3_server):
    """--storage-path s3://…: the search state and Tune's experiment live in the bucket; Ctrl-C after the
    first finished trial, then --resume, finishes the search with every trial once."""
    import boto3

    storage = "s3://mimimi/runs"
    base = [sys.executable, str(SEARCH), "--smoke-test", "--storage-path", storage, "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "--num-cpus", "2", "--name", "cloud"]
    proc = subprocess.Popen([*base, "--max-concurrent", "1"], cwd=tmp_path, env=s3_server, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 600
        out = []
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            out.append(line)
            if "trial 01 finished" in line:
                break
        assert any("trial 01 finished" in ln for ln in out), "".join(out)[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=180)
        assert proc.returncode == 130, "".join(out)[-3000:] + proc.stdout.read()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    s3 = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mimimi", Prefix="runs/cloud/").get("Contents", [])]
    assert "runs/cloud/mimimi_search.json" in keys  # the state is in the bucket, not on this machine
    run([*base, "--resume"], tmp_path, env=s3_server)
    c = client(tmp_path)
    trials = runs_by_role(c, "trial")
    ids = [t.data.tags["mimimi.trial_id"] for t in trials]
    assert len(ids) == len(set(ids)) == 2 and all(t.info.status == "FINISHED" for t in trials)
    assert c.search_model_versions("name='mimimi-valve'")


def test_the_screenshot_pages_are_those_of_the_newest_search(smoke):
    """docs/screenshots.py (make screenshots) shoots the smoke search's type run, a trial, the compare view
    and the registered version; here without a browser: which pages, from the store alone."""
    import importlib.util

    from mimimi.tracking import Tracker

    spec = importlib.util.spec_from_file_location("screenshots", Path(__file__).resolve().parents[1] / "docs" / "screenshots.py")
    shots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shots)
    tmp, _, _ = smoke
    c = client(tmp)
    (parent,) = runs_by_role(c, "type-search")
    trials = runs_by_role(c, "trial")
    got = shots.pages(Tracker(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"), "mimimi")
    assert set(got) == set(shots.SIZES)
    assert f"/runs/{parent.info.run_id}?" in got["type-run.png"] and got["version.png"].startswith("#/models/mimimi-valve/versions/1?")
    assert all(t.info.run_id in got["compare.png"] for t in trials)
    with pytest.raises(shots.ScreenshotError, match="no experiment 'nope'"):
        shots.pages(Tracker(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"), "nope")


def test_a_search_on_ids_with_one_and_two_training_clips(tmp_path):
    """Real data has IDs with one or two training clips: the search trains, validates on what there is, says
    so, and registers a model whose back-ends fell back where they had to (stated, per ID)."""
    from mimimi.data.synth import generate

    root = tmp_path / "few"
    generate(root, ["valve"], ["00", "02", "04"], n_test_normal=3, n_test_anomaly=3, seconds=3.0, seed=0,
             train_counts={"00": 6, "02": 2, "04": 1})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cmd = [sys.executable, str(SEARCH), "--data-root", str(root), "--storage-path", str(tmp_path / "storage"),
           "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "--num-cpus", "2",
           "--search-config", str(REPO / "configs" / "search" / "smoke.yaml")]
    r = run(cmd, cwd)
    assert "warning: valve: validation rests on few normal clips for ID(s) 00: 6, 02: 2, 04: 0" in r.stderr
    assert "valve: chose trial " in r.stdout and "Traceback" not in r.stdout + r.stderr
    (parent,) = runs_by_role(client(tmp_path), "type-search")
    assert "gmm for ID 04: knn: 1 training clip(s); gmm needs 2" in parent.data.tags["mimimi.fallbacks"]
