"""The Tune -> MLflow callback: every trial of a search mirrored as an MLflow child run (its parameters,
per-epoch metrics, final status and model), and the console's one line per settled trial (``Progress``).

``TrialRuns`` runs in the Tune driver: a failing MLflow call inside it is one warning line and a tag on the
trial's run, never a failed trial (``_never_fail``); a resumed search reads back from MLflow what it logged
before, so every trial keeps one run, one model and each epoch once.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import tempfile
import time
from pathlib import Path

from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from mimimi import metrics as M
from mimimi import tracking
from tuning.interrupts import interrupts
from tuning.storage import fetch_checkpoint, resolve_checkpoint
from tuning.worker import maybe_inject_fault


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
        self.backends: dict[str, str] = {}  # trial id -> the back-end its last epoch chose
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
            number = trial_number(trial.experiment_tag, len(self.runs) + 1)  # the same on --resume and in the pick
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
        best = {f"best_{k}" for k in (self.metric, f"{self.metric}_se", "cv_proxy_auc", "val_proxy_auc", "val_loss")}
        numeric = {k: shown_value(k, v) for k, v in result.items() if isinstance(v, (int, float)) and (
            k in ("train_loss", "val_loss", "val_acc", "epoch_seconds", "validation_seconds",
                  "validation_network_seconds", "validation_backend_seconds") or k in best
            or (k.startswith(RATES) and not k.startswith("best_")) or k.startswith("backend/")
            or k.endswith(f"/{self.metric}"))}  # first-shot: <type>/<metric>; of the best_* figures, the chosen few
        self.tracker.log_metrics(run_id, mlflow_names(numeric, self.metric), step=step)
        if result.get("backend") and self.backends.get(trial.trial_id) != result["backend"]:
            self.backends[trial.trial_id] = result["backend"]  # validation's choice this epoch
            self.tracker.set_tags(run_id, {"mimimi.backend": result["backend"]})
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
        status = "stopped early by ASHA" if last.get("final") is False else "finished"  # per-type trials say final
        self.progress.settled(self._number(trial), status, last, _settled(trials, trial))
        self.tracker.set_tags(run_id, {"mimimi.epochs_run": str(_epochs(last))})
        reported = self.ckpts.get(trial.trial_id, [])
        ckpt = resolve_checkpoint(reported, self.storage_path) if reported else None
        if tracking.MODEL_URI_TAG in self.tracker.get_run(run_id).tags:
            pass  # logged before the driver was killed and the search resumed: once is enough
        elif ckpt:
            with tempfile.TemporaryDirectory() as d:
                self.tracker.log_model(run_id, fetch_checkpoint(ckpt, self.storage_path, Path(d)))
        elif reported:  # every checkpoint it reported is gone: the run says so, the search goes on
            self.tracker.set_tags(run_id, {"mimimi.model": "none: its checkpoints were removed before they were logged"})
        self.tracker.end_run(run_id, "FINISHED")
        maybe_inject_fault("driver-after-trial")

    @_never_fail
    def on_trial_error(self, iteration, trials, trial, **info):
        self.tracker.end_run(self._run(trial), "FAILED")
        self.progress.settled(self._number(trial), "FAILED", trial.last_result or {}, _settled(trials, trial))

    def _number(self, trial) -> int:
        known = list(self.runs)
        return trial_number(trial.experiment_tag,
                            known.index(trial.trial_id) + 1 if trial.trial_id in known else len(known))


def trial_number(experiment_tag: str | None, fallback: int) -> int:
    """A trial's number as the console, its MLflow run ("fan · trial 01") and the pick show it: the order in
    which Tune's search generator created it, the counter its experiment tag starts with (``"3_lr=0.001,…"``,
    1-based, restored with the searcher on --resume), else ``fallback``. Never read from the trial id: an
    Optuna trial's id is 8 random hex digits, all decimal digits for about one trial in 43.

    >>> trial_number("3_lr=0.001,head=gap", 1), trial_number("", 7), trial_number(None, 7)
    (3, 7, 7)
    """
    head = str(experiment_tag or "").split("_", 1)[0]
    return int(head) if head.isdigit() else fallback


# as Tune sees them: fractions (and their standard errors, *_se); MLflow and the console show percent
RATES = ("val_acc", "val_proxy_auc", "cv_proxy_auc", "best_val_proxy_auc", "best_cv_proxy_auc")


def shown_value(key: str, value: float) -> float:
    """A trial metric as MLflow and the console show it: rates in percent (``metrics.percent``), the rest as
    reported (losses, seconds). Tune, ASHA and Optuna work on the reported fractions."""
    rate = any(part.startswith(RATES) for part in key.split("/"))  # cv_proxy_auc/tone, backend/knn/cv_proxy_auc
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
