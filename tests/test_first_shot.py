"""The DCASE 2021–2025 paths end to end (slow): a synthetic set in the 2023 layout (one section per machine
type, source and target domains, attributes) through a first-shot search (one configuration for every type)
and the train mode (--fixed), the official 2022–2025 score recomputed from the submission files it wrote;
a synthetic 2021 set (three sections, per-domain test folders) through a per-type search."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
SEARCH = REPO / "tuning" / "search.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    from mimimi.data.synth import generate

    tmp = tmp_path_factory.mktemp("first-shot")
    root = tmp / "dcase2023"
    generate(root, ["fan", "valve"], ["00"], n_train=8, n_target_train=2, n_test_normal=3, n_test_anomaly=3,
             seconds=3.0, seed=0, layout="dcase2022", domain_shift=0.5)
    return root


def search(tmp: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    """As a user runs it on a downloaded 2023 set (configs/search/first_shot.yaml: (type, section) classes)."""
    cmd = [sys.executable, str(SEARCH), "--first-shot", "--smoke-test", "--data-root", str(root),
           "--storage-path", str(tmp / "storage"), "--tracking-uri", f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
           "--num-cpus", "2", *extra]
    r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=800)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def official_2022(rows: list[tuple[str, float]], truth: dict[str, tuple[int, str]]) -> tuple[float, float, float]:
    """AUC (source), AUC (target), pAUC of one section as the 2022–2025 evaluator computes them."""
    y = np.array([truth[n][0] for n, _ in rows])
    d = np.array([truth[n][1] for n, _ in rows])
    s = np.array([v for _, v in rows])
    out = [roc_auc_score(y[(d == dom) | (y == 1)], s[(d == dom) | (y == 1)]) for dom in ("source", "target")]
    return out[0], out[1], roc_auc_score(y, s, max_fpr=0.1)


def test_first_shot_search_registers_every_type_with_one_configuration(tree, tmp_path):
    from mlflow import MlflowClient

    r = search(tmp_path, tree, "--name", "fs")
    assert "first-shot: one configuration for fan, valve" in r.stdout
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("first-shot: chose trial")]
    assert "(noise ±" in line, line  # the mean's noise, from each type's, as a per-type pick states it
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = c.get_experiment_by_name("mimimi")
    runs = c.search_runs([exp.experiment_id])
    (parent,) = [x for x in runs if x.data.tags.get("mimimi.role") == "first-shot-search"]
    types = [x for x in runs if x.data.tags.get("mimimi.role") == "type-search"]
    trials = [x for x in runs if x.data.tags.get("mimimi.role") == "trial"]
    assert sorted(x.data.tags["mimimi.machine_type"] for x in types) == ["fan", "valve"]
    assert all(x.data.tags["mimimi.mode"] == "first-shot" and x.data.tags["mlflow.parentRunId"] == parent.info.run_id
               for x in types)
    assert len(trials) == 2 and all(x.data.tags["mlflow.parentRunId"] == parent.info.run_id for x in trials)
    for t in trials:  # the objective: the mean over types of each type's validation figure
        m = t.data.metrics
        key = "cv_proxy_auc_network"
        assert m[f"search/{key}"] == pytest.approx((m[f"fan/{key}"] + m[f"valve/{key}"]) / 2, abs=0.01)
    assert len({x.data.params["backend"] for x in types}) == 1  # first-shot: one back-end for every type
    # the same chosen values for every type, the year's official score beside the per-section figures
    assert len({tuple(sorted((k, v) for k, v in x.data.params.items() if k.startswith("best."))) for x in types}) == 1
    for x in types:
        assert 0 <= x.data.metrics["test/official/dcase2022"] <= 100
        assert "first-shot" in x.data.tags["mlflow.note.content"]
        (version,) = c.search_model_versions(f"name='mimimi-{x.data.tags['mimimi.machine_type']}'")
        assert version.tags["mimimi.mode"] == "first-shot"


def test_train_mode_and_the_official_score_from_the_submission_files(tree, tmp_path):
    """--first-shot --fixed: one trial of the configuration as given on every type; then the evaluation
    report's submission files (named as the challenge names them) give back the official score."""
    from mlflow import MlflowClient

    from mimimi.tracking import Tracker

    root = tree
    r = search(tmp_path, root, "--name", "fs-train", "--fixed")
    assert "Official dcase2022 score over fan, valve:" in r.stdout  # every type's sections pooled
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = c.get_experiment_by_name("mimimi")
    trials = c.search_runs([exp.experiment_id], "tags.`mimimi.role` = 'trial'")
    assert len(trials) == 1
    types = c.search_runs([exp.experiment_id], "tags.`mimimi.role` = 'type-search'")
    fan = next(x for x in types if x.data.tags["mimimi.machine_type"] == "fan")
    report = Path(Tracker(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}").client.download_artifacts(
        fan.info.run_id, "evaluation", str(tmp_path / "dl")))
    score_file = report / "anomaly_score_fan_section_00_test.csv"
    rows = [(n, float(v)) for n, v in csv.reader(score_file.open())]
    truth = {}
    for p in (root / "fan" / "test").glob("*.wav"):  # section_00_<domain>_test_<label>_NNNN_<attr>.wav
        parts = p.name.split("_")
        truth[p.name] = (int(parts[4] == "anomaly"), parts[2])
    assert sorted(n for n, _ in rows) == sorted(truth) and (report / "decision_result_fan_section_00_test.csv").is_file()
    figures = official_2022(rows, truth)  # recomputed from the submission file alone, as the evaluator does
    official = scipy.stats.hmean(np.maximum(figures, sys.float_info.epsilon))
    assert fan.data.metrics["test/official/dcase2022"] == pytest.approx(100 * official, abs=0.006)


def test_a_2021_layout_runs_through_a_per_type_search(tmp_path):
    """Sections are the classes (three per type); the 2021 protocol scores each domain's own test clips and
    its submission files are split by domain."""
    from mlflow import MlflowClient

    from mimimi.data.synth import generate

    root = tmp_path / "dcase2021"
    generate(root, ["valve"], ["00", "01", "02"], n_train=6, n_target_train=2, n_test_normal=3, n_test_anomaly=3,
             seconds=3.0, seed=0, layout="dcase2021")
    cmd = [sys.executable, str(SEARCH), "--smoke-test", "--data-root", str(root), "--name", "y2021",
           "--storage-path", str(tmp_path / "storage"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
           "--num-cpus", "2"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=800)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    assert "Official dcase2021 score over valve:" in r.stdout
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (parent,) = c.search_runs([c.get_experiment_by_name("mimimi").experiment_id], "tags.`mimimi.role` = 'type-search'")
    assert 0 <= parent.data.metrics["test/official/dcase2021"] <= 100
    assert {f"test/scorers/stats-knn/{sec}/auc" for sec in ("00", "01", "02")} <= set(parent.data.metrics)  # per section
    files = {a.path.rsplit("/", 1)[-1] for a in c.list_artifacts(parent.info.run_id, "evaluation")}
    assert {f"anomaly_score_valve_section_{sec}_{d}_test.csv" for sec in ("00", "01", "02")
            for d in ("source", "target")} <= files
