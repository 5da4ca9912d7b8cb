"""The trial functions that run inside Ray: each Tune trial builds a ``TorchTrainer`` (Ray 2.60's Train V2
pattern) and trains the sampled config in Ray Train workers (``tuning.worker.train_worker``).

The config crosses the Ray boundary once, as one dict: Tune's sampled values (``params``). The trials' base
``Config`` reaches the trial function as it is (``tune.with_parameters`` pickles it), is merged with the
sampled values once (``apply_params``) and goes on to the Train workers as that ``Config`` object.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
from ray import tune
from ray.train import CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from mimimi.config import Config
from tuning.space import Resources, apply_params
from tuning.worker import train_worker


def _scaling(res: Resources, use_gpu: bool) -> ScalingConfig:
    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if use_gpu else {})}
    return ScalingConfig(num_workers=res.workers, use_gpu=use_gpu, resources_per_worker=per_worker)


def run_trial(params: dict, *, base: Config, resources: Resources, use_gpu: bool, storage_path: str) -> None:
    """Tune trial: train the sampled config in Ray Train workers; metrics flow back to Tune every epoch."""
    started = time.time()  # the worker reports how long its group took to start (bench.ray_overhead)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": apply_params(base, params), "trial_started": started},
        scaling_config=_scaling(resources, use_gpu),
        run_config=RunConfig(
            name=f"train-{tune.get_context().get_trial_name()}",
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # only improvements are reported: latest = best
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def run_first_shot_trial(params: dict, *, bases: dict[str, Config], resources: Resources, use_gpu: bool,
                         storage_path: str, metric: str, mode: str, tie_break: str) -> None:
    """Tune trial of a first-shot search: the sampled config trained on every machine type in turn, each in
    Ray Train workers; one report at the end: ``first_shot_figures`` (``metric`` = the mean over types of each
    type's best validation figure, its noise, the tie-break figure) and every type's best checkpoint
    (``<type>/checkpoint.pt``)."""
    trial = tune.get_context().get_trial_name()
    finals, epochs = {}, 0
    with tempfile.TemporaryDirectory(prefix="mimimi-first-shot-") as out:
        for mtype, base in bases.items():
            result = TorchTrainer(
                train_worker, train_loop_config={"config": apply_params(base, params), "trial_started": time.time()},
                scaling_config=_scaling(resources, use_gpu),
                run_config=RunConfig(name=f"train-{trial}-{mtype}", storage_path=storage_path,
                                     checkpoint_config=CheckpointConfig(num_to_keep=1)),  # latest = best
            ).fit()
            finals[mtype] = result.metrics  # the final report: the running best's figures (best_<figure>)
            epochs = max(epochs, int(result.metrics["epoch"]))
            result.checkpoint.to_directory(str(Path(out) / mtype))
        tune.report({**first_shot_figures(finals, metric, tie_break), "epoch": epochs},
                    checkpoint=tune.Checkpoint.from_directory(out))


def first_shot_figures(finals: dict[str, dict], metric: str, tie_break: str) -> dict[str, float]:
    """What a first-shot trial reports, from each type's final Train report (``finals``: {type: metrics, with
    ``best_<figure>``}): ``metric``, the mean over types of each type's best figure, and ``<type>/<metric>``
    each; ``<metric>_se``, the mean's noise (the types' bootstrap standard errors combined as independent:
    √(Σ se²) / types); ``tie_break``, the mean of each type's value at its best epoch — so a first-shot pick
    breaks ties and states its noise as a per-type pick does. A figure some type lacks is NaN.

    >>> f = first_shot_figures({"fan": {"best_m": 0.8, "best_m_se": 0.03, "best_val_loss": 1.0},
    ...                         "valve": {"best_m": 0.6, "best_m_se": 0.04, "best_val_loss": 2.0}}, "m", "val_loss")
    >>> {k: round(v, 3) for k, v in f.items()}
    {'m': 0.7, 'fan/m': 0.8, 'valve/m': 0.6, 'm_se': 0.025, 'val_loss': 1.5}
    """
    def each(key: str) -> list[float]:
        return [float(m.get(key, math.nan)) for m in finals.values()]

    figures = each(f"best_{metric}")
    return {metric: float(np.mean(figures)), **{f"{t}/{metric}": v for t, v in zip(finals, figures)},
            f"{metric}_se": math.sqrt(sum(se * se for se in each(f"best_{metric}_se"))) / len(finals),
            tie_break: float(np.mean(each(f"best_{tie_break}")))}
