"""The training-loop adapter: ``mimimi.train.fit`` inside a Ray Train worker.

Every epoch each worker calls ``ray.train.report`` with the validation metrics, the id of the Ray
node it runs on (``node_id``: which machine trained the trial, on a multi-node cluster) and
``worker_start_s`` (from the trial function's start to this worker running: the TorchTrainer, its
controller and the worker process, as ``bench.ray_overhead`` breaks a trial's fixed cost down); rank 0
attaches the checkpoint when the epoch improved the validation loss, so the Train run's latest
checkpoint is always its best one.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch

from mimimi.config import Config, merge
from mimimi.train import Distributed, fit

CHECKPOINT_FILE = "checkpoint.pt"
FAULT_ENV = "MIMIMI_FAULT_INJECT"  # testing hook: "<marker file>" -> one worker fails once (tests prove retries)
FAULT_AT_ENV = "MIMIMI_FAULT_INJECT_AT"  # "start" (default): raise before training; "epoch": SIGKILL after epoch 0


def _maybe_inject_fault(at: str) -> None:
    """Fail once, at ``at``, if the fault-injection hook is armed for it: raise at the start, or kill this
    worker process outright (SIGKILL, as the OOM killer or a lost node would) after its first report."""
    marker = os.environ.get(FAULT_ENV)
    if not marker or os.environ.get(FAULT_AT_ENV, "start") != at or Path(marker).exists():
        return
    Path(marker).write_text(f"failed once, at {at}\n")
    if at == "epoch":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault ({FAULT_ENV}={marker})")


def train_worker(config: dict) -> None:
    """Ray Train ``train_loop_per_worker``: ``config["config"]`` is the trial's MIMIMI config tree."""
    worker_start_s = time.time() - config.get("trial_started", time.time())  # trial start -> this worker runs
    _maybe_inject_fault("start")
    cfg: Config = merge(Config(), config["config"])
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
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        _maybe_inject_fault("epoch")

    with tempfile.TemporaryDirectory(prefix="mimimi-train-") as out_dir:
        fit(cfg, out_dir, on_epoch=report, distributed=dist)
