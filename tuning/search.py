"""Per-machine-type hyperparameter search: Ray Tune + Optuna (TPE) + ASHA, every trial trained in a Ray
Train ``TorchTrainer``, everything recorded in MLflow.

    python tuning/search.py                        # the embedded default: local Ray, synthetic data
    python tuning/search.py --smoke-test           # the whole path in about a minute
    python tuning/search.py --data-root data/dcase2020/dev_data --machine-types fan,pump \\
        --num-samples 30 --address auto --storage-path s3://bucket/mimimi --tracking-uri http://head:5000
    ray submit --tmux cluster/gpu.yaml tuning/search.py -- --address auto --use-gpu \\
        --data-root /home/ray/data/dcase2020/dev_data --storage-path s3://bucket/runs --tracking-uri http://localhost:5000

Per machine type: Optuna proposes configs from ``configs/search/`` (base + per-type overrides), ASHA
stops weak trials early on the validation loss (normal clips held out of the training split; the
test split is never looked at during the search), and when the search ends the best trial's best
checkpoint is evaluated once on the test split. MLflow gets one run per search, one parent run per
(search, machine type) with the search space, the best config, the test metrics, plots and score
CSVs, one child run per trial, and the best model registered as ``mimimi-<machine type>``.

The driver: ``make_plan`` turns the arguments and YAML into a ``Plan`` (pure), ``prepare_data`` makes
and checks the data, ``SearchState`` is what ``--resume`` reads back, and per machine type ``tune_type``
runs Tune and ``finish_type`` evaluates, logs, registers and promotes, all through one ``Tracker``.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

if __package__ in (None, ""):  # run as a script (`python tuning/search.py`, `ray submit`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import optuna
import ray
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from mimimi import kinds
from mimimi import metrics as M
from mimimi import tracking
from mimimi.config import Config, ConfigError, load_config, merge, to_dict
from mimimi.data import synth
from mimimi.data.audio import AudioError
from mimimi.data.index import DatasetError, index_dataset, select
from mimimi.evaluate import EvaluationError, evaluate
from mimimi.features import FeatureCache
from tuning.space import SEARCH_CONFIGS, Resources, SearchConfig, SyntheticData, load_search_config, trial_config
from tuning.worker import CHECKPOINT_FILE, maybe_inject_fault, train_worker

STATE_FILE = "mimimi_search.json"


class SearchError(RuntimeError):
    """The search cannot run or resume (one line)."""


class SearchInterrupted(SearchError):
    """Stopped before every trial settled (Ctrl-C): ``--resume`` continues it."""


class Interrupts:
    """Ctrl-C (SIGINT) at any point of a search: exit 130 with the state saved, ``--resume`` continues.

    Outside Tune, SIGINT raises KeyboardInterrupt (main turns it into exit 130). Inside ``Tuner.fit`` Tune's
    own handler stops the trials and saves the experiment, then ``fit`` returns as if all were well; so once
    Tune has installed that handler (``TrialRuns.setup``), ``watch_tune`` wraps it to note the signal, and
    ``search_type`` raises ``SearchInterrupted`` instead of evaluating and registering."""

    def __init__(self) -> None:
        self.requested = False

    def _note(self, previous):
        def handler(signum, frame):
            self.requested = True
            if callable(previous):
                previous(signum, frame)
            else:
                raise KeyboardInterrupt
        return handler

    def install(self) -> None:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            signal.signal(signal.SIGINT, self._note(signal.default_int_handler))

    def watch_tune(self) -> None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, self._note(signal.getsignal(signal.SIGINT)))


interrupts = Interrupts()


# ---------------------------------------------------------------------------------------------
# one trial: a Tune function that runs a TorchTrainer (Ray 2.60 Train V2 pattern)

def run_trial(params: dict, *, base: dict, resources: dict, use_gpu: bool, storage_path: str) -> None:
    """Tune trial: train the sampled config in Ray Train workers; metrics flow back to Tune every epoch."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.time()  # the worker reports how long its group took to start (bench.ray_overhead)
    res = Resources(**resources)
    cfg = trial_config(merge(Config(), base), params)
    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg, "trial_started": started},
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=f"train-{tune.get_context().get_trial_name()}",
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # only improvements are reported: latest = best
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


FIRST_SHOT = "first-shot"  # the Tune experiment, state entry and run names of a first-shot search


def run_first_shot_trial(params: dict, *, bases: dict, resources: dict, use_gpu: bool, storage_path: str,
                         metric: str, mode: str) -> None:
    """Tune trial of a first-shot search: the sampled config trained on every machine type in turn, each in
    Ray Train workers; one report at the end: ``metric`` = the mean over types of each type's best
    validation figure, ``<type>/<metric>`` each, and every type's best checkpoint (``<type>/checkpoint.pt``)."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    res = Resources(**resources)
    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if use_gpu else {})}
    trial = tune.get_context().get_trial_name()
    figures, epochs = {}, 0
    with tempfile.TemporaryDirectory(prefix="mimimi-first-shot-") as out:
        for mtype, base in bases.items():
            cfg = trial_config(merge(Config(), base), params)
            result = TorchTrainer(
                train_worker, train_loop_config={"config": cfg, "trial_started": time.time()},
                scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
                run_config=RunConfig(name=f"train-{trial}-{mtype}", storage_path=storage_path,
                                     checkpoint_config=CheckpointConfig(num_to_keep=1)),  # latest = best
            ).fit()
            figures[mtype] = float(result.metrics[f"best_{metric}"])  # the final report's running best
            epochs = max(epochs, int(result.metrics["epoch"]))
            result.checkpoint.to_directory(str(Path(out) / mtype))
        mean = float(np.mean(list(figures.values())))
        tune.report({metric: mean, **{f"{t}/{metric}": v for t, v in figures.items()}, "epoch": epochs},
                    checkpoint=tune.Checkpoint.from_directory(out))


# ---------------------------------------------------------------------------------------------
# MLflow: one child run per trial, from the Tune driver

def _storage_fs(storage: str):
    """(pyarrow filesystem, root path inside it) of ``--storage-path``: a local folder or ``s3://…`` /
    ``gs://…`` (the cluster's), where Tune keeps its experiments and this driver its search state."""
    import pyarrow.fs

    if "://" in storage:
        fs, root = pyarrow.fs.FileSystem.from_uri(storage)
        return fs, root.rstrip("/")
    return pyarrow.fs.LocalFileSystem(), str(Path(storage).resolve())


def _fetch_checkpoint(path: str, storage_path: str, dst: Path) -> Path:
    """Copy a reported checkpoint (local or on cloud storage) to ``dst``; return the checkpoint file."""
    ray.train.Checkpoint(path, filesystem=_storage_fs(storage_path)[0]).to_directory(str(dst))
    return dst / CHECKPOINT_FILE


