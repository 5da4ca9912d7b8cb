"""mimimi.tracking against a throwaway sqlite store in a temporary folder, never the repo's mlruns/.

One store serves the whole module: creating a sqlite store runs MLflow's migrations (~5 s).
"""
import filecmp
import json
import math
import os
import pickle
import subprocess
import sys
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import small_config

from mimimi import tracking as T
from mimimi.pyfunc import ModelInputError
from mimimi.checkpoint import CheckpointError, load_checkpoint
from mimimi.config import Config, merge
from mimimi.evaluation import labelled_test_clips
from mimimi.scoring.clips import score_clips
from mimimi.features import FeatureCache
from mimimi.training import fit


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture(autouse=True)
def tracking(store, tmp_path_factory, monkeypatch):
    """Each test in an empty working directory that must stay empty: MLflow's defaults write to ./mlruns and
    ./mlflow.db, so anything that reached for MLflow's global tracking URI instead of the tracker's shows here."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    yield store
    assert mlflow.active_run() is None, "a fluent active run was left behind"
    assert not list(cwd.iterdir()), f"written to the working directory: {sorted(p.name for p in cwd.iterdir())}"


@pytest.fixture
def tr(store) -> T.Tracker:
    return T.Tracker(store)


@pytest.fixture(scope="module")
def checkpoints(synth_root, tmp_path_factory) -> dict[str, Path]:
    """A 1-epoch complex network and AE on the synthetic valve tree."""
    out = tmp_path_factory.mktemp("train")
    cfg = small_config(synth_root, out / "cache", epochs=1)
    return {name: fit(merge(cfg, {"model": {"name": name}}), out / name).best_checkpoint for name in ("complex", "ae")}


def one_line_error(fn, *match: str) -> str:
    with pytest.raises(T.TrackingError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and all(m in msg for m in match), msg
    return msg


def test_store_uris_and_experiment_artifacts_beside_the_db(tr, store, monkeypatch):
    db = Path(store.removeprefix("sqlite:///"))
    assert T.default_tracking_uri() == f"sqlite:///{T.REPO_MLRUNS.resolve()}/mlflow.db"
    assert T.REPO_MLRUNS == Path(T.__file__).resolve().parents[1] / "mlruns"
    assert T.resolve_tracking_uri("sqlite:///rel/mlflow.db") == f"sqlite:///{Path.cwd() / 'rel' / 'mlflow.db'}"
    assert T.resolve_tracking_uri("sqlite:///rel/x.db?timeout=30").endswith("/rel/x.db?timeout=30")
    assert T.resolve_tracking_uri("https://mlflow.example:5000") == "https://mlflow.example:5000"
    one_line_error(lambda: T.resolve_tracking_uri("sqlite:///:memory:"), "in-memory")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # None -> $MLFLOW_TRACKING_URI before the repo default
    assert T.Tracker().uri == store
    assert pickle.loads(pickle.dumps(tr)).uri == store  # Tune pickles the callbacks that hold one

    eid = tr.ensure_experiment("valve search/1")
    assert tr.ensure_experiment("valve search/1") == eid
    location = tr.client.get_experiment(eid).artifact_location
    assert location == (db.parent / "artifacts" / "valve_search_1").as_uri()
    run = tr.start_run(eid, "r")
    assert tr.get_run(run).artifact_uri == f"{location}/{run}/artifacts"
    tr.end_run(run)


def test_two_stores_in_one_process_never_mix_and_nothing_global_changes(tmp_path, checkpoints, monkeypatch):
    import mlflow.tracking._tracking_service.utils as fluent

    monkeypatch.setattr(fluent, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a, b = T.Tracker(tmp_path / "a"), T.Tracker(tmp_path / "b")
    runs = {t.uri: t.start_run(t.ensure_experiment("two"), "r") for t in (a, b)}
    ref = a.log_model(runs[a.uri], checkpoints["complex"], registered_name="mimimi-valve")
    assert ref.version == 1 and b.champion_version("mimimi-valve") is None
    with pytest.raises(T.TrackingError, match="not found"):
        b.get_run(runs[a.uri])
    assert a.get_run(runs[a.uri]).tags[T.MODEL_URI_TAG] == ref.model_uri
    assert fluent._tracking_uri is None and "MLFLOW_TRACKING_URI" not in os.environ  # restored after Model.log
    for t in (a, b):
        t.end_run(runs[t.uri])
    # importing the module changes no environment variable and no MLflow setting
    probe = ("import os, mlflow; before = dict(os.environ); import mimimi.tracking; "
             "assert dict(os.environ) == before, set(os.environ) ^ set(before); "
             "from mlflow.tracking._tracking_service import utils; assert utils._tracking_uri is None")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    subprocess.run([sys.executable, "-c", probe], check=True, env=env, cwd=tmp_path)


def test_runs_params_metrics_tags_and_artifacts_round_trip(tr, store, tmp_path):
    eid = tr.ensure_experiment("runs")
    parent = tr.start_run(eid, "search-valve", tags={"mimimi.kind": "search"})
    trials = [tr.start_run(eid, f"trial-{i}", parent_run_id=parent, tags={"trial": i}) for i in range(3)]
    child = trials[1]

    tr.log_params(child, {"train": {"lr": 1e-3, "loss_weights": (1.0, 1.0, 0.5)}, "model": {"name": "complex"},
                         "note": "x" * 7000, "empty": {}})
    tr.log_params(child, {"train": {"lr": 1e-3}})  # the same value again is fine
    tr.log_params(trials[0], merge(Config(), {"features": {"n_fft": 512}}))  # a config tree, every leaf
    for step, loss in enumerate([1.0, 0.5, 0.25]):
        tr.log_metrics(child, {"val_loss": loss, "val": {"acc": step / 2}}, step=step)
    tr.log_metrics(child, {"epoch_seconds": np.float32(1.5), "n": np.int64(3), "diverged": float("nan")})
    tr.set_tags(child, {"mimimi.machine_type": "valve", "long": "y" * 9000})
    tr.end_run(trials[0], "FAILED")
    tr.end_run(child)

    rec = tr.get_run(child)
    assert (rec.run_id, rec.experiment_id, rec.run_name, rec.status, rec.parent_run_id) == \
        (child, eid, "trial-1", "FINISHED", parent)
    assert rec.params["train.lr"] == "0.001" and rec.params["train.loss_weights"] == "[1.0, 1.0, 0.5]"
    assert rec.params["model.name"] == "complex" and rec.params["empty"] == "{}"
    assert len(rec.params["note"]) == 6000 and rec.params["note"].endswith("...")
    assert rec.metrics["val_loss"] == 0.25 and rec.metrics["val.acc"] == 1.0 and rec.metrics["n"] == 3.0
    assert math.isnan(rec.metrics["diverged"])
    assert tr.metric_history(child, "val_loss") == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert rec.tags["trial"] == "1" and rec.tags["mimimi.machine_type"] == "valve" and len(rec.tags["long"]) == 8000
    assert rec.tags["mlflow.runName"] == "trial-1"
    cfg_params = tr.get_run(trials[0]).params
    assert cfg_params["features.n_fft"] == "512" and cfg_params["model.net.kernels"] == "[[7, 5], [7, 5], [5, 3], [5, 3], [5, 2]]"

    # several runs open at once, no fluent active run: the parent and trial 2 still run
    assert {r.run_id: r.status for r in tr.child_runs(parent)} == dict(zip(trials, ["FAILED", "FINISHED", "RUNNING"]))
    assert tr.get_run(parent).status == "RUNNING" and tr.get_run(parent).parent_run_id is None
    assert tr.child_runs(trials[2]) == []
    tr.end_run(trials[2], "KILLED")
    tr.end_run(parent)

    src = tmp_path / "report"
    (src / "plots").mkdir(parents=True)
    (src / "results.md").write_text("| type | AUC |\n")
    (src / "plots" / "roc.png").write_bytes(b"\x89PNG fake")
    tr.log_artifacts(child, src, "eval")
    tr.log_artifact(child, src / "results.md")
    tr.log_dict(child, {"auc": np.float64(0.9), "ids": np.array([0, 2]), "root": Path("/data")}, "summary.json")
    tr.log_dict(child, {"lr": 1e-3}, "cfg/config.yaml")
    tr.log_text(child, "# report\n", "report.md")
    dl = Path(mlflow.artifacts.download_artifacts(run_id=child, artifact_path="", dst_path=str(tmp_path / "dl"),
                                              tracking_uri=store))
    assert (dl / "eval" / "plots" / "roc.png").read_bytes() == b"\x89PNG fake"
    assert (dl / "eval" / "results.md").read_text() == (dl / "results.md").read_text() == "| type | AUC |\n"
    assert json.loads((dl / "summary.json").read_text()) == {"auc": 0.9, "ids": [0, 2], "root": "/data"}
    assert yaml.safe_load((dl / "cfg" / "config.yaml").read_text()) == {"lr": 1e-3}
    assert (dl / "report.md").read_text() == "# report\n"


def test_errors_are_one_line_tracking_errors(tr, store, tmp_path):
    eid = tr.ensure_experiment("errors")
    run = tr.start_run(eid, "r")
    tr.log_params(run, {"lr": 1})
    missing = "0123456789abcdef0123456789abcdef"
    assert one_line_error(lambda: tr.get_run(missing)) == f"run {missing} not found in {store}"
    one_line_error(lambda: tr.get_run("not-a-run-id"), "not found")
    one_line_error(lambda: tr.child_runs(missing), missing, "not found")
    one_line_error(lambda: tr.log_metrics(missing, {"a": 1.0}), missing, "not found")
    one_line_error(lambda: tr.start_run(eid, "orphan", parent_run_id=missing), missing, "not found")
    one_line_error(lambda: tr.start_run("424242", "x"), "experiment 424242 not found")
    for bad in ("0.5", None, True, [1.0]):
        one_line_error(lambda bad=bad: tr.log_metrics(run, {"loss": bad}), run, "'loss' is not a number")
    one_line_error(lambda: tr.log_params(run, {"lr": 2}), run, "lr")  # MLflow never changes a logged param
    one_line_error(lambda: tr.log_params(run, {"a.b": 1, "a": {"b": 2}}), "'a.b' is given twice")
    one_line_error(lambda: tr.end_run(run, "DONE"), run, "FINISHED")
    one_line_error(lambda: tr.log_artifact(run, tmp_path / "nope.txt"), run, "nope.txt")
    one_line_error(lambda: tr.log_artifacts(run, tmp_path / "nope"), run, "not a directory")
    one_line_error(lambda: tr.log_dict(run, {"x": object()}, "x.json"), "JSON")
    one_line_error(lambda: tr.load_checkpoint_from_run(run), f"run {run} has no logged model")
    one_line_error(lambda: tr.load_checkpoint_from_run(missing), f"run {missing} not found")
    with pytest.raises(CheckpointError, match="nope.pt"):
        tr.log_model(run, tmp_path / "nope.pt")
    tr.end_run(run)


@pytest.mark.parametrize("name", ["complex", "ae"])
def test_logged_model_scores_exactly_like_evaluate(tr, name, checkpoints, synth_root, tmp_path):
    ckpt = checkpoints[name]
    loaded = load_checkpoint(ckpt)
    clips = labelled_test_clips(loaded.cfg, synth_root, "valve", loaded.ids).sample(4, random_state=0)
    clips = clips.reset_index(drop=True)
    cache = FeatureCache(tmp_path / "cache", loaded.cfg.features)
    expected = score_clips(loaded.model, loaded.cfg, clips, loaded.ids, cache, fitted=loaded.scoring)

    run = tr.start_run(tr.ensure_experiment("models"), f"{name}-trial")
    ref = tr.log_model(run, ckpt, extra={"trial": "t1", "test_auc": 0.5})
    assert ref.model_uri.startswith("models:/m-") and ref.version is None
    assert tr.get_run(run).tags[T.MODEL_URI_TAG] == ref.model_uri
    model = tr.load_pyfunc(ref.model_uri)
    got = model.predict(pd.DataFrame({"path": clips.path, "machine_id": clips.machine_id}))
    # the checkpoint's default scorer (validation's choice) and its normal-only thresholds
    assert list(got.columns) == ["score", "decision", "threshold", "machine_id", "pred_id", "error"]
    assert len(got) == len(clips) and got.error.isna().all()
    np.testing.assert_array_equal(got.score.to_numpy(), expected.score.to_numpy())  # the same code path
    assert got.pred_id.tolist() == expected.pred_id.tolist()
    assert (got.pred_id.isna().all() if name == "ae" else got.pred_id.isin(loaded.ids).all())

    # runs:/<id>/model loads the same model; machine IDs parsed from the DCASE file names
    by_name = tr.load_pyfunc(f"runs:/{run}/model").predict(pd.DataFrame({"path": clips.path}))
    np.testing.assert_array_equal(by_name.score.to_numpy(), expected.score.to_numpy())

    # what is stored with the model: metadata, signature, config/features/ID map as JSON beside the checkpoint
    info = model.metadata  # the MLmodel file: metadata and signature
    meta = info.metadata["mimimi"]
    assert meta["ids"] == loaded.ids and meta["model"] == name and meta["machine_type"] == "valve"
    assert meta["features"]["n_fft"] == 256 and info.metadata["trial"] == "t1"
    assert [c.name for c in info.signature.inputs.inputs] == ["path", "waveform", "machine_id"]
    assert [c.name for c in info.signature.outputs.inputs] == ["score", "decision", "threshold", "machine_id", "pred_id",
                                                           "error"]
    assert meta["default_scorer"] == loaded.scoring.default  # chosen on validation when it was trained
    assert meta["scorers"][-7:] == ["knn", "mahalanobis", "gmm", "knn-density", "stats-knn", "knn-stats", "fusion"]
    # another scorer through the params, as mimimi.score --scorer
    gmm = model.predict(pd.DataFrame({"path": clips.path}), params={"scorer": "gmm"})
    want = score_clips(loaded.model, loaded.cfg, clips, loaded.ids, cache, fitted=loaded.scoring, scorer="gmm")
    np.testing.assert_allclose(gmm.score.to_numpy(), want.score.to_numpy())
    resolved = tr.resolve_model(ref.model_uri, dst_dir=tmp_path / "model")  # what mimimi.score downloads
    mdir = resolved.checkpoint.parents[1]
    assert resolved.checkpoint == mdir / "artifacts" / "checkpoint.pt" and resolved.thresholds is not None
    assert json.loads((mdir / "artifacts" / "ids.json").read_text()) == loaded.ids
    assert json.loads((mdir / "artifacts" / "config.json").read_text())["model"]["name"] == name
    assert filecmp.cmp(mdir / "artifacts" / "checkpoint.pt", ckpt, shallow=False)
    assert not (mdir / "python_model.pkl").exists()  # a model from code, nothing pickled
    tr.end_run(run)


def test_model_input_machine_ids(tr, checkpoints, synth_root, tmp_path):
    ckpt = checkpoints["ae"]  # the quickest to score
    src = min((synth_root / "valve" / "test").glob("normal_id_02_*.wav"))
    mimii = tmp_path / "6_dB_valve" / "valve" / "id_02" / "normal" / "00000000.wav"
    mimii.parent.mkdir(parents=True)
    shutil.copy(src, mimii)
    run = tr.start_run(tr.ensure_experiment("inputs"), "ae")
    model = tr.load_pyfunc(tr.log_model(run, ckpt).model_uri)
    paths = [str(src), str(mimii), str(mimii)]
    got = model.predict(pd.DataFrame({"path": paths, "machine_id": ["02", None, "id_02"]}))
    assert got.score.nunique() == 1  # same audio, same ID: from the cell, the MIMII folder, "id_02"
    # aggregate applies to the native score (the embedding scorers use the mean embedding of the segments)
    recon = model.predict(pd.DataFrame({"path": [str(src)]}), params={"scorer": "recon"}).score[0]
    assert model.predict(pd.DataFrame({"path": [str(src)]}), params={"aggregate": "max", "scorer": "recon"}).score[0] > recon

    plain = tmp_path / "clip.wav"
    shutil.copy(src, plain)
    with pytest.raises(ModelInputError, match=r"clip\.wav: no machine ID"):
        model.predict(pd.DataFrame({"path": [str(plain)]}))
    with pytest.raises(ModelInputError, match=r"clip\.wav: machine ID '08' is not one the model was trained on"):
        model.predict(pd.DataFrame({"path": [str(plain)], "machine_id": ["08"]}))
    with pytest.raises(ModelInputError, match="model input needs a 'path' column"):
        model.predict(pd.DataFrame({"machine_id": ["02"]}))  # neither a path nor a waveform
    tr.end_run(run)


def test_registered_versions_and_checkpoint_from_run(tr, checkpoints, tmp_path):
    eid = tr.ensure_experiment("registry")
    parent = tr.start_run(eid, "search")
    first, second = (tr.start_run(eid, f"trial-{i}", parent_run_id=parent) for i in range(2))
    ref1 = tr.log_model(first, checkpoints["complex"], registered_name="mimimi-valve")
    ref2 = tr.log_model(second, checkpoints["ae"], registered_name="mimimi-valve")
    assert (ref1.version, ref2.version) == (1, 2) and ref1.model_uri != ref2.model_uri
    assert tr.get_run(second).tags["mimimi.registered_model"] == "models:/mimimi-valve/2"
    assert tr.load_pyfunc("models:/mimimi-valve/2").metadata.metadata["mimimi"]["model"] == "ae"

    path = tr.load_checkpoint_from_run(first, tmp_path / "first")
    assert path == tmp_path / "first" / "checkpoint.pt" and filecmp.cmp(path, checkpoints["complex"], shallow=False)
    assert load_checkpoint(path).cfg.model.name == "complex"

    one_line_error(lambda: tr.load_checkpoint_from_run(parent), f"run {parent} has no logged model")
    tr.set_tags(parent, {T.BEST_MODEL_RUN_TAG: second})
    path = tr.load_checkpoint_from_run(parent)  # follows the search's best trial; a new temporary folder
    try:
        assert filecmp.cmp(path, checkpoints["ae"], shallow=False)
    finally:
        shutil.rmtree(path.parent)

    dangling = tr.start_run(eid, "dangling")
    tr.set_tags(dangling, {T.BEST_MODEL_RUN_TAG: parent, "x": 1})
    tr.set_tags(parent, {T.BEST_MODEL_RUN_TAG: dangling})
    one_line_error(lambda: tr.load_checkpoint_from_run(dangling), "loop")
    for run in (first, second, dangling, parent):
        tr.end_run(run)
