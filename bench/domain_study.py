"""The domain study: DCASE 2022–2025 as the field plays it (``python -m bench.accuracy --only domains``).

The synthetic 2023 layout (one section per machine type, many source-domain and a few target-domain training
clips, the target's operating speed shifted by ``domain_shift``) at two shift strengths, trained as
``--first-shot`` trains (``train.classes: all``) with each head of ``HEADS``. Per (shift, seed, head, machine
type, back-end): the year's official score (the harmonic mean of AUC (source), AUC (target) and pAUC) and
each domain's AUC on the test split, beside the training-free ``stats-knn`` and the back-end validation chose.

Cost: one training per (shift, seed, head) on every type's clips; linear in seeds, heads and clips.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mimimi.config import load_config
from mimimi.data import synth
from mimimi.evaluation import evaluate
from mimimi import nn
from mimimi.training import fit

SET = dict(layout="dcase2022", machine_types=("fan", "valve"), ids=("00",), n_train=30, n_target_train=5,
           n_test_normal=12, n_test_anomaly=12)
SHIFTS = (0.25, 1.0)
HEADS = nn.HEADS  # every head the network has
FEATURES = {"n_fft": 256, "hop_length": 128, "segment_frames": 32, "eval_hop_frames": 32, "n_mels": 64}


def run(work: Path, seeds: list[int], epochs: int, seconds: float, heads: tuple[str, ...] = HEADS,
        shifts: tuple[float, ...] = SHIFTS) -> pd.DataFrame:
    """One row per (shift, seed, head, machine type, back-end): official score, AUC per domain, chosen?"""
    rows = []
    for shift in shifts:
        for seed in seeds:
            root = work / f"domains-{shift}-{seed}"
            synth.generate(root, seed=seed, seconds=seconds, domain_shift=shift, workers=2, **SET)
            for head in heads:
                for mtype in SET["machine_types"]:
                    t = time.perf_counter()
                    cfg = load_config(overrides={
                        "data": {"root": str(root), "cache_dir": str(work / "cache")}, "features": FEATURES,
                        "model": {"net": {"head": head}},
                        "train": {"machine_type": mtype, "epochs": epochs, "seed": seed, "classes": "all",
                                  "progress": False}})
                    tag = f"{shift}-{seed}-{head}-{mtype}"
                    result = fit(cfg, work / "domain-runs" / tag)
                    rep = evaluate(result.best_checkpoint, root, work / "domain-eval" / tag, progress=False)
                    c = rep.comparison.pivot_table(index=["key", "default"], columns="machine_id", values="auc")
                    for (key, chosen), r in c.iterrows():
                        rows.append(dict(shift=shift, seed=seed, head=head, machine_type=mtype, backend=key,
                                         chosen=bool(chosen), official=r.get("official", np.nan),
                                         source=r.get("source", np.nan), target=r.get("target", np.nan),
                                         seconds=time.perf_counter() - t))
                    print(f"domains shift {shift} seed {seed} {head} {mtype}: official "
                          f"{100 * c.xs(True, level='default')['official'].iloc[0]:.1f} with the chosen back-end "
                          f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    return pd.DataFrame(rows)


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (shift, head, back-end): mean ± std over seeds of the mean over types of the official score and of
    each domain's AUC; the back-end validation chose is its own row, ``chosen``."""
    chosen = rows[rows.chosen].assign(backend="chosen on validation")
    both = pd.concat([rows, chosen], ignore_index=True)
    per_seed = both.groupby(["shift", "head", "backend", "seed"])[["official", "source", "target"]].mean()
    agg = per_seed.groupby(level=["shift", "head", "backend"]).agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    return agg.reset_index()
