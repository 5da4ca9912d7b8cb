"""mimimi.score: the CLI on real clips with a model logged in a throwaway sqlite store, the pyfunc model's
waveform input, and the champion alias. No Ray."""
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from mlflow.exceptions import MlflowException
from scoring_helpers import MODEL_NAME, NO_THRESHOLD_ID, valve_clips

from mimimi import champion, score, verify
from mimimi.scoring import clips as scoring_clips
from mimimi import tracking as T
from mimimi.checkpoint import load_checkpoint
from mimimi.data.index import machine_id_from_path
from mimimi.pyfunc import MODEL_CODE, ModelInputError



@pytest.fixture
def model(valve_model) -> dict:
    """Version 1 of mimimi-valve (the champion), logged with per-ID thresholds, in the session's store."""
    return valve_model


@pytest.fixture
def tr(model) -> T.Tracker:
    return T.Tracker(model["store"])


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = score.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def expected_decision(s: float, t: float | None) -> str | None:
    return None if t is None else ("anomaly" if s >= t else "normal")


def test_cli_table_csv_json_agree_with_the_pyfunc_model(tr, model, real_samples, capsys, tmp_path):
    clips = valve_clips(real_samples)
    store, thresholds = model["store"], model["thresholds"]
    args = ["--model", f"models:/{MODEL_NAME}/1", "--tracking-uri", store, "--batch-size", "5", *map(str, clips)]

    code, csv_text, err = cli(capsys, *args, "--format", "csv")
    assert code == 0, err
    default = load_checkpoint(model["checkpoint"]).scoring.default  # chosen on validation when it was trained
    assert err.strip().startswith(f"scored 16 file(s) with models:/{MODEL_NAME}/1 (version 1), scorer {default} "
                                  "(chosen on validation: cv_proxy_auc ")
    assert err.strip().endswith(" %), 0 error(s)")
    got = pd.read_csv(io.StringIO(csv_text), dtype={"machine_id": str, "pred_id": str})
    assert list(got.columns) == scoring_clips.COLUMNS and got.path.tolist() == [str(c) for c in clips]
    assert got.machine_id.tolist() == [c.name.split("_")[2] for c in clips]  # parsed from the file names

    # the pyfunc model (what mlflow models serve runs) gives the same scores, thresholds and decisions
    pyfunc = tr.load_pyfunc(f"models:/{MODEL_NAME}/1")
    want = pyfunc.predict(pd.DataFrame({"path": [str(c) for c in clips]}))
    assert list(want.columns) == scoring_clips.MODEL_COLUMNS + ["error"] and want.error.isna().all()
    np.testing.assert_allclose(got.score, want.score, rtol=0, atol=1e-12)
    assert got.machine_id.tolist() == want.machine_id.tolist() and got.pred_id.tolist() == want.pred_id.tolist()
    decisions = [None if pd.isna(d) else d for d in got.decision]
    assert decisions == [None if d is None else d for d in want.decision]
    assert decisions == [expected_decision(s, thresholds[m]) for s, m in zip(got.score, got.machine_id)]
    # ID 06 has no threshold: no decision. The model learnt synthetic valves and its thresholds come from
    # their normal clips, so these real clips sit far beyond them: flagged, as an honest model should
    assert None in decisions and set(decisions) - {None} == {"anomaly"}
    assert got[got.machine_id == NO_THRESHOLD_ID].threshold.isna().all()
    stored = {m: thresholds[m] for m in got.machine_id}
    assert got.threshold.tolist()[:4] == [stored[m] for m in got.machine_id[:4]]

    code, json_text, _ = cli(capsys, *args, "--format", "json", "--output", str(tmp_path / "out" / "s.json"))
    assert code == 0 and json_text == ""
    records = json.loads((tmp_path / "out" / "s.json").read_text())
    assert [r["path"] for r in records] == got.path.tolist() and list(records[0]) == scoring_clips.COLUMNS
    assert [r["score"] for r in records] == got.score.tolist()  # full precision in both
    assert [r["decision"] for r in records] == decisions
    assert all(r["threshold"] is None for r in records if r["machine_id"] == NO_THRESHOLD_ID)

    code, table, _ = cli(capsys, *args)  # the default format
    lines = table.splitlines()
    assert code == 0 and lines[0].split() == scoring_clips.COLUMNS and len(lines) == 17
    for line, r in zip(lines[1:], records):
        cells = line.split()
        assert cells[0] == r["path"] and cells[1] == r["machine_id"] and cells[3] == (r["decision"] or "—")
        assert float(cells[2]) == pytest.approx(r["score"], rel=1e-5)


