"""After a type's trials have settled: the best trial picked (``pick_best``; tied trials go to the first by
folder name), its checkpoint evaluated once on the test split, logged on the type's parent run, registered as
``mimimi-<type>`` and promoted to ``champion`` when its test pAUC beats the champion's (``finish_type``).
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from mimimi import metrics as M
from mimimi import tracking
from mimimi.config import Config
from mimimi.evaluation import evaluate
from tuning import console
from tuning.callbacks import RATES, shown_value
from tuning.interrupts import SearchError
from tuning.plan import Plan
from tuning.space import SearchConfig, trial_config
from tuning.state import SearchState
from tuning.storage import fetch_checkpoint, resolve_checkpoint
from tuning.worker import maybe_inject_fault


def best_trial(results, metric: str, mode: str):
    """The trial of ``results`` (a ``ResultGrid``) with the best ``metric`` at any epoch."""
    ok = [r for r in results if r.error is None and r.metrics_dataframe is not None
          and metric in r.metrics_dataframe and r.metrics_dataframe[metric].notna().any()]
    if not ok:
        raise SearchError(f"no trial reported {metric!r}; see the errors under {results.experiment_path}")
    best = (lambda r: r.metrics_dataframe[metric].min()) if mode == "min" else (lambda r: -r.metrics_dataframe[metric].max())
    # ties (small validation sets tie often) go to the first trial by its folder name, so a resumed search,
    # whose ResultGrid may list the trials in another order, picks the same trial
    return min(ok, key=lambda r: (best(r), str(r.path).rsplit("/", 1)[-1]))


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
    best = best_trial(results, s.metric, s.mode)
    ckpt_paths = best.metrics_dataframe.get(CHECKPOINT_PATH_KEY)
    reported = list(ckpt_paths.dropna()) if ckpt_paths is not None else []
    ckpt_path = resolve_checkpoint(reported, exp_root) if reported else None
    if ckpt_path is None:
        raise SearchError(f"{machine_type}: the best trial reported no checkpoint that still exists"
                          + (f" (last reported: {reported[-1]})" if reported else ""))
    col = best.metrics_dataframe[s.metric]
    return Pick(fetch_checkpoint(ckpt_path, exp_root, dst), {k: best.config[k] for k in scfg.space},
                shown_value(s.metric, float(col.min() if s.mode == "min" else col.max())), len(results),
                sum(r.error is not None for r in results), str(best.path).rsplit("/", 1)[-1],
                best.metrics.get("trial_id"))


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
            with console.off_console(plan.verbose):  # MLflow's "Successfully registered model …" lines
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
