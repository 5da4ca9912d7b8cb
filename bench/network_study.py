"""Does the network earn its place? (``python -m bench.accuracy --only network``.)

The default model (``complex``, default recipe, back-end chosen on validation) against the training-free
``stats-knn`` baseline on sets with at least 100 training clips per ID: the ``temporal`` preset, whose
anomalies change timing or phase while every clip's log-mel mean and standard deviation stay (what a
phase-aware network exists for and ``stats-knn`` cannot see), and the default generator at the same size.
Per (set, seed, machine type): the mean per-ID test AUC under the chosen back-end, under each back-end, and
``stats-knn``'s; the margin is chosen − ``stats-knn``.

Cost: one training per (set, seed, type) on 2 IDs x 100 clips of 4 s, 8 epochs: 7 to 10 minutes at one torch
thread (2026-12-07, 2 cores shared with another study): 111 minutes for 12 (fan, valve), about 4 h for all 24;
``--network-types`` narrows it.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from mimimi.config import load_config
from mimimi.data import synth
from mimimi.evaluation import evaluate
from mimimi.scoring.fitted import FUSED  # a trained kind's default scorer: the fixed rule compared
from mimimi.training import fit

SIZE = dict(ids=("00", "02"), n_train=100, n_test_normal=20, n_test_anomaly=20, seconds=4.0)
SETS = {"temporal": dict(SIZE, anomalies="temporal", snr_db=6.0), "default": dict(SIZE)}
FEATURES = {"n_fft": 512, "hop_length": 256, "segment_frames": 32, "eval_hop_frames": 32, "n_mels": 64}


QUICK = dict(n_train=8, n_test_normal=4, n_test_anomaly=4, seconds=2.0)  # a smoke test of the command only


def run(work: Path, seeds: list[int], epochs: int, types: tuple[str, ...] = synth.MACHINE_TYPES,
        quick: bool = False) -> pd.DataFrame:
    """One row per (set, seed, machine type, back-end): the test AUC / pAUC (mean per ID) and whether the
    back-end is the one validation chose."""
    rows = []
    for name, spec in SETS.items():
        spec = {**spec, **(QUICK if quick else {})}
        for seed in seeds:
            root = work / f"network-{name}-{seed}"
            synth.generate(root, types, seed=seed, workers=2, **spec)
            for mtype in types:
                t = time.perf_counter()
                cfg = load_config(overrides={
                    "data": {"root": str(root), "cache_dir": str(work / "cache")}, "features": FEATURES,
                    "train": {"machine_type": mtype, "epochs": epochs, "seed": seed, "progress": False}})
                result = fit(cfg, work / "network-runs" / f"{name}-{seed}-{mtype}")
                rep = evaluate(result.best_checkpoint, root, work / "network-eval" / f"{name}-{seed}-{mtype}",
                               progress=False)
                mean = rep.comparison[rep.comparison.machine_id == "mean"]
                rows += [dict(set=name, seed=seed, machine_type=mtype, backend=r.key, chosen=bool(r.default),
                              auc=r.auc, pauc=r.pauc, seconds=time.perf_counter() - t,  # and validation's figure:
                              cv=result.best.get(f"backend/{r.key}/cv_proxy_auc")) for r in mean.itertuples()]
                shown = {r.key: round(100 * r.auc, 1) for r in mean.itertuples()}
                print(f"network {name} seed {seed} {mtype}: {shown} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    return pd.DataFrame(rows)


def margins(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (set, machine type): mean ± std over seeds of the chosen back-end's AUC, of the best network
    back-end's (with hindsight), of ``stats-knn``'s, the margin chosen − ``stats-knn``, and ``fixed_gain``:
    what the fixed default scorer (``knn-stats``) delivers over the choice."""
    out = []
    for (name, mtype), g in rows.groupby(["set", "machine_type"], sort=False):
        per_seed = []
        for seed, h in g.groupby("seed"):
            base = h[h.backend == "stats-knn"].auc.iloc[0]
            chosen = h[h.chosen].auc.iloc[0]
            network = h[~h.backend.isin(["stats-knn"])].auc.max()
            fixed = h[h.backend == FUSED].auc
            fixed = float(fixed.iloc[0]) if len(fixed) else float("nan")
            per_seed.append(dict(chosen=chosen, best_network=network, stats_knn=base, margin=chosen - base,
                                 best_margin=network - base, fixed=fixed, fixed_gain=fixed - chosen,
                                 backend=h[h.chosen].backend.iloc[0]))
        s = pd.DataFrame(per_seed)
        out.append(dict(set=name, machine_type=mtype, seeds=len(s), **{f"{k}_mean": s[k].mean() for k in
                        ("chosen", "best_network", "stats_knn", "margin", "best_margin", "fixed", "fixed_gain")},
                        **{f"{k}_std": s[k].std(ddof=0) for k in ("chosen", "stats_knn", "margin", "fixed_gain")},
                        backends=", ".join(s.backend)))
    return pd.DataFrame(out)
