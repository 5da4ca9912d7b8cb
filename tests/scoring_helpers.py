"""Shared by test_score.py and test_serve.py: a tiny trained model, logged and registered with per-ID
Youden thresholds in a temporary sqlite store, as ``tuning/search.py`` logs a search's best model."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd
from conftest import small_config

from mimimi import metrics
from mimimi import tracking as T
from mimimi.checkpoint import load_checkpoint
from mimimi.score import score_frame

MODEL_NAME = "mimimi-valve"
PAUC = "test/valve/mean_pauc"
NO_THRESHOLD_ID = "06"  # stored without a threshold, as an ID whose test clips are all of one class


def valve_clips(real_samples: Path) -> list[Path]:
    """The 16 real DCASE valve test clips (IDs 00, 02, 04, 06; 2 normal + 2 anomalous each), 10 s, 1 channel."""
    clips = sorted((real_samples / "dcase2020" / "dev_data" / "valve" / "test").glob("*_id_*.wav"))
    assert len(clips) == 16, clips
    return clips


def tiny_checkpoint(tmp: Path) -> Path:
    """One epoch of the real architecture (small STFT) on a tiny seeded synthetic valve tree."""
    from mimimi.data.synth import generate
    from mimimi.train import fit

    root = tmp / "synth"
    generate(root, ["valve"], ["00", "02", "04", "06"], n_train=4, n_test_normal=1, n_test_anomaly=1,
             seconds=3.0, seed=0)
    return fit(small_config(root, tmp / "cache", epochs=1), tmp / "train").best_checkpoint


def youden_thresholds(checkpoint: Path, clips: list[Path]) -> dict[str, float | None]:
    """Per-ID Youden thresholds of the checkpoint on labelled clips (what the search's test evaluation
    gives), None for ``NO_THRESHOLD_ID``."""
    loaded = load_checkpoint(checkpoint)
    scored = score_frame(loaded, pd.DataFrame({"path": [str(c) for c in clips]}))
    table = pd.DataFrame({"machine_type": "valve", "path": [str(c) for c in clips],
                          "machine_id": [T.machine_id_from_path(c) for c in clips],
                          "label": [c.name.split("_")[0] for c in clips], "score": scored.score})
    thr = metrics.threshold_table(table)
    return {r.machine_id: (None if r.machine_id == NO_THRESHOLD_ID else float(r.threshold))
            for r in thr.itertuples()}


class Logged(NamedTuple):
    run_id: str
    ref: T.ModelRef


def log_search_model(checkpoint: Path, thresholds: dict | None, pauc: float, experiment: str = "score") -> Logged:
    """What ``search_type`` does after its evaluation: metrics, model with thresholds, registry, champion."""
    run = T.start_run(T.ensure_experiment(experiment), "search/valve", tags={"mimimi.role": "type-search"})
    T.log_metrics(run, {PAUC: pauc})
    ref = T.log_model(run, checkpoint, registered_name=MODEL_NAME, thresholds=thresholds)
    T.update_champion(MODEL_NAME, ref.version, PAUC, run)
    T.end_run(run)
    return Logged(run, ref)
