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
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`python tuning/search.py`, `ray submit`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
from tuning.space import SEARCH_CONFIGS, Resources, SearchConfig, load_search_config, trial_config
from tuning.worker import CHECKPOINT_FILE, train_worker

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
                    tracking.set_tags(run_id, {"mimimi.callback_error": msg[:500]})
    return wrapped


class TrialRuns(tune.Callback):
    """Mirror every Tune trial as an MLflow child run: params, per-epoch metrics, final status, model."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, storage_path: str,
                 machine_type: str = "", metric: str = "val_proxy_auc", mode: str = "max", num_samples: int = 0):
        self.machine_type = machine_type  # run names: "fan · trial 01" (the UI truncates long names)
        self.progress = Progress(machine_type, metric, mode, num_samples)
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.storage_path = storage_path
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id
        self.ckpts: dict[str, list[str]] = {}  # trial id -> reported checkpoint paths, oldest first (last = best)
        self.logged_step: dict[str, int] = {}  # trial id -> last metric step logged (a retrained trial repeats them)
        self.nodes: dict[str, str] = {}  # trial id -> Ray node id of its rank-0 Train worker

    def get_state(self) -> dict:  # saved with the experiment, so a resumed search keeps its runs
        return {"runs": self.runs, "ckpts": self.ckpts, "logged_step": self.logged_step}

    def set_state(self, state: dict) -> None:
        self.runs = dict(state["runs"])
        self.ckpts = {k: list(v) for k, v in state.get("ckpts", {}).items()}
        self.ckpts.update({k: [v] for k, v in state.get("best_ckpt", {}).items() if k not in self.ckpts})
        self.logged_step = dict(state.get("logged_step", {}))

    def setup(self, **info):
        interrupts.watch_tune()  # Tune has just installed its Ctrl-C handler: note Ctrl-C before it acts

    def _run(self, trial) -> str:
        if trial.trial_id not in self.runs:
            tracking.configure(self.tracking_uri)
            number = len(self.runs) + 1  # in the order Tune starts them; kept across --resume (get_state)
            run_id = tracking.start_run(self.experiment_id, f"{self.machine_type} · trial {number:02d}",
                                        self.parent_run_id,
                                        tags={"mimimi.role": "trial", "mimimi.trial_id": trial.trial_id,
                                              "mimimi.trial_name": str(trial), "mimimi.machine_type": self.machine_type})
            tracking.log_params(run_id, trial.config)
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
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if step <= self.logged_step.get(trial.trial_id, -1):
            return  # a trial trained again (a retry, a resume after a crash) repeats its epochs: logged once
        self.logged_step[trial.trial_id] = step
        numeric = {k: v for k, v in result.items() if isinstance(v, (int, float)) and (
            k in ("train_loss", "val_loss", "val_acc", "best_val_loss", "best_val_proxy_auc", "epoch_seconds")
            or k.startswith("val_proxy_auc"))}
        tracking.log_metrics(run_id, numeric, step=step)
        node = result.get("node_id")
        if node and self.nodes.get(trial.trial_id) != node:  # the node that trained it (a retry may move it)
            self.nodes[trial.trial_id] = node
            tracking.set_tags(run_id, {"mimimi.node_id": node})

    @_never_fail
    def on_trial_recover(self, iteration, trials, trial, **info):
        tracking.set_tags(self._run(trial), {"mimimi.retried": str(trial.run_metadata.num_failures)})

    @_never_fail
    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        last = trial.last_result or {}
        self.progress.settled(self._number(trial), "finished", last)
        tracking.set_tags(run_id, {"mimimi.epochs_run": str(last.get("training_iteration", 0))})
        reported = self.ckpts.get(trial.trial_id, [])
        ckpt = resolve_checkpoint(reported, self.storage_path) if reported else None
        if ckpt:
            with tempfile.TemporaryDirectory() as d:
                tracking.log_model(run_id, _fetch_checkpoint(ckpt, self.storage_path, Path(d)))
        elif reported:  # every checkpoint it reported is gone: the run says so, the search goes on
            tracking.set_tags(run_id, {"mimimi.model": "none: its checkpoints were removed before they were logged"})
        tracking.end_run(run_id, "FINISHED")

    @_never_fail
    def on_trial_error(self, iteration, trials, trial, **info):
        tracking.end_run(self._run(trial), "FAILED")
        self.progress.settled(self._number(trial), "FAILED", trial.last_result or {})

    def _number(self, trial) -> int:
        return list(self.runs).index(trial.trial_id) + 1 if trial.trial_id in self.runs else len(self.runs)


class Progress:
    """The console's view of a type's search: one line per settled trial (its metric, the best so far, how
    many are done, an estimate of the time left). Tune's own tables and Ray's logs show with --verbose."""

    def __init__(self, machine_type: str, metric: str, mode: str, total: int):
        self.machine_type, self.metric, self.mode, self.total = machine_type, metric, mode, total
        self.start, self.done, self.best = time.monotonic(), 0, None

    def settled(self, number: int, status: str, result: dict) -> str:
        self.done += 1
        value = result.get(f"best_{self.metric}", result.get(self.metric))
        if isinstance(value, (int, float)) and value == value:
            better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            self.best = value if better else self.best
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done) if self.total > self.done else 0.0
        shown = f"{value:.3f}" if isinstance(value, (int, float)) and value == value else "—"
        best = f"{self.best:.3f}" if self.best is not None else "—"
        line = (f"{self.machine_type}: trial {number:02d} {status} after {result.get('training_iteration', 0)} "
                f"epoch(s), {self.metric} {shown}; best {best}; {self.done}/{self.total or '?'} trials"
                + (f", about {left / 60:.0f} min left" if left >= 60 else ", under a minute left" if left else ""))
        print(line, flush=True)
        return line


# ---------------------------------------------------------------------------------------------
# one machine type

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


def _best_trial(results, metric: str, mode: str):
    ok = [r for r in results if r.error is None and r.metrics_dataframe is not None
          and metric in r.metrics_dataframe and r.metrics_dataframe[metric].notna().any()]
    if not ok:
        raise SearchError(f"no trial reported {metric!r}; see the errors under {results.experiment_path}")
    key = (lambda r: r.metrics_dataframe[metric].min()) if mode == "min" else (lambda r: -r.metrics_dataframe[metric].max())
    return min(ok, key=key)


def search_type(machine_type: str, scfg: SearchConfig, base: Config, *, storage: Path | str, name: str,
                resume: bool, tracking_uri: str, experiment_id: str, parent_run_id: str,
                use_gpu: bool, data_root: str, verbose: bool = False) -> dict[str, Any]:
    """Run (or resume) the search of one machine type; evaluate its best checkpoint; log everything."""
    s, res = scfg.search, scfg.resources
    exp_root = f"{storage}/{name}"
    exp_path = f"{exp_root}/{machine_type}"
    db, study_name = optuna_db(tracking_uri, storage), f"{name}/{machine_type}"
    db.parent.mkdir(parents=True, exist_ok=True)
    optuna_url = f"sqlite:///{db}"
    tracking.set_tags(parent_run_id, {"mimimi.optuna_storage": optuna_url, "mimimi.optuna_study": study_name})
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=to_dict(base), resources=asdict(res), use_gpu=use_gpu,
                             storage_path=exp_root),
        {"CPU": res.trial_cpus})
    if resume and tune.Tuner.can_restore(exp_path):
        tuner = tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={k: p.to_tune() for k, p in scfg.space.items()},
            tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(metric=s.metric, mode=s.mode, seed=s.seed, study_name=study_name,
                                        storage=optuna.storages.RDBStorage(optuna_url)),
                scheduler=ASHAScheduler(metric=s.metric, mode=s.mode, max_t=base.train.epochs, grace_period=s.grace_period,
                                        reduction_factor=s.reduction_factor),
                num_samples=s.num_samples, max_concurrent_trials=s.max_concurrent, time_budget_s=s.time_budget_s),
            run_config=tune.RunConfig(
                name=machine_type, storage_path=exp_root,
                failure_config=tune.FailureConfig(max_failures=s.max_failures),
                callbacks=[TrialRuns(tracking_uri, experiment_id, parent_run_id, exp_root, machine_type, s.metric,
                                     s.mode, s.num_samples)],
                verbose=1 if verbose else 0),
        )
    results = tuner.fit()
    # the saved experiment state lists every trial, pending ones too (the returned grid may not)
    trials = tune.ExperimentAnalysis(exp_path).trials
    settled = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
    if settled < len(trials) or (s.time_budget_s is None and len(trials) < s.num_samples):
        raise SearchInterrupted(f"{machine_type}: search interrupted after {settled} of {s.num_samples} trials; "
                                f"continue it with --resume --name {name}")
    if interrupts.requested:  # Ctrl-C while the last trials finished: Tune saved its state, nothing else runs
        raise SearchInterrupted(f"{machine_type}: interrupted; continue it with --resume --name {name}")
    best = _best_trial(results, s.metric, s.mode)
    ckpt_paths = best.metrics_dataframe.get(CHECKPOINT_PATH_KEY)
    reported = list(ckpt_paths.dropna()) if ckpt_paths is not None else []
    ckpt_path = resolve_checkpoint(reported, exp_root) if reported else None
    if ckpt_path is None:
        raise SearchError(f"{machine_type}: the best trial reported no checkpoint that still exists"
                          + (f" (last reported: {reported[-1]})" if reported else ""))
    best_params = {k: best.config[k] for k in scfg.space}
    best_cfg = trial_config(base, best_params)

    with tempfile.TemporaryDirectory() as d:
        ckpt = _fetch_checkpoint(ckpt_path, exp_root, Path(d))
        eval_dir = Path(tempfile.mkdtemp(prefix=f"mimimi-eval-{machine_type}-"))
        try:
            report = evaluate(ckpt, data_root, eval_dir, progress=False)
            # the chosen values as params; the space itself is one artifact (as params it buried the rest)
            tracking.log_params(parent_run_id, {"best": best_params, "search": asdict(s), "resources": asdict(res)})
            tracking.log_dict(parent_run_id, {k: asdict(p) for k, p in scfg.space.items()}, "search_space.json")
            tracking.log_dict(parent_run_id, best_cfg, "best_config.json")
            tracking.log_metrics(parent_run_id, {f"test/{k}": v for k, v in report.flat_metrics().items()})
            tracking.log_metrics(parent_run_id, report.comparison_metrics())  # every scorer and stats-knn, on test
            col = best.metrics_dataframe[s.metric]
            tracking.log_metrics(parent_run_id, {f"val/{s.metric}": float(col.min() if s.mode == "min" else col.max())})
            tracking.log_artifacts(parent_run_id, eval_dir, "evaluation")
            # --- mimimi.score: the model carries its normal-only thresholds (in the checkpoint), and the
            # alias "champion" moves to it only if its test pAUC beats the current champion's
            model = tracking.log_model(parent_run_id, ckpt, registered_name=f"mimimi-{machine_type}")
            champion = tracking.update_champion(f"mimimi-{machine_type}", model.version,
                                                f"test/{machine_type}/mean_pauc", parent_run_id)
            row = report.per_type.iloc[0]
            scorer = report.comparison.loc[report.comparison["default"], "key"].iloc[0]
            tracking.describe_version(
                f"mimimi-{machine_type}", model.version,
                f"{machine_type}: best of {len(results)} trials of search {name!r} by {s.metric} ({s.mode}); "
                f"test mean per-ID AUC {100 * row.mean_auc:.2f} %, pAUC {100 * row.mean_pauc:.2f} % with the "
                f"{scorer} scorer on {data_root}. Champion: {champion.reason}.",
                {"mimimi.machine_type": machine_type, "mimimi.search": name, "mimimi.data_root": data_root,
                 "mimimi.metric": s.metric, "mimimi.scorer": scorer, "mimimi.test_mean_auc": f"{row.mean_auc:.4f}",
                 "mimimi.test_mean_pauc": f"{row.mean_pauc:.4f}", "mimimi.champion": str(champion.promoted).lower()})
            # --- end mimimi.score
            trial_runs = {r.tags.get("mimimi.trial_id"): r.run_id for r in tracking.child_runs(parent_run_id)}
            tracking.set_tags(parent_run_id, {"mimimi.best_trial": str(best.path).rsplit("/", 1)[-1],
                                              "mimimi.best_trial_run_id": trial_runs.get(best.metrics.get("trial_id"), ""),
                                              "mimimi.registered_version": str(model.version)})
        finally:
            shutil.rmtree(eval_dir, ignore_errors=True)
    n_err = sum(r.error is not None for r in results)
    tracking.end_run(parent_run_id, "FINISHED")
    return {"machine_type": machine_type, "per_type": report.per_type, "markdown": report.markdown,
            "comparison": report.comparison,
            "parent_run_id": parent_run_id, "model_version": model.version, "trials": len(results),
            "errored_trials": n_err, "champion": champion}


# ---------------------------------------------------------------------------------------------
# the driver

def _load_state(storage: str, name: str) -> dict:
    from pyarrow.fs import FileType

    fs, root = _storage_fs(storage)
    path = f"{root}/{name}/{STATE_FILE}"
    if fs.get_file_info(path).type != FileType.File:
        return {}
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def _save_state(storage: str, name: str, state: dict) -> None:
    """Write the search state beside Tune's experiments (on the cloud store too: ``--resume`` from any
    machine that can reach it); a whole new object each time, never a half-written one."""
    fs, root = _storage_fs(storage)
    fs.create_dir(f"{root}/{name}", recursive=True)
    data = json.dumps(state, indent=1).encode()
    tmp = f"{root}/{name}/{STATE_FILE}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, f"{root}/{name}/{STATE_FILE}")


def _latest_search(storage: str) -> str | None:
    from pyarrow.fs import FileSelector, FileType

    fs, root = _storage_fs(storage)
    dirs = [i.base_name for i in fs.get_file_info(FileSelector(root, allow_not_found=True))
            if i.type == FileType.Directory]
    found = [d for d in dirs if fs.get_file_info(f"{root}/{d}/{STATE_FILE}").type == FileType.File]
    return max(found) if found else None


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
    ap.add_argument("--use-gpu", action="store_true",
                    help="give every Train worker a GPU even while the cluster has none, so that an autoscaler "
                         "adds GPU nodes (default: GPUs only when the cluster has some at the start)")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> tuple[list[dict], dict]:
    if not args.verbose:
        for name in ("mlflow", "optuna"):  # "Creating initial MLflow database tables", "A new study created"
            logging.getLogger(name).setLevel(logging.WARNING)
        # Tune's new output engine prints its experiment box even when silent; the legacy one honours verbose=0
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    storage = args.storage_path if "://" in args.storage_path else str(Path(args.storage_path).resolve())
    extra = list(args.search_config)
    search_configs = SEARCH_CONFIGS  # next to the installed package: `ray submit` copies this script alone
    if args.smoke_test:
        extra.insert(0, str(search_configs / "smoke.yaml"))
    elif not args.data_root:  # the embedded default: synthetic data and a laptop-sized budget
        extra.insert(0, str(search_configs / "embedded.yaml"))

    # data: the synthetic set of the embedded default (or of the smoke test) is generated when absent
    spec = load_search_config("", extra).synthetic
    if not args.data_root and spec is None:
        raise SearchError(f"no --data-root, and the search configs {extra} give no synthetic: set")
    if args.data_root:
        data_root = str(Path(args.data_root).resolve())
    elif args.smoke_test:
        data_root = str(Path(storage) / "smoke-data") if "://" not in storage else str(Path("runs/smoke-data").resolve())
        if not Path(data_root).exists():
            synth.generate(data_root, **asdict(spec))
    else:
        data_root = str(Path("data/synthetic").resolve())
        spec_file = Path(data_root) / ".spec.json"  # dot files are not indexed
        wanted = json.dumps(asdict(spec), sort_keys=True)
        if not spec_file.is_file() or spec_file.read_text() != wanted:  # absent, or made with other settings
            if Path(data_root).exists():
                print(f"{data_root} was generated with other settings: regenerating it")
                shutil.rmtree(data_root)
            print(f"generating the embedded synthetic dataset into {data_root} …")
            synth.generate(data_root, **asdict(spec), workers=2)
            spec_file.write_text(wanted)
    clips = index_dataset(data_root).clips
    types = args.machine_types.split(",") if args.machine_types else sorted(set(clips.machine_type))
    if missing := [t for t in types if t not in set(clips.machine_type)]:
        raise SearchError(f"{data_root}: no clips of machine type(s) {missing} (found {sorted(set(clips.machine_type))})")

    name = args.name
    if args.resume:
        name = name or _latest_search(storage)
        if not name or not _load_state(storage, name):
            raise SearchError(f"nothing to resume under {storage}" + (f" named {args.name!r}" if args.name else ""))
    name = name or time.strftime("search-%Y%m%d-%H%M%S")
    state = _load_state(storage, name) if args.resume else {}

    tracking_uri = tracking.configure(args.tracking_uri or state.get("tracking_uri"))
    experiment_id = tracking.ensure_experiment(args.experiment, tracking_uri)
    if not state:
        search_run = tracking.start_run(experiment_id, name, tags={"mimimi.role": "search", "mimimi.storage": storage})
        state = {"name": name, "tracking_uri": tracking_uri, "experiment_id": experiment_id,
                 "search_run_id": search_run, "data_root": data_root, "types": {}}
        tracking.log_params(search_run, {"machine_types": ",".join(types), "data_root": data_root,
                                         "smoke_test": args.smoke_test, "storage_path": storage})
    _save_state(storage, name, state)

    # quiet unless --verbose: the workers' output and Ray's own messages stay in Ray's log files
    quiet = {} if args.verbose else {"log_to_driver": False, "logging_level": logging.ERROR}
    if args.address:
        ctx = ray.init(address=args.address, **quiet)
    elif not ray.is_initialized():  # "local": a new instance, never one a killed earlier run left behind
        ctx = ray.init(address="local", num_cpus=args.num_cpus, **quiet)
    else:
        ctx = None
    use_gpu = args.use_gpu or ray.cluster_resources().get("GPU", 0) > 0
    session = (getattr(ctx, "address_info", None) or {}).get("session_dir")
    if session and not args.verbose:
        print(f"Ray's logs: {session}/logs (--verbose shows them here)")

    outcomes = []
    for mtype in types:
        scfg = load_search_config(mtype, extra)
        if args.num_samples:
            scfg = type(scfg)(merge(scfg.search, {"num_samples": args.num_samples}), scfg.resources, scfg.space, scfg.config)
        if args.max_concurrent:
            scfg = type(scfg)(merge(scfg.search, {"max_concurrent": args.max_concurrent}), scfg.resources, scfg.space, scfg.config)
        base = load_config(*args.config, overrides=scfg.config)
        base = merge(base, {"data": {"root": data_root, "cache_dir": str(Path(data_root).parent / "cache")
                                     if args.smoke_test else str(Path(base.data.cache_dir).resolve())},
                            "train": {"machine_type": mtype, "progress": False}})
        done = state["types"].get(mtype, {})
        if done.get("finished"):
            print(f"{mtype}: finished before, skipped (parent run {done['parent_run_id']})")
            continue
        parent = done.get("parent_run_id") or tracking.start_run(
            experiment_id, f"{mtype} · {name}", state["search_run_id"],  # the type first: the UI truncates
            tags={"mimimi.role": "type-search", "mimimi.machine_type": mtype})
        state["types"][mtype] = {"parent_run_id": parent, "finished": False}
        _save_state(storage, name, state)
        # decode and transform every training clip once, here, instead of in every trial at once (of every
        # type when a trial may train on all: train.classes=all, and the other types' proxy clips)
        pooled = base.train.classes == "all" or "train.classes" in scfg.space
        train = select(clips, machine_type=None if pooled else mtype, split="train")
        FeatureCache(base.data.cache_dir, base.features).warm(train.path, kinds=kinds.of(base).features)
        print(f"{mtype}: {scfg.search.num_samples} trials of up to {base.train.epochs} epochs, "
              f"{scfg.search.max_concurrent} at a time, selected on {scfg.search.metric}", flush=True)
        out = search_type(mtype, scfg, base, storage=storage, name=name, resume=args.resume,
                          tracking_uri=tracking_uri, experiment_id=experiment_id, parent_run_id=parent,
                          use_gpu=use_gpu, data_root=data_root, verbose=args.verbose)
        state["types"][mtype]["finished"] = True
        _save_state(storage, name, state)
        outcomes.append(out)
    return outcomes, state


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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    interrupts.install()
    try:
        outcomes, state = run(args)
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
    summary = M.results_markdown(per_type) + "\n\n" + baseline_markdown(outcomes)
    tracking.log_text(state["search_run_id"], summary, "summary.md")
    tracking.end_run(state["search_run_id"], "FINISHED")
    print("\n" + summary)
    for o in outcomes:
        print(f"{o['machine_type']}: {o['trials']} trials ({o['errored_trials']} errored), "
              f"parent run {o['parent_run_id']}, registered mimimi-{o['machine_type']} v{o['model_version']}")
    uri = state["tracking_uri"]
    print(f"\nMLflow UI:  mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else f"\nMLflow UI:  {uri}")
    best = outcomes[0]["parent_run_id"]
    print(f"re-check:   python -m mimimi.evaluate --run-id {best}" +
          (f" --tracking-uri {uri}" if uri != tracking.default_tracking_uri() else ""))


if __name__ == "__main__":
    main()