def resolve_checkpoint(reported: list[str], storage_path: str) -> str | None:
    """The checkpoint to log for a trial: the newest reported one that still exists, else the newest
    ``checkpoint_*`` folder beside them, else None. Ray Train keeps one checkpoint (``num_to_keep=1``): when
    ASHA stops a trial between Train saving a new checkpoint and Tune seeing its report, the last path Tune
    knows is the one Train has just deleted, and the one it kept is the trial's best (only improvements are
    reported)."""
    from pyarrow.fs import FileSelector, FileType

    fs = _storage_fs(storage_path)[0]

    def usable(path: str) -> bool:
        return fs.get_file_info(f"{path}/{CHECKPOINT_FILE}").type == FileType.File

    for path in reversed(reported):
        if usable(path):
            return path
    if reported:
        run_dir = reported[-1].rstrip("/").rsplit("/", 1)[0]
        infos = fs.get_file_info(FileSelector(run_dir, allow_not_found=True))
        found = sorted(i.path for i in infos if i.type == FileType.Directory and i.base_name.startswith("checkpoint_"))
        for path in reversed(found):
            if usable(path):
                return path
    return None


def _never_fail(hook):
    """A Tune callback hook that cannot fail its trial: an exception from it would make Tune error the trial
    and train it again. The failure is one line on stderr and a tag on the trial's run where possible."""
    @functools.wraps(hook)
    def wrapped(self, *args, **kwargs):
        try:
            return hook(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking must never stop training
            msg = f"{hook.__name__}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"warning: MLflow callback {msg}", file=sys.stderr, flush=True)
            trial = kwargs.get("trial") or next((a for a in args if hasattr(a, "trial_id")), None)
            run_id = self.runs.get(getattr(trial, "trial_id", None))
            if run_id:
                with contextlib.suppress(Exception):
                    self.tracker.set_tags(run_id, {"mimimi.callback_error": msg[:500]})
    return wrapped


class TrialRuns(tune.Callback):
    """Mirror every Tune trial as an MLflow child run: params, per-epoch metrics, final status, model."""

    def __init__(self, tracker: tracking.Tracker, experiment_id: str, parent_run_id: str, storage_path: str,
                 machine_type: str = "", metric: str = "val_proxy_auc", mode: str = "max", num_samples: int = 0):
        self.machine_type = machine_type  # run names: "fan · trial 01" (the UI truncates long names)
        self.metric = metric  # logged first, as search/<metric>
        self.progress = Progress(machine_type, metric, mode, num_samples)
        self.tracker = tracker  # pickled with Tune's run config as its URI
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.storage_path = storage_path
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id
        self.ckpts: dict[str, list[str]] = {}  # trial id -> reported checkpoint paths, oldest first (last = best)
        self.logged_step: dict[str, int] = {}  # trial id -> last metric step logged (a retrained trial repeats them)
        self.nodes: dict[str, str] = {}  # trial id -> Ray node id of its rank-0 Train worker
        self.repeated: dict[str, int] = {}  # trial id -> epochs it reported again (trained again after a fault)
        self._synced: set[str] = set()  # what this process has read back from MLflow (not saved: re-read on resume)

    def get_state(self) -> dict:  # saved with the experiment, so a resumed search keeps its runs
        return {"runs": self.runs, "ckpts": self.ckpts, "logged_step": self.logged_step}

    def set_state(self, state: dict) -> None:
        self.runs = dict(state["runs"])
        self.ckpts = {k: list(v) for k, v in state.get("ckpts", {}).items()}
        self.ckpts.update({k: [v] for k, v in state.get("best_ckpt", {}).items() if k not in self.ckpts})
        self.logged_step = dict(state.get("logged_step", {}))

    def setup(self, **info):
        interrupts.watch_tune()  # Tune has just installed its Ctrl-C handler: note Ctrl-C before it acts

    def _sync_runs(self) -> None:
        """Once per driver process: the trials' runs as MLflow has them. Tune's saved state (``get_state``) can
        be older than MLflow's (a driver killed between two snapshots), so a trial is never given a second run."""
        if "runs" not in self._synced:
            self._synced.add("runs")
            found = {r.tags.get("mimimi.trial_id"): r.run_id for r in self.tracker.child_runs(self.parent_run_id)}
            self.runs.update({t: r for t, r in found.items() if t and t not in self.runs})

    def _last_logged_step(self, trial_id: str, run_id: str) -> int:
        """The last epoch logged for the trial: the saved state's, or MLflow's when that is newer (read once)."""
        if trial_id not in self._synced:
            self._synced.add(trial_id)
            steps = [step for step, _ in self.tracker.metric_history(run_id, "epoch_seconds")]
            self.logged_step[trial_id] = max([self.logged_step.get(trial_id, -1), *steps])
        return self.logged_step.get(trial_id, -1)

    def _run(self, trial) -> str:
        self._sync_runs()
        if trial.trial_id not in self.runs:
            number = len(self.runs) + 1  # in the order Tune starts them; kept across --resume (get_state)
            run_id = self.tracker.start_run(
                self.experiment_id, f"{self.machine_type} · trial {number:02d}", self.parent_run_id,
                tags={"mimimi.role": "trial", "mimimi.trial_id": trial.trial_id, "mimimi.trial_name": str(trial),
                      "mimimi.machine_type": self.machine_type})
            self.tracker.log_params(run_id, trial.config)
            self.runs[trial.trial_id] = run_id
        return self.runs[trial.trial_id]

    @_never_fail
    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    @_never_fail
    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run(trial)
        if result.get(CHECKPOINT_PATH_KEY):
            self.ckpts.setdefault(trial.trial_id, []).append(result[CHECKPOINT_PATH_KEY])
        if result.get("restored"):
            self.tracker.set_tags(run_id, {"mimimi.restored": "its finished Train run's final checkpoint, after a "
                                                              "resume: not trained again"})
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if step <= self._last_logged_step(trial.trial_id, run_id):
            if not result.get("restored"):  # a trial trained again (a retry, a resume after a crash): logged once
                self.repeated[trial.trial_id] = self.repeated.get(trial.trial_id, 0) + 1
                self.tracker.set_tags(run_id, {"mimimi.epochs_repeated": str(self.repeated[trial.trial_id])})
            return
        self.logged_step[trial.trial_id] = step
        numeric = {k: shown_value(k, v) for k, v in result.items() if isinstance(v, (int, float)) and (
            k in ("train_loss", "val_loss", "val_acc", "best_val_loss", "best_val_proxy_auc", "epoch_seconds")
            or k.startswith("val_proxy_auc") or k.endswith(f"/{self.metric}"))}  # first-shot: <type>/<metric>
        self.tracker.log_metrics(run_id, mlflow_names(numeric, self.metric), step=step)
        node = result.get("node_id")
        if node and self.nodes.get(trial.trial_id) != node:  # the node that trained it (a retry may move it)
            self.nodes[trial.trial_id] = node
            self.tracker.set_tags(run_id, {"mimimi.node_id": node})

    @_never_fail
    def on_trial_recover(self, iteration, trials, trial, **info):
        self.tracker.set_tags(self._run(trial), {"mimimi.retried": str(trial.run_metadata.num_failures)})

    @_never_fail
    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        last = trial.last_result or {}
        self.progress.settled(self._number(trial), "finished", last, _settled(trials, trial))
        self.tracker.set_tags(run_id, {"mimimi.epochs_run": str(_epochs(last))})
        reported = self.ckpts.get(trial.trial_id, [])
        ckpt = resolve_checkpoint(reported, self.storage_path) if reported else None
        if tracking.MODEL_URI_TAG in self.tracker.get_run(run_id).tags:
            pass  # logged before the driver was killed and the search resumed: once is enough
        elif ckpt:
            with tempfile.TemporaryDirectory() as d:
                self.tracker.log_model(run_id, _fetch_checkpoint(ckpt, self.storage_path, Path(d)))
        elif reported:  # every checkpoint it reported is gone: the run says so, the search goes on
            self.tracker.set_tags(run_id, {"mimimi.model": "none: its checkpoints were removed before they were logged"})
        self.tracker.end_run(run_id, "FINISHED")
        maybe_inject_fault("driver-after-trial")

    @_never_fail
    def on_trial_error(self, iteration, trials, trial, **info):
        self.tracker.end_run(self._run(trial), "FAILED")
        self.progress.settled(self._number(trial), "FAILED", trial.last_result or {}, _settled(trials, trial))

    def _number(self, trial) -> int:
        return list(self.runs).index(trial.trial_id) + 1 if trial.trial_id in self.runs else len(self.runs)


RATES = ("val_acc", "val_proxy_auc", "best_val_proxy_auc")  # as Tune sees them: fractions


def shown_value(key: str, value: float) -> float:
    """A trial metric as MLflow and the console show it: rates in percent (``metrics.percent``), the rest as
    reported (losses, seconds). Tune, ASHA and Optuna work on the reported fractions."""
    rate = any(part.startswith(RATES) for part in key.split("/"))  # val_proxy_auc/tone, fan/val_proxy_auc
    return M.percent(value) if rate and value == value else value


def mlflow_names(metrics: dict[str, float], search_metric: str) -> dict[str, float]:
    """A trial's metrics under their MLflow names, the search metric first as ``search/<metric>``: the
    first section of charts in the MLflow UI, and first in the run's metrics table.

    >>> mlflow_names({"val_loss": 1.2, "val_proxy_auc": 81.5}, "val_proxy_auc")
    {'search/val_proxy_auc': 81.5, 'val_loss': 1.2}
    """
    first = {f"search/{search_metric}": metrics[search_metric]} if search_metric in metrics else {}
    return {**first, **{k: v for k, v in metrics.items() if k != search_metric}}


def _settled(trials, trial) -> int:
    """How many of the type's trials have finished or failed, ``trial`` included (a resumed search counts
    the trials settled before it)."""
    return len({t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")} | {trial.trial_id})


def _epochs(result: dict) -> int:
    """Epochs a trial ran, from its last result (``epoch`` counts from 0; Tune's iteration restarts with a
    restored trial)."""
    return int(result["epoch"]) + 1 if "epoch" in result else int(result.get("training_iteration", 0))


class Progress:
    """The console's view of a type's search: one line per settled trial (its metric, the best so far, how
    many are done, an estimate of the time left). Tune's own tables and Ray's logs show with --verbose."""

    def __init__(self, machine_type: str, metric: str, mode: str, total: int):
        self.machine_type, self.metric, self.mode, self.total = machine_type, metric, mode, total
        self.start, self.done, self.best = time.monotonic(), 0, None

    def settled(self, number: int, status: str, result: dict, done: int | None = None) -> str:
        self.done = self.done + 1 if done is None else done
        value = result.get(f"best_{self.metric}", result.get(self.metric))
        if isinstance(value, (int, float)) and value == value:
            better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            self.best = value if better else self.best
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done) if self.total > self.done else 0.0
        def fmt(v):
            if not isinstance(v, (int, float)) or v != v:
                return "—"
            return f"{shown_value(self.metric, v):.2f} %" if self.metric.startswith(RATES) else f"{v:.4g}"
        shown, best = fmt(value), fmt(self.best)
        line = (f"{self.machine_type}: trial {number:02d} {status} after {_epochs(result)} "
                f"epoch(s), {self.metric} {shown}; best {best}; {self.done}/{self.total or '?'} trials"
                + (f", about {left / 60:.0f} min left" if left >= 60 else ", under a minute left" if left else ""))
        print(line, flush=True)
        return line


# ---------------------------------------------------------------------------------------------
# the plan: what a search does, from its arguments and YAML alone

@dataclass(frozen=True)
class Plan:
    """Everything a search will do, decided from the arguments and the search YAMLs; nothing is read from
    the data or the stores, nothing is written (``make_plan``)."""

    storage: str  # --storage-path: an absolute local folder or a URI (s3://…)
    search_configs: tuple[str, ...]  # search YAMLs after base and per-type (smoke/embedded first)
    data_root: str
    synthetic: SyntheticData | None  # generated at data_root when absent
    regenerate: bool  # the embedded default: also when data_root was made with other settings
    machine_types: tuple[str, ...] | None  # None: every type under data_root
    configs: tuple[str, ...] = ()  # --config: MIMIMI YAMLs for every trial
    num_samples: int | None = None
    max_concurrent: int | None = None
    smoke_test: bool = False
    name: str | None = None  # None: a new search-<date>-<time>, or with resume the latest one
    resume: bool = False
    tracking_uri: str | None = None  # None: the resumed search's, else Tracker's default
    experiment: str = "mimimi"
    address: str | None = None
    num_cpus: float | None = None
    use_gpu: bool = False
    verbose: bool = False
    first_shot: bool = False  # one configuration for every type: no per-type search YAML, no per-type tuning
    fixed: bool = False  # no search: one trial of the configuration as given (with first_shot: the train mode)

    def type_config(self, machine_type: str) -> tuple[SearchConfig, Config]:
        """The search settings and the trials' base config of one machine type (first-shot: the per-type
        search YAMLs are not read, so every type gets the same settings and space)."""
        scfg = load_search_config("" if self.first_shot else machine_type, list(self.search_configs))
        settings = {k: v for k, v in (("num_samples", self.num_samples), ("max_concurrent", self.max_concurrent))
                    if v}
        if self.fixed:
            scfg, settings = replace(scfg, space={}), {**settings, "num_samples": 1}
        if settings:
            scfg = replace(scfg, search=merge(scfg.search, settings))
        base = load_config(*self.configs, overrides=scfg.config)
        cache = (str(Path(self.data_root).parent / "cache") if self.smoke_test
                 else str(Path(base.data.cache_dir).resolve()))
        return scfg, merge(base, {"data": {"root": self.data_root, "cache_dir": cache},
                                  "train": {"machine_type": machine_type, "progress": False}})


def make_plan(args: argparse.Namespace) -> Plan:
    storage = args.storage_path if "://" in args.storage_path else str(Path(args.storage_path).resolve())
    first = []
    if args.smoke_test:
        first.append(str(SEARCH_CONFIGS / "smoke.yaml"))  # next to the package: `ray submit` copies this file
    elif not args.data_root:  # the embedded default: synthetic data and a laptop-sized budget
        first.append(str(SEARCH_CONFIGS / "embedded.yaml"))
    if args.first_shot:  # (type, section) classes; without --data-root, synthetic data in the 2023 layout
        first.append(str(SEARCH_CONFIGS / "first_shot.yaml"))
    extra = first + list(args.search_config)
    synthetic = None if args.data_root else load_search_config("", extra).synthetic
    if not args.data_root and synthetic is None:
        raise SearchError(f"no --data-root, and the search configs {extra} give no synthetic: set")
    suffix = "-first-shot" if args.first_shot else ""  # its own synthetic set (the 2023 layout)
    if args.data_root:
        data_root = str(Path(args.data_root).resolve())
    elif args.smoke_test:
        data_root = (str(Path(storage) / f"smoke-data{suffix}") if "://" not in storage
                     else str(Path(f"runs/smoke-data{suffix}").resolve()))
    else:
        data_root = str(Path(f"data/synthetic{suffix}").resolve())
    return Plan(storage=storage, search_configs=tuple(extra), data_root=data_root, synthetic=synthetic,
                regenerate=synthetic is not None and not args.smoke_test,
                machine_types=tuple(args.machine_types.split(",")) if args.machine_types else None,
                configs=tuple(args.config), num_samples=args.num_samples, max_concurrent=args.max_concurrent,
                smoke_test=args.smoke_test, name=args.name, resume=args.resume, tracking_uri=args.tracking_uri,
                experiment=args.experiment, address=args.address, num_cpus=args.num_cpus, use_gpu=args.use_gpu,
                verbose=args.verbose, first_shot=args.first_shot, fixed=args.fixed)


def prepare_data(plan: Plan) -> tuple[str, ...]:
    """Generate the plan's synthetic set when it is absent (or, for the embedded default, stale); return the
    machine types to search (the plan's, each checked to have clips)."""
    root = Path(plan.data_root)
    if plan.synthetic is not None:
        spec_file = root / ".spec.json"  # dot files are not indexed
        wanted = json.dumps(asdict(plan.synthetic), sort_keys=True)
        stale = plan.regenerate and root.exists() and (not spec_file.is_file() or spec_file.read_text() != wanted)
        if stale:
            print(f"{root} was generated with other settings: regenerating it")
            shutil.rmtree(root)
        if not root.exists():
            print(f"generating the synthetic dataset into {root} …")
            synth.generate(str(root), **asdict(plan.synthetic), workers=2)
            spec_file.write_text(wanted)
    found = sorted(set(index_dataset(root).clips.machine_type))
    types = plan.machine_types or tuple(found)
    if missing := [t for t in types if t not in found]:
        raise SearchError(f"{root}: no clips of machine type(s) {missing} (found {found})")
    return tuple(types)


# ---------------------------------------------------------------------------------------------
# the search state: what a resumed search needs, beside Tune's experiments

class SearchState:
    """``<storage>/<name>/mimimi_search.json`` (local or on the cloud store, so ``--resume`` works from any
    machine that reaches it): the tracking store, the search's MLflow run, and per machine type its parent
    run and whether it finished. Written whole each time, never half."""

    def __init__(self, storage: str, data: dict):
        self.storage, self.data = storage, data

    @property
    def name(self) -> str:
        return self.data["name"]

    @classmethod
    def load(cls, storage: str, name: str) -> SearchState | None:
        from pyarrow.fs import FileType

        fs, root = _storage_fs(storage)
        path = f"{root}/{name}/{STATE_FILE}"
        if fs.get_file_info(path).type != FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return cls(storage, json.loads(f.read().decode()))

    @staticmethod
    def latest(storage: str) -> str | None:
        """The name of the newest search under ``storage`` that has a state file."""
        from pyarrow.fs import FileSelector, FileType

        fs, root = _storage_fs(storage)
        dirs = [i.base_name for i in fs.get_file_info(FileSelector(root, allow_not_found=True))
                if i.type == FileType.Directory]
        found = [d for d in dirs if fs.get_file_info(f"{root}/{d}/{STATE_FILE}").type == FileType.File]
        return max(found) if found else None

    def save(self) -> None:
        fs, root = _storage_fs(self.storage)
        fs.create_dir(f"{root}/{self.name}", recursive=True)
        tmp = f"{root}/{self.name}/{STATE_FILE}.tmp"
        with fs.open_output_stream(tmp) as f:
            f.write(json.dumps(self.data, indent=1).encode())
        fs.move(tmp, f"{root}/{self.name}/{STATE_FILE}")

    def type(self, machine_type: str) -> dict:
        return self.data["types"].get(machine_type, {})

    def set_type(self, machine_type: str, parent_run_id: str, finished: bool) -> None:
        self.data["types"][machine_type] = {"parent_run_id": parent_run_id, "finished": finished}
        self.save()


def open_state(plan: Plan, types: tuple[str, ...]) -> tuple[SearchState, tracking.Tracker]:
    """The resumed search's state and tracker, or a new search (its MLflow run started, its state saved)."""
    if plan.resume:
        name = plan.name or SearchState.latest(plan.storage)
        state = SearchState.load(plan.storage, name) if name else None
        if state is None:
            raise SearchError(f"nothing to resume under {plan.storage}" + (f" named {plan.name!r}" if plan.name else ""))
        tracker = tracking.Tracker(plan.tracking_uri or state.data["tracking_uri"])
        return state, tracker
    name = plan.name or time.strftime("search-%Y%m%d-%H%M%S")
    tracker = tracking.Tracker(plan.tracking_uri)
    experiment_id = tracker.ensure_experiment(plan.experiment)
    search_run = tracker.start_run(experiment_id, name, tags={"mimimi.role": "search", "mimimi.storage": plan.storage})
    tracker.log_params(search_run, {"machine_types": ",".join(types), "data_root": plan.data_root,
                                    "smoke_test": plan.smoke_test, "storage_path": plan.storage})
    state = SearchState(plan.storage, {"name": name, "tracking_uri": tracker.uri, "experiment_id": experiment_id,
                                       "search_run_id": search_run, "data_root": plan.data_root, "types": {}})
    state.save()
    return state, tracker


# ---------------------------------------------------------------------------------------------
# one machine type: tune, then finish (evaluate, log, register, promote)

def optuna_db(tracking_uri: str, storage: str) -> Path:
    """The SQLite file that keeps each search's Optuna study (``optuna-dashboard sqlite:///<file>`` opens
    it): beside a SQLite tracking store, else beside a local storage path, else ``runs/optuna.db`` here.

    >>> str(optuna_db("sqlite:////srv/mlruns/mlflow.db", "s3://b/runs"))
    '/srv/mlruns/optuna.db'
    >>> str(optuna_db("http://head:5000", "/data/runs"))
    '/data/runs/optuna.db'
    """
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):].partition("?")[0]).parent / "optuna.db"
    return (Path(storage) if "://" not in storage else Path("runs").resolve()) / "optuna.db"