def test_folders_are_searched_recursively_and_machine_id_can_be_given(model, real_samples, capsys, tmp_path):
    clips = valve_clips(real_samples)
    tree = tmp_path / "incoming"
    (tree / "a" / "b").mkdir(parents=True)
    shutil.copy(clips[0], tree / "a" / clips[0].name)
    shutil.copy(clips[5], tree / "a" / "b" / clips[5].name.replace(".wav", ".WAV"))
    shutil.copy(clips[9], tree / "plain.wav")  # no machine ID in its name
    (tree / "notes.txt").write_text("not audio")
    mimii = real_samples / "mimii" / "valve" / "id_06" / "abnormal" / "00000008.wav"  # 8 channels, ID from folder
    args = ["--run-id", model["run_id"], "--tracking-uri", model["store"], "--format", "json"]

    code, out, err = cli(capsys, *args, str(tree), str(mimii))
    records = json.loads(out)
    assert [Path(r["path"]).name for r in records] == [clips[0].name, clips[5].name.replace(".wav", ".WAV"),
                                                       "00000008.wav"]
    assert [r["machine_id"] for r in records] == [clips[0].name.split("_")[2], clips[5].name.split("_")[2], "06"]
    assert code == 1 and err.count("error:") == 1 and "plain.wav: no machine ID" in err  # notes.txt ignored

    code, out, err = cli(capsys, *args, "--machine-id", "id_02", str(tree))
    records = json.loads(out)
    assert code == 0, err
    assert len(records) == 3 and {r["machine_id"] for r in records} == {"02"}
    assert all(r["decision"] == expected_decision(r["score"], model["thresholds"]["02"]) for r in records)

    code, out, err = cli(capsys, *args, str(tree / "nope.wav"), str(tree / "plain.wav"))  # nothing scorable
    assert code == 2 and json.loads(out) == [] and err.count("error:") == 2, err

    code, out, err = cli(capsys, *args, "--machine-id", "08", str(tree))
    assert code == 2 and out == "" and err.strip().splitlines() == [
        "error: --machine-id: machine ID '08' is not one the model was trained on ['00', '02', '04', '06']"]


