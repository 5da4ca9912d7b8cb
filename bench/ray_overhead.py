"""(f) Ray's overhead in a tiny Ray Tune search: trial wall time vs time in the training loop.

Runs ``tuning/search.py --smoke-test`` (2 trials, a local Ray) in a subprocess with its own storage and
tracking store, then reads the Tune experiment: per trial, ``time_total_s`` (the trial function's
wall time: building the TorchTrainer, starting its worker group, training, reporting) against the sum
of the ``epoch_seconds`` its worker reported (training + validation epochs).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


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
        trials = []
        ea = ExperimentAnalysis(str(tmp / "storage" / "bench" / "valve"))
        for trial in ea.trials:
            df = ea.trial_dataframes.get(trial.trial_id)
            if df is None or df.empty:
                continue
            wall = float(df["time_total_s"].max())
            loop = float(df["epoch_seconds"].sum())
            trials.append({"trial": trial.trial_id, "wall_s": wall, "train_loop_s": loop})
    wall = sum(t["wall_s"] for t in trials)
    loop = sum(t["train_loop_s"] for t in trials)
    overhead_per_trial = (wall - loop) / len(trials)
    return {
        "trials": len(trials),
        "epochs_per_trial": epochs,
        "search_wall_s": round(search_s, 1),
        "trial_wall_s": round(wall / len(trials), 2),
        "train_loop_s": round(loop / len(trials), 2),
        "train_loop_share": round(loop / wall, 3),
        "ray_overhead_share": round(1 - loop / wall, 3),
        "ray_overhead_s_per_trial": round(overhead_per_trial, 2),
        # the fixed cost is paid once per trial: it falls under 10 % once training lasts 9x as long
        "trial_train_time_for_10pct_s": round(9 * overhead_per_trial, 1),
    }


if __name__ == "__main__":
    print(ray_overhead())