class StudySearch(OptunaSearch):
    """Tune's OptunaSearch on a study kept in an RDB file (``optuna_db``: optuna-dashboard opens it). That
    study can be ahead of Tune's saved experiment: a driver killed after Optuna recorded a trial as finished
    but before Tune's next snapshot resumes the trial, and the trial reports again. Optuna already has those
    figures, so such a report is skipped instead of failing the search (``UpdateFinishedTrialError``)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


def _best_trial(results, metric: str, mode: str):
    ok = [r for r in results if r.error is None and r.metrics_dataframe is not None
          and metric in r.metrics_dataframe and r.metrics_dataframe[metric].notna().any()]
    if not ok:
        raise SearchError(f"no trial reported {metric!r}; see the errors under {results.experiment_path}")
    best = (lambda r: r.metrics_dataframe[metric].min()) if mode == "min" else (lambda r: -r.metrics_dataframe[metric].max())
    # ties (small validation sets tie often) go to the first trial by its folder name, so a resumed search,
    # whose ResultGrid may list the trials in another order, picks the same trial
    return min(ok, key=lambda r: (best(r), str(r.path).rsplit("/", 1)[-1]))


def tune_type(machine_type: str, scfg: SearchConfig, base: Config, plan: Plan, state: SearchState,
              tracker: tracking.Tracker, parent_run_id: str, use_gpu: bool, first_shot: dict | None = None):
    """Run (or resume) the Tune search of one machine type — with ``first_shot`` ({type: base config}), of
    one configuration for all of them (``machine_type`` is then ``FIRST_SHOT``); its ``ResultGrid`` once
    every trial settled."""
    s, res = scfg.search, scfg.resources
    exp_root = f"{plan.storage}/{state.name}"
    exp_path = f"{exp_root}/{machine_type}"
    db, study_name = optuna_db(tracker.uri, plan.storage), f"{state.name}/{machine_type}"
    db.parent.mkdir(parents=True, exist_ok=True)
    optuna_url = f"sqlite:///{db}"
    tracker.set_tags(parent_run_id, {"mimimi.optuna_storage": optuna_url, "mimimi.optuna_study": study_name})
    if first_shot is None:
        fn = tune.with_parameters(run_trial, base=to_dict(base), resources=asdict(res), use_gpu=use_gpu,
                                  storage_path=exp_root)
        scheduler = ASHAScheduler(metric=s.metric, mode=s.mode, max_t=base.train.epochs, grace_period=s.grace_period,
                                  reduction_factor=s.reduction_factor)
    else:  # one report per trial, after every type trained: nothing for ASHA to stop early
        fn = tune.with_parameters(run_first_shot_trial, bases={t: to_dict(b) for t, b in first_shot.items()},
                                  resources=asdict(res), use_gpu=use_gpu, storage_path=exp_root, metric=s.metric,
                                  mode=s.mode)
        scheduler = None
    trainable = tune.with_resources(fn, {"CPU": res.trial_cpus})
    if plan.resume and tune.Tuner.can_restore(exp_path):
        tuner = tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={k: p.to_tune() for k, p in scfg.space.items()},
            tune_config=tune.TuneConfig(
                search_alg=StudySearch(metric=s.metric, mode=s.mode, seed=s.seed, study_name=study_name,
                                       storage=optuna.storages.RDBStorage(optuna_url)) if scfg.space else None,
                scheduler=scheduler,
                num_samples=s.num_samples, max_concurrent_trials=s.max_concurrent, time_budget_s=s.time_budget_s),
            run_config=tune.RunConfig(
                name=machine_type, storage_path=exp_root,
                failure_config=tune.FailureConfig(max_failures=s.max_failures),
                callbacks=[TrialRuns(tracker, state.data["experiment_id"], parent_run_id, exp_root, machine_type,
                                     s.metric, s.mode, s.num_samples)],
                verbose=1 if plan.verbose else 0),
        )
    results = tuner.fit()
    # the saved experiment state lists every trial, pending ones too (the returned grid may not)
    trials = tune.ExperimentAnalysis(exp_path).trials
    settled = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
    if settled < len(trials) or (s.time_budget_s is None and len(trials) < s.num_samples):
        raise SearchInterrupted(f"{machine_type}: search interrupted after {settled} of {s.num_samples} trials; "
                                f"continue it with --resume --name {state.name}")
    if interrupts.requested:  # Ctrl-C while the last trials finished: Tune saved its state, nothing else runs
        raise SearchInterrupted(f"{machine_type}: interrupted; continue it with --resume --name {state.name}")
    return results


def promote(tracker: tracking.Tracker, registered: str, version: int, metric: str,
            run_id: str) -> tracking.ChampionUpdate:
    """``update_champion``; when the tracking server fails during it, the champion stays, the search goes on
    and the failure is printed and recorded (tags ``mimimi.champion.*`` on ``run_id``)."""
    try:
        return tracker.update_champion(registered, version, metric, run_id)
    except tracking.TrackingError as e:
        reason = f"not decided, the champion stays: {e}"
        print(f"warning: {registered} version {version}: {reason}", file=sys.stderr, flush=True)
        with contextlib.suppress(tracking.TrackingError):  # the server may still be failing
            tracker.set_tags(run_id, {"mimimi.champion.promoted": "false", "mimimi.champion.reason": reason[:500]})
        return tracking.ChampionUpdate(False, reason, None, None, None, None)


class Pick(NamedTuple):
    """What a search chose for one machine type, ready to evaluate: the checkpoint (a local file), the chosen
    values, their validation figure (``shown_value``: percent for rates), how many trials were run."""

    checkpoint: Path
    params: dict
    value: float
    trials: int
    errored: int
    trial_dir: str  # the Tune trial folder's name
    trial_id: str | None
    mode: str = "per-type"  # or "first-shot": one configuration for every machine type


def pick_best(machine_type: str, scfg: SearchConfig, results, exp_root: str, dst: Path) -> Pick:
    """The best trial of a per-type search, its checkpoint fetched into ``dst``."""
    s = scfg.search
    best = _best_trial(results, s.metric, s.mode)
    ckpt_paths = best.metrics_dataframe.get(CHECKPOINT_PATH_KEY)
    reported = list(ckpt_paths.dropna()) if ckpt_paths is not None else []
    ckpt_path = resolve_checkpoint(reported, exp_root) if reported else None
    if ckpt_path is None:
        raise SearchError(f"{machine_type}: the best trial reported no checkpoint that still exists"
                          + (f" (last reported: {reported[-1]})" if reported else ""))
    col = best.metrics_dataframe[s.metric]
    return Pick(_fetch_checkpoint(ckpt_path, exp_root, dst), {k: best.config[k] for k in scfg.space},
                shown_value(s.metric, float(col.min() if s.mode == "min" else col.max())), len(results),
                sum(r.error is not None for r in results), str(best.path).rsplit("/", 1)[-1],
                best.metrics.get("trial_id"))


def finish_type(machine_type: str, scfg: SearchConfig, base: Config, pick: Pick, plan: Plan, state: SearchState,
                tracker: tracking.Tracker, parent_run_id: str) -> dict[str, Any]:
    """Evaluate the chosen checkpoint once on the test split; log it on the type's parent run; register it
    as ``mimimi-<type>`` and move ``champion`` to it if its test pAUC beats the champion's."""
    s, res = scfg.search, scfg.resources
    registered = f"mimimi-{machine_type}"
    ckpt = pick.checkpoint
    eval_dir = Path(tempfile.mkdtemp(prefix=f"mimimi-eval-{machine_type}-"))
    try:
        report = evaluate(ckpt, plan.data_root, eval_dir, progress=False)
        # a driver killed in here and resumed finds what it logged before: each figure once, one version
        before = tracker.get_run(parent_run_id)
        if f"search/{s.metric}" not in before.metrics:
            # the search metric first: MLflow lists a run's metrics in the order they were first logged
            tracker.log_metrics(parent_run_id, {f"search/{s.metric}": pick.value})
            tracker.log_metrics(parent_run_id, report.tracked_metrics())  # every scorer and stats-knn, on test
        # the chosen values as params; the space itself is one artifact (as params it buried the rest)
        tracker.log_params(parent_run_id, {"best": pick.params, "search": asdict(s), "resources": asdict(res),
                                           "mode": pick.mode})
        tracker.log_dict(parent_run_id, {k: asdict(p) for k, p in scfg.space.items()}, "search_space.json")
        tracker.log_dict(parent_run_id, trial_config(base, pick.params), "best_config.json")
        tracker.log_artifacts(parent_run_id, eval_dir, "evaluation")
        # --- mimimi.score: the model carries its normal-only thresholds (in the checkpoint), and the
        # alias "champion" moves to it only if its test pAUC beats the current champion's
        if registered_as := before.tags.get(tracking.REGISTERED_TAG):  # models:/<name>/<version>
            model = tracking.ModelRef(before.tags[tracking.MODEL_URI_TAG], int(registered_as.rsplit("/", 1)[1]))
        else:
            model = tracker.log_model(parent_run_id, ckpt, registered_name=registered)
        maybe_inject_fault("driver-after-register")
        champion = promote(tracker, registered, model.version, f"test/{machine_type}/mean_pauc", parent_run_id)
        row = report.per_type.iloc[0]
        scorer = report.comparison.loc[report.comparison["default"], "key"].iloc[0]
        auc, pauc = M.percent(row.mean_auc), M.percent(row.mean_pauc)
        how = ("one configuration for every machine type (first-shot), the best" if pick.mode == "first-shot"
               else "the best")
        official = ("" if report.official is None else
                    f"; official {report.official.protocol} score {M.percent(report.official.score):.2f} %")
        description = (
            f"{machine_type}: {how} of {pick.trials} trials of search {state.name!r} by {s.metric} ({s.mode}, "
            f"{pick.value:g}{' %' if s.metric.startswith(RATES) else ''} on validation); test mean per-ID AUC "
            f"{auc:.2f} %, pAUC {pauc:.2f} %{official} with the {scorer} scorer on {plan.data_root}. "
            f"Champion: {champion.reason}.")
        tracker.set_tags(parent_run_id, {tracking.DESCRIPTION_TAG: description})  # the run page's description
        tracker.describe_version(
            registered, model.version, description,
            {"mimimi.machine_type": machine_type, "mimimi.search": state.name, "mimimi.data_root": plan.data_root,
             "mimimi.metric": s.metric, "mimimi.scorer": scorer, "mimimi.test_mean_auc_pct": f"{auc:.2f}",
             "mimimi.test_mean_pauc_pct": f"{pauc:.2f}", "mimimi.champion": str(champion.promoted).lower(),
             "mimimi.mode": pick.mode})
        # --- end mimimi.score
        trial_runs = {r.tags.get("mimimi.trial_id"): r.run_id for r in tracker.child_runs(parent_run_id)}
        tracker.set_tags(parent_run_id, {"mimimi.best_trial": pick.trial_dir, "mimimi.mode": pick.mode,
                                         "mimimi.best_trial_run_id": trial_runs.get(pick.trial_id, ""),
                                         "mimimi.registered_version": str(model.version)})
    finally:
        shutil.rmtree(eval_dir, ignore_errors=True)
    tracker.end_run(parent_run_id, "FINISHED")
    return {"machine_type": machine_type, "per_type": report.per_type, "markdown": report.markdown,
            "comparison": report.comparison, "parent_run_id": parent_run_id, "model_version": model.version,
            "trials": pick.trials, "errored_trials": pick.errored, "champion": champion, "official": report.official}