def test_a_bad_file_is_reported_by_name_and_the_others_are_scored(model, real_samples, tmp_path):
    clips = valve_clips(real_samples)[:2]
    corrupt = tmp_path / "normal_id_00_99999999.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    cut = tmp_path / "anomaly_id_02_99999999.wav"
    cut.write_bytes(clips[1].read_bytes()[:5000])  # an interrupted copy: the header says more
    missing = tmp_path / "nope.wav"
    cmd = [sys.executable, "-m", "mimimi.score", "--model", f"models:/{MODEL_NAME}@champion",
           "--tracking-uri", model["store"], "--format", "csv", str(clips[0]), str(corrupt), str(cut), str(clips[1]),
           str(missing)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 1, r.stderr
    got = pd.read_csv(io.StringIO(r.stdout))
    assert got.path.tolist() == [str(clips[0]), str(clips[1])]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and len(r.stderr.strip().splitlines()) == 4, r.stderr  # + the summary line
    assert errors[0].startswith(f"error: {missing}: no such file")
    assert errors[1].startswith(f"error: {corrupt}: cannot decode audio")
    assert errors[2].startswith(f"error: {cut}: truncated wav")
    default = load_checkpoint(model["checkpoint"]).scoring.default
    assert f"with models:/{MODEL_NAME}@champion (version 1), scorer {default} (chosen on validation" in r.stderr
    assert r.stderr.rstrip().endswith("3 error(s)")


@pytest.mark.parametrize("args, message", [
    (["--model", "models:/mimimi-nope@champion"], "error: model models:/mimimi-nope@champion not found in "),
    (["--machine-type", "pump"], "error: model models:/mimimi-pump@champion not found in "),
    (["--model", f"models:/{MODEL_NAME}@best"], f"error: model models:/{MODEL_NAME}@best"),
    (["--model", f"models:/{MODEL_NAME}/9"], f"error: model models:/{MODEL_NAME}/9"),
    (["--run-id", "0123456789abcdef0123456789abcdef"], "error: run 0123456789abcdef0123456789abcdef not found in "),
    (["--machine-type", "fan", "--model", f"models:/{MODEL_NAME}/1"], "is a model of 'valve', not of --machine-type"),
])
def test_unknown_model_or_run_is_a_one_line_error(args, message, model, real_samples, capsys):
    code, out, err = cli(capsys, *args, "--tracking-uri", model["store"], str(valve_clips(real_samples)[0]))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_machine_type_defaults_to_the_champion(model, real_samples, capsys):
    code, out, err = cli(capsys, "--machine-type", "valve", "--tracking-uri", model["store"], "--format", "json",
                         str(valve_clips(real_samples)[0]))
    assert code == 0 and len(json.loads(out)) == 1
    assert f"with models:/{MODEL_NAME}@champion (version 1)" in err
    with pytest.raises(SystemExit) as e:
        score.main([str(valve_clips(real_samples)[0])])  # no model named at all
    assert e.value.code == 2


def test_waveform_input_equals_path_input(tr, model, real_samples):
    pyfunc = tr.load_pyfunc(f"models:/{MODEL_NAME}/1")
    clips = valve_clips(real_samples)[::5]
    mimii = real_samples / "mimii" / "valve" / "id_00" / "normal" / "00000117.wav"
    paths = [str(c) for c in clips] + [str(mimii)]
    waves = [sf.read(p, dtype="float32")[0] for p in paths]
    waves[-1] = waves[-1][:, 0]  # the loader's channel 0 of the 8-channel MIMII file
    ids = [machine_id_from_path(p) for p in paths]
    by_path = pyfunc.predict(pd.DataFrame({"path": paths}))
    by_wave = pyfunc.predict(pd.DataFrame({"waveform": [w.tolist() for w in waves], "machine_id": ids}))
    np.testing.assert_array_equal(by_wave.score.to_numpy(), by_path.score.to_numpy())
    assert by_wave.decision.tolist() == by_path.decision.tolist()
    assert by_wave.machine_id.tolist() == ids and by_wave.pred_id.tolist() == by_path.pred_id.tolist()

    # mixed rows; a short waveform is extended by repetition (up to doubling it), as the loader extends a file
    mixed = pyfunc.predict(pd.DataFrame({"path": [paths[0], None], "waveform": [None, waves[1][:3000].tolist()],
                                         "machine_id": [None, ids[1]]}))
    assert mixed.score[0] == by_path.score[0] and math.isfinite(mixed.score[1])
    assert mixed.machine_id.tolist() == ids[:2]

    # a bad row is answered in its own row; the others are still scored
    rows = pyfunc.predict(pd.DataFrame({"path": [paths[0], None, "/nowhere/clip.wav", paths[1]],
                                        "waveform": [None, [0.1, 0.2, 0.3], None, None],
                                        "machine_id": [None, ids[1], None, None]}))
    assert rows.error[0] is None and rows.error[3] is None
    assert rows.score[0] == by_path.score[0] and rows.score[3] == by_path.score[1]
    assert rows.error[1].startswith("<waveform 1>: 3 samples") and "too short" in rows.error[1]
    assert rows.error[2] == "/nowhere/clip.wav: no such file"  # not "no machine ID": the file is missing
    assert np.isnan(rows.score[1]) and rows.decision[1] is None and rows.machine_id[1] == ids[1]
    assert rows.machine_id[2] is None and rows.pred_id[2] is None

    bad = {  # nothing in the request can be scored: an error (HTTP 400 from the scoring server)
        "needs a 'path' column .*got none of them; columns other than path, waveform and machine_id are ignored":
            pd.DataFrame(index=[0]),
        "row 0: give a path or a waveform, not both": pd.DataFrame({"path": [paths[0]], "waveform": [[0.1] * 9]}),
        "<waveform 0>: no machine ID": pd.DataFrame({"waveform": [waves[0].tolist()]}),
        "<waveform 0>: the waveform contains NaN": pd.DataFrame({"waveform": [[0.1, float("nan")]],
                                                                 "machine_id": ["00"]}),
        r"<waveform 0>: 3 samples .* too short: a clip needs at least 1984 samples": pd.DataFrame(
            {"waveform": [[0.1, 0.2, 0.3]], "machine_id": ["00"]}),
        r"row 0: no path and no waveform \(and 1 more row\(s\) that cannot be scored\)": pd.DataFrame(
            {"path": [None, "/nowhere/x.wav"]}),
        "/nowhere/normal_id_00_00000001.wav: no such file": pd.DataFrame(
            {"path": ["/nowhere/normal_id_00_00000001.wav"]}),
    }

    for message, frame in bad.items():
        with pytest.raises(ModelInputError, match=message) as e:
            pyfunc.predict(frame)
        assert isinstance(e.value, MlflowException) and isinstance(e.value, scoring_clips.ScoreError)
        assert e.value.get_http_status_code() == 400


@pytest.mark.parametrize("candidate, current, has, promote", [
    (0.7, None, False, True), (float("nan"), None, False, True),  # the first version becomes champion
    (0.71, 0.7, True, True), (0.7, 0.7, True, False), (0.69, 0.7, True, False),
    (float("nan"), 0.7, True, False), (None, 0.7, True, False),  # no figure never beats a recorded one
    (0.5, None, True, True), (0.5, float("nan"), True, True), (None, None, True, False),
])
def test_champion_rule(candidate, current, has, promote):
    d = champion.decide(candidate, current, has_champion=has)
    assert d.promote is promote and d.reason and "\n" not in d.reason


def test_champion_alias_moves_only_when_the_test_pauc_beats_the_champions(tr, model, tmp_path, monkeypatch):
    name, metric = "mimimi-valve-alias", "test/valve/mean_pauc"
    eid = tr.ensure_experiment("champion")
    assert tr.champion_version(name) is None
    updates, runs = [], []
    for pauc in (60.0, 55.0, 60.0, 70.0):  # in percent, as a search logs it
        run = tr.start_run(eid, f"search-{pauc}")
        tr.log_metrics(run, {metric: pauc})
        ref = tr.log_model(run, model["checkpoint"], registered_name=name)
        updates.append(tr.update_champion(name, ref.version, metric, run))
        runs.append(tr.get_run(run))
        tr.end_run(run)
    assert [u.promoted for u in updates] == [True, False, False, True]
    assert [u.version for u in updates] == [1, 1, 1, 4] and tr.champion_version(name) == 4
    assert [u.previous_version for u in updates] == [None, 1, 1, 1]
    assert [(u.candidate, u.previous) for u in updates] == [(60, None), (55, 60), (60, 60), (70, 60)]

    first, worse = runs[0], runs[1]
    assert first.params["champion.metric"] == metric and metric in first.params["champion.rule"]
    assert first.tags["mimimi.champion.promoted"] == "true" and first.tags["mimimi.champion.version"] == "1"
    assert (first.tags["mimimi.champion.candidate"], first.tags["mimimi.champion.previous"]) == ("60", "")
    assert worse.tags["mimimi.champion.promoted"] == "false" and worse.tags["mimimi.champion.version"] == "1"
    assert worse.tags["mimimi.champion.previous_version"] == "1"
    assert worse.tags["mimimi.champion.reason"] == f"{metric}: 55 does not beat the champion's 60"  # in words
    assert (worse.tags["mimimi.champion.candidate"], worse.tags["mimimi.champion.previous"]) == ("55", "60")
    assert not any(k.startswith("champion") for k in worse.metrics)  # the figure is the run's own metric

    # a transient failure reading the champion's run is an error, never "no figure" (which would promote)
    from mlflow import MlflowClient

    real_get_run = MlflowClient.get_run

    def flaky(self, run_id):  # the champion's run (version 4's) cannot be read just now
        if run_id == runs[3].run_id:
            raise MlflowException("server busy", error_code="TEMPORARILY_UNAVAILABLE")
        return real_get_run(self, run_id)

    with monkeypatch.context() as m, \
            pytest.raises(T.TrackingError, match="cannot read the champion's run .*server busy.*the champion stays"):
        m.setattr(MlflowClient, "get_run", flaky)
        tr.update_champion(name, 3, metric, runs[2].run_id)
    assert tr.champion_version(name) == 4

    again = tr.update_champion(name, 4, metric, runs[3].run_id)  # the champion itself: nothing moves
    assert not again.promoted and again.version == 4 and "already the champion" in again.reason
    assert score.load_model(tr, f"models:/{name}@champion").version == 4  # what mimimi.score uses by default
    with pytest.raises(T.TrackingError, match="registered model 'mimimi-valve-alias' version 9"):
        tr.set_champion(name, 9)


def test_the_scorer_is_chosen_without_retraining_with_its_own_thresholds(model, real_samples, capsys):
    clips = valve_clips(real_samples)[:6]
    args = ["--run-id", model["run_id"], "--tracking-uri", model["store"], "--format", "json", *map(str, clips)]
    fitted = load_checkpoint(model["checkpoint"]).scoring
    by = {}
    for name in ("knn-stats", "knn", "ce", "gmm"):
        code, out, err = cli(capsys, *args, "--scorer", name)
        assert code == 0, err
        by[name] = json.loads(out)
        assert all(r["threshold"] == fitted.thresholds[name][r["machine_id"]] for r in by[name])
    code, out, _ = cli(capsys, *args)  # the default: the back-end validation chose
    _, chosen, _ = cli(capsys, *args, "--scorer", fitted.default)
    assert code == 0 and json.loads(out) == json.loads(chosen)
    assert [r["score"] for r in by["knn"]] != [r["score"] for r in by["gmm"]] != [r["score"] for r in by["ce"]]
    code, out, err = cli(capsys, *args, "--scorer", "recon")
    assert code == 2 and out == "" and err.strip().splitlines() == [
        "error: scorer 'recon' is not one this model has: ce, knn, mahalanobis, gmm, knn-density, stats-knn, "
        "knn-stats, fusion"]


# ---------------------------------------------------------------------------------------------
# verified before loading (mimimi.verify): each test logs its own model in a store of this module's, and
# tampers with it there, so the session's mimimi-valve stays as logged

@pytest.fixture(scope="module")
def own_store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('verify-store') / 'mlflow.db'}"


