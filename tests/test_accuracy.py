"""``python -m bench.accuracy --quick``: the accuracy report runs end to end and writes every section.
Structure only: the figures of a toy run mean nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_quick_accuracy_report_has_every_section(tmp_path):
    out = tmp_path / "ACCURACY.md"
    proc = subprocess.run([sys.executable, "-m", "bench.accuracy", "--quick", "--threads", "1", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=1400)  # below pytest's: a hang fails here
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = out.read_text()
    assert md.startswith("# MIMIMI accuracy report") and "not real-data accuracy" in md
    assert "### Fails like real" in md and "complex / ce" in md and "stats-knn (no network" in md
    assert "## Does the leak-free objective rank trials like test AUC?" in md and "`cv_proxy_auc`" in md
    assert "best back-end of each trial picked with hindsight" in md
    assert "## Does the network earn its place?" in md and "margin (chosen − stats-knn)" in md
    assert "knn-stats − chosen (points, 95 % interval; trials better / worse)" in md and "| knn-stats (fixed) |" in md
    assert "## Domains: DCASE 2022–2025 back-ends and heads" in md and "chosen on validation" in md
    data = json.loads(out.with_suffix(".json").read_text())
    keys = {r["key"] for r in data["main"]["rows"]}
    assert {"ce", "knn", "mahalanobis", "gmm", "knn-density", "stats-knn", "knn-stats", "fusion"} <= keys
    assert len(data["objective"]["trials"]) == 6 and {r["set"] for r in data["network"]["rows"]} == {"temporal", "default"}
    # the figures a rule of choosing the back-end would see at the delivered epoch, per trial and per network run
    assert all(any(k.startswith("at_best/backend/") for k in t) for t in data["objective"]["trials"])
    assert all("cv" in r for r in data["network"]["rows"])
    assert "## The training recipe, one option at a time" in md and "| classes all |" in md
    assert {r["recipe"] for r in data["recipes"]["rows"]} == {"default", "head arcface", "sampler balanced", "classes all"}
    assert "## bf16 against fp32" in md and "(default)" in md
    assert {r["precision"] for r in data["precision"]["rows"]} == {"fp32", "bf16", "bf16 scoring"}
    assert "| scoring only (fp32 weights) |" in md
    assert "## Section × attribute classes (`train.attributes`)" in md and "| section × attribute |" in md
    assert {(r["attributes"], r["machine_type"]) for r in data["attributes"]["rows"]} == {
        (a, t) for a in (False, True) for t in ("fan", "valve")}


def test_bad_arguments_are_one_line_errors():
    proc = subprocess.run([sys.executable, "-m", "bench.accuracy", "--sets", "nope"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown set(s) ['nope']" in proc.stderr


def test_the_fixed_default_scorer_is_compared_with_the_choice_on_the_same_checkpoints():
    """ACCURACY.md's back-end tables: what the fixed knn-stats delivers over validation's choice, paired by
    trial (objective study) and by run (network study)."""
    import pandas as pd

    from bench import network_study, objective_study

    trials = pd.DataFrame({"set": ["s"] * 4, "model": ["complex"] * 4, "backend": ["stats-knn", "knn-stats"] * 2,
                           "test/stats-knn": [0.6, 0.6, 0.7, 0.7], "test/knn-stats": [0.8, 0.9, 0.8, 0.6]})
    (row,) = objective_study.backend_table(trials).to_dict("records")
    assert row["chosen on validation"] == pytest.approx((0.6 + 0.9 + 0.7 + 0.6) / 4)
    assert row["knn-stats − chosen"].startswith("+7.5 [") and row["knn-stats − chosen"].endswith("]; 2 / 0")
    runs = pd.DataFrame([dict(set="t", machine_type="fan", seed=seed, backend=b, chosen=b == pick, auc=auc)
                         for seed, pick in ((0, "stats-knn"), (1, "knn-stats"))
                         for b, auc in (("stats-knn", 0.5), ("knn-stats", 0.7 + 0.1 * seed))])
    (m,) = network_study.margins(runs).to_dict("records")
    assert m["fixed_gain_mean"] == pytest.approx(0.1) and m["fixed_mean"] == pytest.approx(0.75)