# ---------------------------------------------------------------------------------------------
# the driver

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python tuning/search.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--machine-types", default=None, help="comma-separated; default: every type under the data root")
    ap.add_argument("--num-samples", type=int, default=None, help="trials per machine type (search.num_samples)")
    ap.add_argument("--max-concurrent", type=int, default=None, help="trials at once (search.max_concurrent)")
    ap.add_argument("--data-root", default=None, help="default: data/synthetic (generated if absent)")
    ap.add_argument("--storage-path", default="runs/search", help="Tune/Train results and checkpoints (local path or s3://…)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite under mlruns/)")
    ap.add_argument("--experiment", default="mimimi", help="MLflow experiment name")
    ap.add_argument("--address", default=None, help="Ray cluster address (`auto` on a cluster); default: a local Ray")
    ap.add_argument("--name", default=None, help="search name (default: search-<date>-<time>)")
    ap.add_argument("--resume", action="store_true", help="continue the search --name (default: the latest one)")
    ap.add_argument("--smoke-test", action="store_true", help="tiny data, 2 trials of 2 epochs: proves the path")
    ap.add_argument("--config", action="append", default=[], help="MIMIMI config YAML for every trial")
    ap.add_argument("--search-config", action="append", default=[], help="extra search YAML (after base and per-type)")
    ap.add_argument("--num-cpus", type=float, default=None, help="CPUs of a local Ray (default: all)")
    ap.add_argument("--verbose", action="store_true", help="show Tune's trial tables and Ray's logs on the console")
    ap.add_argument("--first-shot", action="store_true",
                    help="DCASE 2023+ rules: tune ONE configuration for every machine type, on the mean over types "
                         "of the validation metric (no per-type search YAML)")
    ap.add_argument("--fixed", action="store_true",
                    help="no search: train the configuration as given (one trial); with --first-shot, on every type")
    ap.add_argument("--use-gpu", action="store_true",
                    help="give every Train worker a GPU even while the cluster has none, so that an autoscaler "
                         "adds GPU nodes (default: GPUs only when the cluster has some at the start)")
    return ap.parse_args(argv)


