"""IDs with one and two training clips (ordinary on real data: a new machine, a DCASE 2022+ target domain)
go through mimimi train -> mimimi evaluate -> mimimi score --checkpoint: every back-end is fitted or falls back
in a stated way, no traceback, and the other IDs keep their model."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mimimi.checkpoint import load_checkpoint
from mimimi.data.synth import generate

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--config", str(REPO / "tests" / "small.yaml")]


@pytest.fixture(scope="module")
def few(tmp_path_factory) -> Path:
    """valve IDs with 6, 2 and 1 training clips (3 + 3 test clips each), 3 s."""
    root = tmp_path_factory.mktemp("few")
    generate(root, ["valve"], ["00", "02", "04"], n_test_normal=3, n_test_anomaly=3, seconds=3.0, seed=0,
             train_counts={"00": 6, "02": 2, "04": 1})
    return root


def run(*args: str, timeout: int = 500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.timeout(600)
def test_train_evaluate_and_score_ids_with_one_and_two_clips(few, tmp_path):
    out = tmp_path / "run"
    proc = run("mimimi.train", "--data-root", str(few), "--machine-type", "valve", "--epochs", "2", "--out", str(out),
               *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # the checkpoint says where a back-end fell back, and the command said it too
    fitted = load_checkpoint(out / "best.pt").scoring
    assert fitted.fallbacks["gmm"] == {"04": "knn: 1 training clip(s); gmm needs 2"}
    assert "note: gmm for ID 04: knn: 1 training clip(s); gmm needs 2" in proc.stdout
    assert fitted.thresholds["knn"]["04"] is None  # too few clips to calibrate: no decision, stated
    assert "Fallbacks" in (out / "eval" / "scorers.md").read_text()
    # every ID has a test figure, the one-clip ID included
    per_id = json.loads((out / "eval" / "metrics.json").read_text())["per_id"]
    assert {r["machine_id"] for r in per_id} == {"00", "02", "04"}
    # what train wrote scores new files, verified against the digest beside it
    proc = run("mimimi.score", "--checkpoint", str(out / "best.pt"), str(few / "valve" / "test"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 18 and {r["machine_id"] for r in rows} == {"00", "02", "04"}
    assert all(r["decision"] is None for r in rows if r["machine_id"] == "04")
    assert f"with {out / 'best.pt'}, scorer {fitted.default}" in proc.stderr
    # a checkpoint changed after training is refused before it is loaded
    (out / "best.pt").write_bytes((out / "best.pt").read_bytes() + b"\0")
    proc = run("mimimi.score", "--checkpoint", str(out / "best.pt"), str(few / "valve" / "test"))
    assert proc.returncode == 2 and "changed since training wrote it" in proc.stderr


def test_scoring_a_checkpoint_opens_no_tracking_store(few, tmp_path, monkeypatch):
    """--checkpoint never imports MLflow; a model URI on a store that does not exist is an error, not a new store."""
    from mimimi import score

    store = tmp_path / "nowhere" / "mlflow.db"
    code = score.main(["--model", "models:/mimimi-valve@champion", "--tracking-uri", f"sqlite:///{store}",
                       str(few / "valve" / "test")])
    assert code == 2 and not store.parent.exists()
