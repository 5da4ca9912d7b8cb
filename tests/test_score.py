"""mimimi.score: the CLI on real clips with a model logged in a throwaway sqlite store, the pyfunc model's
waveform input, and the champion alias. No Ray."""
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from mlflow.exceptions import MlflowException
from scoring_helpers import MODEL_NAME, NO_THRESHOLD_ID, valve_clips

from mimimi import champion, score
from mimimi import tracking as T
from mimimi.data.index import machine_id_from_path
from mimimi.pyfunc import ModelInputError



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
    assert err.strip() == f"scored 16 file(s) with models:/{MODEL_NAME}/1 (version 1), scorer knn-stats, 0 error(s)"
    got = pd.read_csv(io.StringIO(csv_text), dtype={"machine_id": str, "pred_id": str})
    assert list(got.columns) == score.COLUMNS and got.path.tolist() == [str(c) for c in clips]
    assert got.machine_id.tolist() == [c.name.split("_")[2] for c in clips]  # parsed from the file names

    # the pyfunc model (what mlflow models serve runs) gives the same scores, thresholds and decisions
    pyfunc = tr.load_pyfunc(f"models:/{MODEL_NAME}/1")
    want = pyfunc.predict(pd.DataFrame({"path": [str(c) for c in clips]}))
    assert list(want.columns) == score.MODEL_COLUMNS + ["error"] and want.error.isna().all()
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
    assert [r["path"] for r in records] == got.path.tolist() and list(records[0]) == score.COLUMNS
    assert [r["score"] for r in records] == got.score.tolist()  # full precision in both
    assert [r["decision"] for r in records] == decisions
    assert all(r["threshold"] is None for r in records if r["machine_id"] == NO_THRESHOLD_ID)

    code, table, _ = cli(capsys, *args)  # the default format
    lines = table.splitlines()
    assert code == 0 and lines[0].split() == score.COLUMNS and len(lines) == 17
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
    assert f"with models:/{MODEL_NAME}@champion (version 1), scorer knn-stats, 3 error(s)" in r.stderr


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
        assert isinstance(e.value, MlflowException) and isinstance(e.value, score.ScoreError)
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
    from mimimi.checkpoint import load_checkpoint

    clips = valve_clips(real_samples)[:6]
    args = ["--run-id", model["run_id"], "--tracking-uri", model["store"], "--format", "json", *map(str, clips)]
    fitted = load_checkpoint(model["checkpoint"]).scoring
    by = {}
    for name in ("knn-stats", "knn", "ce", "gmm"):
        code, out, err = cli(capsys, *args, "--scorer", name)
        assert code == 0, err
        by[name] = json.loads(out)
        assert all(r["threshold"] == fitted.thresholds[name][r["machine_id"]] for r in by[name])
    code, out, _ = cli(capsys, *args)  # the default is knn-stats
    assert json.loads(out) == by["knn-stats"]
    assert [r["score"] for r in by["knn"]] != [r["score"] for r in by["gmm"]] != [r["score"] for r in by["ce"]]
    code, out, err = cli(capsys, *args, "--scorer", "recon")
    assert code == 2 and out == "" and err.strip().splitlines() == [
        "error: scorer 'recon' is not one this model has: ce, knn, mahalanobis, gmm, knn-stats"]