def _start_ray(plan: Plan):
    """A Ray to run on: the cluster at ``--address``, else a new local instance (never one that a killed
    earlier run left behind). Quiet unless --verbose: workers' output and Ray's messages stay in its logs."""
    quiet = {} if plan.verbose else {"log_to_driver": False, "logging_level": logging.ERROR}
    if plan.address:
        return ray.init(address=plan.address, **quiet)
    if not ray.is_initialized():
        return ray.init(address="local", num_cpus=plan.num_cpus, **quiet)
    return None


def keep_ray_logs(ctx, storage: str, name: str) -> str | None:
    """Copy the local Ray session's logs to ``<storage>/<name>/ray-logs`` (the cloud store too); its path."""
    import pyarrow.fs

    session = (getattr(ctx, "address_info", None) or {}).get("session_dir")
    if not session or not Path(session, "logs").is_dir():
        return None
    fs, root = _storage_fs(storage)
    dst = f"{root}/{name}/ray-logs"
    fs.create_dir(dst, recursive=True)
    pyarrow.fs.copy_files(str(Path(session, "logs")), dst, source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=fs)
    return f"{storage}/{name}/ray-logs"


def run(args: argparse.Namespace) -> tuple[list[dict], SearchState, tracking.Tracker]:
    plan = make_plan(args)
    if not plan.verbose:
        for name in ("mlflow", "optuna"):  # "Creating initial MLflow database tables", "A new study created"
            logging.getLogger(name).setLevel(logging.WARNING)
        # Tune's new output engine prints its experiment box even when silent; the legacy one honours verbose=0
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    types = prepare_data(plan)
    clips = index_dataset(plan.data_root).clips
    state, tracker = open_state(plan, types)
    ctx = _start_ray(plan)
    use_gpu = plan.use_gpu or ray.cluster_resources().get("GPU", 0) > 0
    if ctx is not None and not plan.verbose:
        print(f"Ray's logs: {plan.storage}/{state.name}/ray-logs when the search stops (--verbose shows them here)")
    outcomes = []
    try:
        if plan.first_shot:
            outcomes = run_first_shot(plan, state, tracker, types, clips, use_gpu)
        for mtype in (() if plan.first_shot else types):
            if (done := state.type(mtype)).get("finished"):
                print(f"{mtype}: finished before, skipped (parent run {done['parent_run_id']})")
                continue
            scfg, base = plan.type_config(mtype)
            parent = done.get("parent_run_id") or tracker.start_run(
                state.data["experiment_id"], f"{mtype} · {state.name}", state.data["search_run_id"],  # type first:
                tags={"mimimi.role": "type-search", "mimimi.machine_type": mtype})          # the UI truncates
            state.set_type(mtype, parent, finished=False)
            pooled = base.train.classes == "all" or "train.classes" in scfg.space  # the other types' clips too
            _warm(base, clips, None if pooled else mtype, plan.verbose)
            print(f"{mtype}: {scfg.search.num_samples} trials of up to {base.train.epochs} epochs, "
                  f"{scfg.search.max_concurrent} at a time, selected on {scfg.search.metric}", flush=True)
            results = tune_type(mtype, scfg, base, plan, state, tracker, parent, use_gpu)
            with tempfile.TemporaryDirectory() as d:
                pick = pick_best(mtype, scfg, results, f"{plan.storage}/{state.name}", Path(d))
                outcomes.append(finish_type(mtype, scfg, base, pick, plan, state, tracker, parent))
            state.set_type(mtype, parent, finished=True)
    finally:
        if ctx is not None:
            with contextlib.suppress(Exception):  # the logs are a convenience: never the reason a search fails
                keep_ray_logs(ctx, plan.storage, state.name)
    return outcomes, state, tracker