class Fresh(NamedTuple):
    tr: T.Tracker
    run_id: str
    version: int
    name: str  # the registered model
    folder: Path  # the model folder in the artifact store: what every download copies


def fresh_model(store: str, checkpoint: Path, name: str) -> Fresh:
    """The session's checkpoint logged (and made champion) as version 1 of ``name`` in ``store``."""
    tr = T.Tracker(store)
    run = tr.start_run(tr.ensure_experiment("verify"), name)
    ref = tr.log_model(run, checkpoint, registered_name=name)
    tr.set_champion(name, ref.version)
    tr.end_run(run)
    location = tr.client.get_logged_model(ref.model_uri.removeprefix("models:/")).artifact_location
    return Fresh(tr, run, ref.version, name, Path(location.removeprefix("file://")))


def refused_by_cli(capsys, store: str, args: list[str], clip: Path, *message: str) -> str:
    capsys.readouterr()  # MLflow's lines from logging the model
    code, out, err = cli(capsys, *args, "--tracking-uri", store, str(clip))
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and all(m in lines[0] for m in message), err
    return lines[0]


def test_an_untampered_model_scores_exactly_as_its_checkpoint(own_store, model, real_samples, capsys):
    fresh = fresh_model(own_store, model["checkpoint"], "mimimi-intact")
    clips = valve_clips(real_samples)[::4]
    code, out, err = cli(capsys, "--model", "models:/mimimi-intact@champion", "--tracking-uri", own_store,
                         "--format", "json", *map(str, clips))
    assert code == 0, err
    want = scoring_clips.score_paths(scoring_clips.Model(load_checkpoint(model["checkpoint"]), None, "checkpoint", None), clips)
    assert [r["score"] for r in json.loads(out)] == want.scores.score.tolist()  # no MLflow on this side
    # what was recorded: every file's digest in the metadata, the checkpoint's on the run and the version
    meta = yaml.safe_load((fresh.folder / "MLmodel").read_text())["metadata"]["mimimi"]
    digest = verify.sha256_file(fresh.folder / "artifacts" / "checkpoint.pt")
    assert meta["format"] == 1 and meta["loader"] == "mimimi.pyfunc" and meta["checkpoint_sha256"] == digest
    assert sorted(meta["artifacts_sha256"]) == ["checkpoint", "config", "features", "ids", "thresholds"]
    assert meta["code_sha256"] == verify.sha256_file(fresh.folder / "mimimi_model.py")
    assert (fresh.folder / "mimimi_model.py").read_text() == MODEL_CODE
    assert fresh.tr.get_run(fresh.run_id).tags[T.DIGEST_TAG] == digest
    assert fresh.tr.client.get_model_version("mimimi-intact", "1").tags[T.DIGEST_TAG] == digest
    assert fresh.tr.load_checkpoint_from_run(fresh.run_id).is_file()  # evaluate --run-id checks it too


