"""The objective study: does a leak-free validation number rank trials the way the test split does, and does
choosing the back-end on validation beat a fixed one? (``python -m bench.accuracy --only objective``.)

On each data set of ``SETS`` (the embedded default's generator, ``fails-like-real``, the first-shot 2023
layout with a shifted target domain, and one with 100 training clips per ID), ``trial_configs`` draws trials
that span bad to good settings (learning rates from 1e-5 to 1e-2, 1 to 8 epochs, each head, mixup on and
off, each sampler, and the training-free ``stats-knn`` model: "no network"). Each is trained as a search
trains it (best epoch and back-end by ``train.monitor``) and its delivered checkpoint evaluated on the test
split: the test figure is the mean per-ID AUC (the official score for the 2023 layout) under the back-end
validation chose, beside every back-end's. Per candidate validation number (its best value over the
trial's epochs, as the search sees a trial), Spearman's ρ with the test figure and a 95 % bootstrap interval
over trials.

Cost: one training and one evaluation per trial; linear in trials and clips. The default sizes take about
two hours on 2 cores.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from mimimi.config import load_config
from mimimi.data import synth
from mimimi.evaluation import evaluate
from mimimi.nn import HEADS
from mimimi.scoring.fitted import FUSED  # a trained kind's default scorer: the fixed rule compared
from mimimi.training import fit

FIRST_SHOT = dict(layout="dcase2022", machine_types=("fan", "valve"), ids=("00",), n_train=8, n_target_train=2,
                  n_test_normal=4, n_test_anomaly=4, domain_shift=0.5)  # configs/search/first_shot.yaml's set
SETS = {  # name -> (generate() keywords, the machine type trained, train overrides)
    "synthetic": (dict(machine_types=("valve",), ids=synth.DEFAULT_IDS, n_train=12, n_test_normal=8,
                       n_test_anomaly=8), "valve", {}),
    "fails-like-real": ({**{k: v for k, v in synth.FAILS_LIKE_REAL.items() if k != "seconds"},
                         "machine_types": ("fan",), "train_counts": {"00": 24, "02": 12, "04": 3, "06": 3},
                         "n_test_normal": 8, "n_test_anomaly": 8}, "fan", {}),
    "first-shot 2023": (FIRST_SHOT, "fan", {"classes": "all"}),
    "100 clips per ID": (dict(machine_types=("slider",), ids=("00", "02"), n_train=100, n_test_normal=12,
                              n_test_anomaly=12), "slider", {}),
}
FEATURES = {"n_fft": 256, "hop_length": 128, "segment_frames": 32, "eval_hop_frames": 32, "n_mels": 64}
BOOTSTRAP = 1000


def trial_configs(n: int, seed: int) -> list[dict]:
    """``n`` trial settings: fixed anchors at the extremes (the lowest and highest learning rate, one epoch,
    each head, no network), then random draws; deterministic for ``seed``."""
    anchors = [dict(model="stats-knn"), dict(lr=1e-5, epochs=1), dict(lr=1e-2, epochs=8),
               dict(lr=1e-3, epochs=4, head="arcface"), dict(lr=1e-3, epochs=4, head="gap"),
               dict(lr=3e-4, epochs=8, mixup=0.0, sampler="balanced"),
               *(dict(lr=1e-3, epochs=4, head=h) for h in HEADS if h not in ("gap", "arcface"))]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        drawn = dict(model="complex", lr=float(10 ** rng.uniform(-5.0, -2.0)), epochs=int(rng.choice([1, 2, 4, 8])),
                     head=str(rng.choice(HEADS)), mixup=float(rng.choice([0.0, 0.5])),
                     sampler=str(rng.choice(["uniform", "balanced"])))
        out.append({**drawn, **(anchors[i] if i < len(anchors) else {})})
    return out


def _config(root: Path, work: Path, mtype: str, trial: dict, seed: int, train: dict):
    train = train if trial["model"] != "stats-knn" else {}  # no classes to pool without a network
    return load_config(overrides={
        "data": {"root": str(root), "cache_dir": str(work / "cache")}, "features": FEATURES,
        "model": {"name": trial["model"], "net": {"head": trial.get("head", "gap")}},
        "augment": {"mixup_prob": trial.get("mixup", 0.5)},
        "train": {"machine_type": mtype, "epochs": trial.get("epochs", 1), "lr": trial.get("lr", 1e-4), "seed": seed,
                  "sampler": trial.get("sampler", "uniform"), "progress": False, **train}})


def _best(history: list[dict], key: str, lower: bool) -> float:
    """The trial's best value of ``key`` over its epochs, as the search sees a trial (NaN when never reported)."""
    values = [h[key] for h in history if isinstance(h.get(key), float) and math.isfinite(h[key])]
    return (min(values) if lower else max(values)) if values else math.nan