def _warm(base: Config, clips, machine_type: str | None, verbose: bool) -> None:
    """Decode and transform the training clips once, here, instead of in every trial at once (of every type
    when a trial may train on all of them: ``machine_type`` None)."""
    train = select(clips, machine_type=machine_type, split="train")
    FeatureCache(base.data.cache_dir, base.features).warm(train.path, kinds=kinds.of(base).features, progress=verbose)


def run_first_shot(plan: Plan, state: SearchState, tracker: tracking.Tracker, types: tuple[str, ...], clips,
                   use_gpu: bool) -> list[dict]:
    """A first-shot search (DCASE 2023+: nothing may be tuned per machine type): every trial trains one
    sampled configuration on every type; trials are compared on the mean over types of each type's best
    validation metric; the best trial's model of each type is then evaluated, logged, registered and
    promoted as a per-type search's is (``finish_type``), every run tagged ``mimimi.mode: first-shot``. With
    ``--fixed``: one trial of the configuration as given (the train mode)."""
    if (done := state.type(FIRST_SHOT)).get("finished"):
        print(f"{FIRST_SHOT}: finished before, skipped (parent run {done['parent_run_id']})")
        return []
    configs = {t: plan.type_config(t) for t in types}
    scfg = configs[types[0]][0]  # the same for every type (no per-type YAML)
    s = scfg.search
    eid = state.data["experiment_id"]
    parent = done.get("parent_run_id") or tracker.start_run(
        eid, f"{FIRST_SHOT} · {state.name}", state.data["search_run_id"],
        tags={"mimimi.role": "first-shot-search", "mimimi.mode": FIRST_SHOT, "mimimi.machine_types": ",".join(types)})
    state.set_type(FIRST_SHOT, parent, finished=False)
    _warm(configs[types[0]][1], clips, None, plan.verbose)
    what = "the configuration as given" if plan.fixed else f"{s.num_samples} trials, {s.max_concurrent} at a time"
    print(f"{FIRST_SHOT}: one configuration for {', '.join(types)}: {what}, selected on the mean {s.metric}",
          flush=True)
    results = tune_type(FIRST_SHOT, scfg, configs[types[0]][1], plan, state, tracker, parent, use_gpu,
                        first_shot={t: b for t, (_, b) in configs.items()})
    best = _best_trial(results, s.metric, s.mode)
    params = {k: best.config[k] for k in scfg.space}
    tracker.log_metrics(parent, {f"search/{s.metric}": shown_value(s.metric, float(best.metrics[s.metric]))})
    tracker.log_params(parent, {"best": params, "search": asdict(s), "mode": FIRST_SHOT, "fixed": plan.fixed})
    outcomes = []
    with tempfile.TemporaryDirectory() as d:
        best.checkpoint.to_directory(d)
        for t in types:
            key = f"{FIRST_SHOT}/{t}"
            if (seen := state.type(key)).get("finished"):
                continue
            type_parent = seen.get("parent_run_id") or tracker.start_run(
                eid, f"{t} · {state.name}", parent,
                tags={"mimimi.role": "type-search", "mimimi.machine_type": t, "mimimi.mode": FIRST_SHOT})
            state.set_type(key, type_parent, finished=False)
            pick = Pick(Path(d) / t / CHECKPOINT_FILE, params, shown_value(s.metric, float(best.metrics[f"{t}/{s.metric}"])),
                        len(results), sum(r.error is not None for r in results), str(best.path).rsplit("/", 1)[-1],
                        best.metrics.get("trial_id"), FIRST_SHOT)
            outcomes.append(finish_type(t, scfg, configs[t][1], pick, plan, state, tracker, type_parent))
            state.set_type(key, type_parent, finished=True)
    tracker.end_run(parent, "FINISHED")
    state.set_type(FIRST_SHOT, parent, finished=True)
    return outcomes


