"""The Ray per-trial fixed cost, and what it is made of, in a tiny Ray Tune search.

Runs ``tuning/search.py --smoke-test`` (2 trials, a local Ray) in a subprocess with its own storage and
tracking store, then reads the Tune experiment. Per trial, from what the trial reported:

- ``worker_start_s``: the trial function's start until its Train worker runs (the TorchTrainer, its
  controller actor, the worker group's process: a fresh Python that imports torch and mimimi);
- ``setup_s``: ``mimimi.training.fit`` before its first epoch (index the data, check the feature cache,
  build the validation proxies, build the model) (``setup_seconds``);
- ``epochs_s``: the training and validation epochs (sum of ``epoch_seconds``);
- ``other_s``: the rest of Tune's ``time_total_s`` (reports crossing Train -> Tune, checkpoint
  persistence to the storage path).

and, for the whole search, the wall time outside the span in which trials ran (process start, Ray start,
synthetic data, MLflow set-up, and after the trials the evaluation, registration and promotion).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PARTS = ("worker_start_s", "setup_s", "epochs_s", "other_s")


def trial_breakdown(df) -> dict[str, float]:
    """One trial's Tune result rows -> its wall time split into ``PARTS`` (seconds)."""
    wall = float(df["time_total_s"].max())
    parts = {
        "worker_start_s": float(df["worker_start_s"].iloc[0]) if "worker_start_s" in df else float("nan"),
        "setup_s": float(df["setup_seconds"].iloc[0]) if "setup_seconds" in df else float("nan"),
        "epochs_s": float(df["epoch_seconds"].sum()),
    }
    parts["other_s"] = wall - sum(v for v in parts.values() if v == v)
    end = float(df["timestamp"].max())
    return {"wall_s": wall, **parts, "start_unix": end - wall, "end_unix": end}


def ray_overhead(num_cpus: int = 2, epochs: int = 2) -> dict[str, Any]:
    from ray.tune import ExperimentAnalysis

    with tempfile.TemporaryDirectory(prefix="mimimi-bench-ray-") as tmp:
        tmp = Path(tmp)
        cfg = tmp / "epochs.yaml"
        cfg.write_text(f"config:\n  train: {{epochs: {epochs}}}\n")
        cmd = [sys.executable, str(REPO / "tuning" / "search.py"), "--smoke-test", "--name", "bench",
               "--storage-path", str(tmp / "storage"), "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}",
               "--num-cpus", str(num_cpus), "--search-config", str(cfg)]
        start = time.perf_counter()
        r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        search_s = time.perf_counter() - start
        if r.returncode != 0:
            raise RuntimeError(f"the benchmark search failed:\n{r.stderr[-2000:]}")
        ea = ExperimentAnalysis(str(tmp / "storage" / "bench" / "valve"))
        trials = [trial_breakdown(df) for df in ea.trial_dataframes.values() if df is not None and not df.empty]
    if not trials:
        raise RuntimeError("the benchmark search reported no trial results")
    n = len(trials)
    mean = {k: sum(t[k] for t in trials) / n for k in ("wall_s", *PARTS)}
    span = max(t["end_unix"] for t in trials) - min(t["start_unix"] for t in trials)
    fixed = mean["wall_s"] - mean["epochs_s"]  # paid by every trial whatever it trains
    return {
        "trials": n,
        "epochs_per_trial": epochs,
        "search_wall_s": search_s,
        "outside_trials_s": search_s - span,
        "trial_wall_s": mean["wall_s"],
        "per_trial": {k: mean[k] for k in PARTS},
        "train_loop_s": mean["epochs_s"],
        "train_loop_share": mean["epochs_s"] / mean["wall_s"],
        "fixed_s_per_trial": fixed,
        # the fixed cost is paid once per trial: it falls under 10 % once training lasts 9x as long
        "trial_train_time_for_10pct_s": 9 * fixed,
        "trials_detail": [{k: t[k] for k in ("wall_s", *PARTS)} for t in trials],
    }


if __name__ == "__main__":
    print(ray_overhead())
