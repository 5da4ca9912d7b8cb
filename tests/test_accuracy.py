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
    assert "## Domains: DCASE 2022–2025 back-ends and heads" in md and "chosen on validation" in md
    data = json.loads(out.with_suffix(".json").read_text())
    keys = {r["key"] for r in data["main"]["rows"]}
    assert {"ce", "knn", "mahalanobis", "gmm", "knn-density", "stats-knn", "knn-stats", "fusion"} <= keys
    assert len(data["objective"]["trials"]) == 6 and {r["set"] for r in data["network"]["rows"]} == {"temporal", "default"}
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