def baseline_markdown(outcomes: list[dict]) -> str:
    """The tuned model beside its own cross-entropy score and the training-free stats-knn baseline, per type:
    mean per-ID AUC / pAUC in % on the test split (from each type's evaluation)."""
    import pandas as pd

    table = pd.concat([o["comparison"] for o in outcomes], ignore_index=True)
    means = table[table.machine_id == "mean"]
    keys = [k for k in dict.fromkeys(means.key) if k in ("knn", "ce", "recon", "stats-knn")]
    default = means.loc[means["default"], "key"].iloc[0]
    keys = [default] + [k for k in keys if k != default]
    label = {k: ("tuned model, " + k + " (default)" if k == default else
                 "stats-knn (no training)" if k == "stats-knn" else "tuned model, " + k) for k in keys}
    lines = ["| machine type | " + " | ".join(label[k] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    cell = {(r.machine_type, r.key): f"{100 * r.auc:.2f} / {100 * r.pauc:.2f}" for r in means.itertuples()}
    for mt in dict.fromkeys(means.machine_type):
        lines.append(f"| {mt} | " + " | ".join(cell.get((mt, k), "—") for k in keys) + " |")
    avg = means.groupby("key")[["auc", "pauc"]].mean()
    lines.append("| mean | " + " | ".join(f"{100 * avg.auc[k]:.2f} / {100 * avg.pauc[k]:.2f}" for k in keys) + " |")
    return ("Mean per-ID AUC / pAUC (%) on the test split, the tuned model's scorers beside the training-free "
            "baseline:\n\n" + "\n".join(lines))


def official_line(outcomes: list[dict]) -> str:
    """The challenge's score of the whole run: every evaluated type's per-section figures pooled (each type's
    own is in its report); empty when a type has none (a section without anomalies, say)."""
    results = [o.get("official") for o in outcomes]
    if not results or any(r is None for r in results) or len({r.protocol for r in results}) != 1:
        return ""
    pooled = M.pooled_official(results)
    types = ", ".join(o["machine_type"] for o in outcomes)
    return (f"\n\nOfficial {pooled.protocol} score over {types}: {100 * pooled.score:.2f} % "
            f"({M.OFFICIAL_DESCRIPTIONS[pooled.protocol]}; the tuned model's default scorer, test split).")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    interrupts.install()
    try:
        outcomes, state, tracker = run(args)
    except KeyboardInterrupt:
        print("interrupted: continue the search with --resume (add --name to pick one)", file=sys.stderr)
        sys.exit(130)
    except SearchInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(130)
    except (SearchError, ConfigError, DatasetError, AudioError, EvaluationError, tracking.TrackingError) as e:
        sys.exit(f"error: {e}")
    if not outcomes:
        print("nothing left to run")
        return
    import pandas as pd

    per_type = pd.concat([o["per_type"] for o in outcomes], ignore_index=True)
    summary = M.results_markdown(per_type) + "\n\n" + baseline_markdown(outcomes) + official_line(outcomes)
    tracker.log_text(state.data["search_run_id"], summary, "summary.md")
    tracker.set_tags(state.data["search_run_id"], {tracking.DESCRIPTION_TAG: summary})  # the run page shows it
    tracker.end_run(state.data["search_run_id"], "FINISHED")
    print("\n" + summary)
    for o in outcomes:
        print(f"{o['machine_type']}: {o['trials']} trials ({o['errored_trials']} errored), "
              f"parent run {o['parent_run_id']}, registered mimimi-{o['machine_type']} v{o['model_version']}")
    uri = tracker.uri
    print(f"\nMLflow UI:  mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else f"\nMLflow UI:  {uri}")
    best = outcomes[0]["parent_run_id"]
    print(f"re-check:   python -m mimimi.evaluate --run-id {best}" +
          (f" --tracking-uri {uri}" if uri != tracking.default_tracking_uri() else ""))


if __name__ == "__main__":
    main()
