"""The training-loop adapter: ``mimimi.training.fit`` inside a Ray Train worker (``train_worker``, the one
function Ray Train calls).

Every epoch each worker calls ``ray.train.report`` with the validation metrics, the id of the Ray
node it runs on (``node_id``: which machine trained the trial, on a multi-node cluster) and
``worker_start_s`` (from the trial function's start to this worker running: the TorchTrainer, its
controller and the worker process, as ``bench.ray_overhead`` breaks a trial's fixed cost down); rank 0
attaches the checkpoint when the epoch improved the monitored metric (``train.monitor``), so the Train
run's latest checkpoint is always its best one.

The last epoch's report always carries the best checkpoint and, beside it, ``final.json``: that report's
metrics. A trial whose Train run already finished (its driver was killed after the trial ended, before Tune
recorded it, and the search was resumed) finds that checkpoint through ``ray.train.get_checkpoint`` and
reports it again, with ``restored: 1``, instead of training again.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch

from mimimi.config import Config
from mimimi.training import Distributed, fit

CHECKPOINT_FILE = "checkpoint.pt"
FINAL_FILE = "final.json"  # beside the checkpoint of a finished Train run: its last report's metrics
FAULT_ENV = "MIMIMI_FAULT_INJECT"  # testing hook: "<marker file>" -> one process fails once (tests prove recovery)
# where: "start" (default): a worker raises before training; "epoch": a worker is SIGKILLed after epoch 0;
# "driver-after-trial": the search driver is SIGKILLed right after its first trial finished;
# "driver-after-register": ... right after a type's best model was registered, before the type is marked done
FAULT_AT_ENV = "MIMIMI_FAULT_INJECT_AT"


def maybe_inject_fault(at: str) -> None:
    """Fail once, at ``at``, if the fault-injection hook is armed for it: raise (``start``), or kill this
    process outright (SIGKILL, as the OOM killer or a lost node would)."""
    marker = os.environ.get(FAULT_ENV)
    if not marker or os.environ.get(FAULT_AT_ENV, "start") != at or Path(marker).exists():
        return
    Path(marker).write_text(f"failed once, at {at}\n")
    if at != "start":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault ({FAULT_ENV}={marker})")


def train_worker(config: dict) -> None:
    """Ray Train ``train_loop_per_worker``, the one function Ray Train calls (``tuning.trials`` hands it to
    every ``TorchTrainer``): ``config["config"]`` is the trial's ``Config``, used as it is; ``trial_started``
    when its trial function started."""
    worker_start_s = time.time() - config.get("trial_started", time.time())  # trial start -> this worker runs
    maybe_inject_fault("start")
    cfg: Config = config["config"]
    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    rank = ctx.get_world_rank()
    dist = Distributed(
        prepare_model=ray.train.torch.prepare_model if world > 1 else (lambda m: m),
        prepare_loader=ray.train.torch.prepare_data_loader if world > 1 else (lambda dl: dl),
        is_main=rank == 0,
    )

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict, best: Path | None) -> None:
        metrics = {**metrics, "node_id": node_id, "worker_start_s": worker_start_s}
        if best is None:
            ray.train.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as d:
                shutil.copy(best, Path(d) / CHECKPOINT_FILE)
                if metrics.get("final"):
                    (Path(d) / FINAL_FILE).write_text(json.dumps(metrics))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        maybe_inject_fault("epoch")

    if (finished := _finished_run(ray.train.get_checkpoint())) is not None:
        metrics, ckpt_dir = finished
        try:
            report({**metrics, "restored": 1}, ckpt_dir / CHECKPOINT_FILE if rank == 0 else None)
        finally:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        return

    with tempfile.TemporaryDirectory(prefix="mimimi-train-") as out_dir:
        fit(cfg, out_dir, on_epoch=report, distributed=dist)


def _finished_run(checkpoint: ray.train.Checkpoint | None) -> tuple[dict, Path] | None:
    """(the final report's metrics, a local copy of its checkpoint folder) when ``checkpoint`` is the last
    report of a Train run that finished; None otherwise (no checkpoint, or one from the middle of a run)."""
    if checkpoint is None:
        return None
    local = Path(tempfile.mkdtemp(prefix="mimimi-restored-"))
    checkpoint.to_directory(str(local))
    if not (local / FINAL_FILE).is_file():
        shutil.rmtree(local, ignore_errors=True)
        return None
    return json.loads((local / FINAL_FILE).read_text()), local
