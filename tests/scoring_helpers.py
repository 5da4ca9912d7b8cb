"""Shared by test_score.py and test_serve.py: a tiny trained model, logged and registered with its normal-only
thresholds in a temporary sqlite store, as ``tuning/search.py`` logs a search's best model."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from helpers import small_config

from mimimi import tracking as T
from mimimi.checkpoint import load_checkpoint

MODEL_NAME = "mimimi-valve"
PAUC = "test/valve/mean_pauc"
NO_THRESHOLD_ID = "06"  # two training clips: too few to calibrate a threshold, so none is stored


def valve_clips(real_samples: Path) -> list[Path]:
    """The 16 real DCASE valve test clips (IDs 00, 02, 04, 06; 2 normal + 2 anomalous each), 10 s, 1 channel."""
    clips = sorted((real_samples / "dcase2020" / "dev_data" / "valve" / "test").glob("*_id_*.wav"))
    assert len(clips) == 16, clips
    return clips


def tiny_checkpoint(tmp: Path) -> Path:
    """One epoch of the real architecture (small STFT) on a tiny seeded synthetic valve tree."""
    from mimimi.data.synth import generate
    from mimimi.training import fit

    root = tmp / "synth"
    generate(root, ["valve"], ["00", "02", "04", "06"], n_train=4, n_test_normal=1, n_test_anomaly=1,
             seconds=3.0, seed=0, train_counts={NO_THRESHOLD_ID: 2})
    return fit(small_config(root, tmp / "cache", epochs=1), tmp / "train").best_checkpoint


def stored_thresholds(checkpoint: Path) -> dict[str, float | None]:
    """The default scorer's per-ID thresholds stored in the checkpoint (None for ``NO_THRESHOLD_ID``)."""
    fitted = load_checkpoint(checkpoint).scoring
    thresholds = fitted.thresholds[fitted.default]
    assert thresholds[NO_THRESHOLD_ID] is None and all(t is not None for m, t in thresholds.items() if m != NO_THRESHOLD_ID)
    return thresholds


class Logged(NamedTuple):
    run_id: str
    ref: T.ModelRef


def log_search_model(tr, checkpoint: Path, pauc: float, experiment: str = "score") -> Logged:
    """What ``search_type`` does after its evaluation: metrics, model (with its thresholds), registry, champion."""
    run = tr.start_run(tr.ensure_experiment(experiment), "search/valve", tags={"mimimi.role": "type-search"})
    tr.log_metrics(run, {PAUC: pauc})
    ref = tr.log_model(run, checkpoint, registered_name=MODEL_NAME)
    tr.update_champion(MODEL_NAME, ref.version, PAUC, run)
    tr.end_run(run)
    return Logged(run, ref)
