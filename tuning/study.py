"""One Tune run: the trials of one machine type (or of a first-shot search) proposed by Optuna's TPE on a
study kept in SQLite (``optuna-dashboard`` opens it), stopped early by ASHA, each trained by a trial function
of ``tuning.trials`` and mirrored in MLflow by ``tuning.callbacks.TrialRuns``; a resumed search restores the
same Tune experiment and the same study.
"""
from __future__ import annotations

from pathlib import Path

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from mimimi import tracking
from mimimi.config import Config
from tuning.callbacks import TrialRuns
from tuning.interrupts import SearchInterrupted, interrupts
from tuning.plan import Plan
from tuning.space import SearchConfig
from tuning.state import SearchState
from tuning.trials import run_first_shot_trial, run_trial


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


def tune_type(machine_type: str, scfg: SearchConfig, base: Config, plan: Plan, state: SearchState,
              tracker: tracking.Tracker, parent_run_id: str, use_gpu: bool, at_once: int,
              first_shot: dict[str, Config] | None = None):
    """Run (or resume) the Tune search of one machine type, ``at_once`` trials at a time (``trials_at_once``)
    — with ``first_shot`` ({type: base config}), of one configuration for all of them (``machine_type`` is
    then ``FIRST_SHOT``); its ``ResultGrid`` once every trial settled."""
    s, res = scfg.search, scfg.resources
    exp_root = f"{plan.storage}/{state.name}"
    exp_path = f"{exp_root}/{machine_type}"
    db, study_name = optuna_db(tracker.uri, plan.storage), f"{state.name}/{machine_type}"
    db.parent.mkdir(parents=True, exist_ok=True)
    optuna_url = f"sqlite:///{db}"
    tracker.set_tags(parent_run_id, {"mimimi.optuna_storage": optuna_url, "mimimi.optuna_study": study_name})
    if not plan.verbose:  # "A new study created in RDB with name: …" stays off the console
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    if first_shot is None:
        fn = tune.with_parameters(run_trial, base=base, resources=res, use_gpu=use_gpu, storage_path=exp_root)
        scheduler = ASHAScheduler(metric=s.metric, mode=s.mode, max_t=base.train.epochs, grace_period=s.grace_period,
                                  reduction_factor=s.reduction_factor)
    else:  # one report per trial, after every type trained: nothing for ASHA to stop early
        fn = tune.with_parameters(run_first_shot_trial, bases=first_shot, resources=res, use_gpu=use_gpu,
                                  storage_path=exp_root, metric=s.metric, mode=s.mode, tie_break=s.tie_break)
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
                num_samples=s.num_samples, max_concurrent_trials=at_once, time_budget_s=s.time_budget_s),
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