def test_a_tampered_checkpoint_is_refused_by_score_and_by_the_pyfunc_model(own_store, model, real_samples, capsys):
    fresh = fresh_model(own_store, model["checkpoint"], "mimimi-tampered")
    ckpt = fresh.folder / "artifacts" / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of the weights, in the artifact store
    ckpt.write_bytes(bytes(data))
    clip = valve_clips(real_samples)[0]
    refused_by_cli(capsys, own_store, ["--model", "models:/mimimi-tampered@champion"], clip,
                   "error: model models:/mimimi-tampered@champion: artifacts/checkpoint.pt: sha256",
                   "does not match", "recorded at log time")
    with pytest.raises(verify.ModelVerificationError, match="artifacts/checkpoint.pt: sha256 .* does not match") as e:
        fresh.tr.load_pyfunc("models:/mimimi-tampered/1")  # what mlflow models serve loads
    assert "\n" not in str(e.value)
    with pytest.raises(verify.ModelVerificationError, match="does not match"):
        fresh.tr.load_checkpoint_from_run(fresh.run_id)

    # checkpoint and metadata rewritten together: the folder is consistent, the run's tag is not
    mlmodel = yaml.safe_load((fresh.folder / "MLmodel").read_text())
    mlmodel["metadata"]["mimimi"]["checkpoint_sha256"] = verify.sha256_file(ckpt)
    mlmodel["metadata"]["mimimi"]["artifacts_sha256"]["checkpoint"] = verify.sha256_file(ckpt)
    (fresh.folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    refused_by_cli(capsys, own_store, ["--model", "models:/mimimi-tampered@champion"], clip,
                   f"does not match the registered version's {T.DIGEST_TAG}")
    fresh.tr.client.delete_model_version_tag("mimimi-tampered", "1", T.DIGEST_TAG)
    refused_by_cli(capsys, own_store, ["--model", "models:/mimimi-tampered@champion"], clip,
                   f"does not match the {T.DIGEST_TAG} tag", f"of the run that logged it ({fresh.run_id})")
    # the served model checks the folder only (no tracking store there): it loads. The limit the README states
    assert fresh.tr.load_pyfunc("models:/mimimi-tampered/1") is not None


class Foreign:
    """A plain pyfunc model (pickled by MLflow) whose every step leaves a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def load_context(self, context):
        Path(self.marker).write_text("load_context")

    def predict(self, context, model_input, params=None):
        Path(self.marker).write_text("predict")
        return model_input


FOREIGN_CODE = """import pathlib

import mlflow

MARKER = pathlib.Path({marker!r})
MARKER.write_text("imported")  # runs whenever MLflow loads this model


class Foreign(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        MARKER.write_text("load_context")

    def predict(self, context, model_input, params=None):
        MARKER.write_text("predict")
        return model_input


mlflow.models.set_model(Foreign())
"""


def log_foreign(fresh: Fresh, python_model, checkpoint: Path) -> int:
    """``python_model`` dressed as MIMIMI's (mimimi metadata, the real checkpoint as its artifact), registered as
    a new version of ``fresh.name`` and made its champion."""
    import mlflow

    run = fresh.tr.start_run(fresh.tr.ensure_experiment("foreign"), "foreign")
    with T._fluent_uri(fresh.tr.uri), mlflow.start_run(run_id=run):
        info = mlflow.pyfunc.log_model(name="model", python_model=python_model, pip_requirements=["mlflow"],
                                       artifacts={"checkpoint": str(checkpoint)},
                                       metadata={"mimimi": {"checkpoint_sha256": verify.sha256_file(checkpoint)}},
                                       registered_model_name=fresh.name)
    fresh.tr.set_champion(fresh.name, int(info.registered_model_version))
    return int(info.registered_model_version)


def test_a_foreign_model_made_champion_is_refused_without_running_its_code(own_store, model, real_samples, capsys,
                                                                          tmp_path):
    import mlflow

    fresh = fresh_model(own_store, model["checkpoint"], "mimimi-hijacked")
    marker, clip = tmp_path / "foreign-code-ran", valve_clips(real_samples)[0]
    foreign = type("Foreign", (Foreign, mlflow.pyfunc.PythonModel), {})  # a PythonModel, defined here
    assert log_foreign(fresh, foreign(marker), model["checkpoint"]) == 2
    marker.unlink(missing_ok=True)
    refused_by_cli(capsys, own_store, ["--model", "models:/mimimi-hijacked@champion"], clip,
                   "error: model models:/mimimi-hijacked@champion: not a MIMIMI model",
                   "python_function loader is 'mlflow.pyfunc.model'")
    assert not marker.exists()

    # the same as a model from code: MLflow's code loader, but the code file is not MIMIMI's
    code = tmp_path / "foreign_model.py"
    code.write_text(FOREIGN_CODE.format(marker=str(marker)))
    assert log_foreign(fresh, str(code), model["checkpoint"]) == 3
    marker.unlink()  # MLflow ran the code file once, while logging it
    refused_by_cli(capsys, own_store, ["--model", "models:/mimimi-hijacked@champion"], clip,
                   "error: model models:/mimimi-hijacked@champion: model code file foreign_model.py differs from "
                   "MIMIMI's")
    assert not marker.exists()
    assert fresh.tr.resolve_model("models:/mimimi-hijacked/1").version == 1  # MIMIMI's own version still resolves


def test_a_changed_model_code_file_is_refused(own_store, model, real_samples, capsys, tmp_path):
    fresh = fresh_model(own_store, model["checkpoint"], "mimimi-recoded")
    marker = tmp_path / "code-ran"
    code = fresh.folder / "mimimi_model.py"
    code.write_text(code.read_text() + f"open({str(marker)!r}, 'w').close()\n")
    refused_by_cli(capsys, own_store, ["--model", "models:/mimimi-recoded/1"], valve_clips(real_samples)[0],
                   "error: model models:/mimimi-recoded/1: model code file mimimi_model.py differs from MIMIMI's")
    assert not marker.exists()  # mimimi.score refuses before anything in the folder runs
    with pytest.raises(verify.ModelVerificationError, match="mimimi_model.py differs from MIMIMI's"):
        fresh.tr.load_pyfunc("models:/mimimi-recoded/1")
    assert marker.exists()  # MLflow runs the code file before load_context can refuse: the served path's limit


def test_a_model_logged_before_digests_still_loads(own_store, model, real_samples, capsys):
    fresh = fresh_model(own_store, model["checkpoint"], "mimimi-old")
    # as log_model wrote it before this change: checkpoint_sha256 only, no tags, and (older still) the code file
    # that imports MimimiModel from mimimi.tracking
    mlmodel = yaml.safe_load((fresh.folder / "MLmodel").read_text())
    for key in ("format", "loader", "artifacts_sha256", "code_sha256"):
        del mlmodel["metadata"]["mimimi"][key]
    (fresh.folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (fresh.folder / "mimimi_model.py").write_text(verify.OLD_MODEL_CODES[0])
    fresh.tr.client.delete_tag(fresh.run_id, T.DIGEST_TAG)
    fresh.tr.client.delete_model_version_tag("mimimi-old", "1", T.DIGEST_TAG)
    clips = valve_clips(real_samples)[::4]
    code, out, err = cli(capsys, "--model", "models:/mimimi-old@champion", "--tracking-uri", own_store, "--format", "json",
                         *map(str, clips))
    assert code == 0, err
    want = scoring_clips.score_paths(scoring_clips.Model(load_checkpoint(model["checkpoint"]), None, "checkpoint", None), clips)
    assert [r["score"] for r in json.loads(out)] == want.scores.score.tolist()
    served = fresh.tr.load_pyfunc("models:/mimimi-old/1").predict(pd.DataFrame({"path": [str(c) for c in clips]}))
    assert served.score.tolist() == want.scores.score.tolist()

    (fresh.folder / "artifacts" / "checkpoint.pt").write_bytes(model["checkpoint"].read_bytes() + b"\0")
    refused_by_cli(capsys, own_store, ["--model", "models:/mimimi-old@champion"], clips[0], "artifacts/checkpoint.pt: sha256",
                   "does not match")