def run_set(name: str, work: Path, n_trials: int, seconds: float, seed: int = 0) -> pd.DataFrame:
    """Every trial of one set: its settings, every candidate validation number (best over epochs), each
    back-end's validation figures at the delivered epoch (``at_best/backend/<name>/<figure>``), the test figure
    under the chosen back-end and under each back-end."""
    spec, mtype, train = SETS[name]
    root = work / f"objective-{name.replace(' ', '-')}"
    synth.generate(root, seed=seed, seconds=seconds, workers=2, **spec)
    rows = []
    for i, trial in enumerate(trial_configs(n_trials, seed)):
        t = time.perf_counter()
        cfg = _config(root, work, mtype, trial, seed + i, train)
        result = fit(cfg, work / "objective-runs" / f"{name}-{i}")
        rep = evaluate(result.best_checkpoint, root, work / "objective-eval" / f"{name}-{i}", progress=False)
        summary = "official" if spec.get("layout") == "dcase2022" else "mean"  # the figure the set is judged by
        mean = rep.comparison[rep.comparison.machine_id == summary].set_index("key").auc
        keys = {k for h in result.history for k in h if isinstance(h[k], float) and not k.startswith(("epoch", "setup"))
                and not k.endswith("_seconds")}
        row = {"set": name, "trial": i, **trial, "best_epoch": result.best_epoch, "backend": result.best.get("backend"),
               **{k: _best(result.history, k, lower=k.endswith("loss")) for k in sorted(keys)},
               # each back-end's figures at the delivered epoch: what any rule of choosing the back-end would have
               # seen there (evaluated offline against test/<back-end>, without training again)
               **{f"{AT_BEST}{k}": v for k, v in sorted(result.best.items()) if k.startswith("backend/")},
               "test": (rep.official.score if rep.official is not None and spec.get("layout") == "dcase2022"
                        else float(rep.per_type.mean_auc.iloc[0])),
               **{f"test/{k}": float(v) for k, v in mean.items()}, "seconds": time.perf_counter() - t}
        rows.append(row)
        print(f"objective {name} trial {i} ({trial['model']}, lr {trial.get('lr', 0):.1e}, {trial.get('epochs', 1)} "
              f"ep): cv {row.get('cv_proxy_auc', math.nan):.3f}, test {row['test']:.3f}, back-end {row['backend']} "
              f"({row['seconds']:.0f} s)", file=sys.stderr)
    return pd.DataFrame(rows)


AT_BEST = "at_best/"  # a figure at the delivered epoch, not the best over epochs: never a ranking candidate
NETWORK_ONLY = ("ce", "knn", "mahalanobis", "gmm", "knn-density", "knn-domain", "mahalanobis-domain")


def with_network_test(trials: pd.DataFrame) -> pd.DataFrame:
    """``test_network``: each trial's best test figure among the back-ends that read the network alone — what
    the trial's network is worth, whichever back-end validation then chose (``test`` does not move between
    trials that chose ``stats-knn``)."""
    cols = [f"test/{b}" for b in NETWORK_ONLY if f"test/{b}" in trials]
    return trials.assign(test_network=trials[cols].max(axis=1)) if cols else trials


def candidates(trials: pd.DataFrame) -> list[str]:
    """The validation numbers a search could rank on (no test figure, no setting, no time)."""
    skip = {"set", "trial", "model", "lr", "epochs", "head", "mixup", "sampler", "best_epoch", "backend", "test",
            "test_network", "seconds"}
    return [c for c in trials.columns if c not in skip and not c.startswith(("test/", AT_BEST))
            and not c.endswith("_se") and trials[c].notna().sum() >= 5]


def rank_table(trials: pd.DataFrame, target: str = "test", seed: int = 0) -> pd.DataFrame:
    """Per (set, candidate): Spearman ρ of the candidate (losses negated) with the test figure ``target`` over
    the trials that have it, and its 95 % bootstrap interval (trials resampled)."""
    rng = np.random.default_rng(seed)
    trials = with_network_test(trials)
    rows = []
    for name, g in trials.groupby("set", sort=False):
        for c in candidates(trials):
            h = g[[c, target]].dropna()
            if len(h) < 5:
                continue
            x = (-1.0 if c.endswith("loss") else 1.0) * h[c].to_numpy()
            y = h[target].to_numpy()
            rho = spearmanr(x, y).statistic
            boot = []
            for _ in range(BOOTSTRAP):
                idx = rng.integers(0, len(h), len(h))
                if np.ptp(x[idx]) > 0 and np.ptp(y[idx]) > 0:
                    boot.append(spearmanr(x[idx], y[idx]).statistic)
            lo, hi = (np.percentile(boot, [2.5, 97.5]) if boot else (math.nan, math.nan))
            rows.append(dict(set=name, candidate=c, target=target, n=len(h), rho=float(rho), lo=float(lo),
                             hi=float(hi)))
    return pd.DataFrame(rows)


def paired_interval(diff: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """The mean of paired differences (NaN pairs dropped) and its 95 % bootstrap interval (pairs resampled).

    >>> tuple(round(v, 2) for v in paired_interval(np.array([0.1, 0.1, 0.1])))
    (0.1, 0.1, 0.1)
    """
    diff = diff[np.isfinite(diff)]
    if not len(diff):
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, len(diff), (BOOTSTRAP, len(diff)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi)


def backend_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per set: the mean test figure over the network trials under the back-end validation chose, under each
    fixed back-end, and under the best back-end of each trial picked with hindsight (on test); the fixed default
    scorer's gain over the choice, paired by trial (mean, 95 % interval; trials where it is better / worse)."""
    rows = []
    for name, g in trials[trials.model != "stats-knn"].groupby("set", sort=False):
        cols = [c for c in g.columns if c.startswith("test/")]
        chosen = [r[f"test/{r['backend']}"] for r in g.to_dict("records") if f"test/{r['backend']}" in r]
        row = {"set": name, "trials": len(g), "chosen on validation": float(np.mean(chosen))}
        row.update({c.split("/", 1)[1]: float(g[c].mean()) for c in cols})
        row["best per trial, with hindsight"] = float(g[cols].max(axis=1).mean())
        fixed = f"test/{FUSED}"
        if fixed in g and len(chosen) == len(g):
            diff = g[fixed].to_numpy(dtype=float) - np.asarray(chosen)
            mean, lo, hi = paired_interval(diff)
            row[f"{FUSED} − chosen"] = (f"{100 * mean:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]; "
                                                 f"{int((diff > 0).sum())} / {int((diff < 0).sum())}")
        row["chosen: share of trials"] = ", ".join(f"{k} {v}" for k, v in g.backend.value_counts().items())
        rows.append(row)
    return pd.DataFrame(rows)
