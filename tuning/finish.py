"""After a type's trials have settled: the best trial picked (``pick_best``; tied trials go to the first by
folder name), its checkpoint evaluated once on the test split, logged on the type's parent run, registered as
``mimimi-<type>`` and promoted to ``champion`` when its test pAUC beats the champion's (``finish_type``).
"""
from __future__ import annotations

import contextlib
import math
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from mimimi import metrics as M
from mimimi import tracking
from mimimi.config import Config
from mimimi.checkpoint import load_checkpoint
from mimimi.evaluation import evaluate
from mimimi.training import finalize
from tuning import console
from tuning.callbacks import RATES, shown_value, trial_number
from tuning.interrupts import SearchError
from tuning.plan import Plan
from tuning.space import SearchConfig, trial_config
from tuning.state import SearchState
from tuning.storage import fetch_checkpoint, resolve_checkpoint
from tuning.worker import maybe_inject_fault


class Ranked(NamedTuple):
    """One trial as the pick sees it: its best epoch's figures."""

    result: Any  # the trial's ray.tune.Result
    number: int  # 1-based, in the order Tune created the trials (as the MLflow runs "trial 01", ...)
    value: float  # the search metric at its best epoch
    secondary: float  # the tie-break figure at that epoch (NaN when it has none)
    se: float  # the search metric's noise at that epoch (its bootstrap standard error; NaN when none)
    backend: str  # the back-end validation chose at that epoch ("" when none was reported)


def _number(result, fallback: int) -> int:
    """A trial's number as the console and MLflow show it (``trial_number``), else its place in the grid."""
    return trial_number(result.metrics.get("experiment_tag"), fallback)


def rank_trials(results, metric: str, mode: str, tie_break: str = "val_loss") -> list[Ranked]:
    """Every trial that reported ``metric``, best first: by its best value of ``metric`` (at any epoch), then
    by ``tie_break`` at that epoch (lower is better: a loss), then by creation order — never by a folder
    name, so a resumed search, whose grid Tune may order differently, picks the same trial."""
    ranked = []
    for i, r in enumerate(results):
        df = r.metrics_dataframe
        if r.error is not None or df is None or metric not in df or not df[metric].notna().any():
            continue
        row = df.loc[df[metric].idxmin() if mode == "min" else df[metric].idxmax()]  # the first best epoch

        def num(k: str) -> float:
            return float(row[k]) if k in df and pd.notna(row[k]) else math.nan

        ranked.append(Ranked(r, _number(r, i + 1), float(row[metric]), num(tie_break), num(f"{metric}_se"),
                             str(row["backend"]) if "backend" in df and pd.notna(row["backend"]) else ""))
    sign = 1.0 if mode == "min" else -1.0
    return sorted(ranked, key=lambda t: (sign * t.value, t.secondary if t.secondary == t.secondary else math.inf,
                                         t.number))


def best_trial(results, metric: str, mode: str, tie_break: str = "val_loss"):
    """The best trial of ``results`` (a ``ResultGrid``): ``rank_trials``' first."""
    ranked = rank_trials(results, metric, mode, tie_break)
    if not ranked:
        raise SearchError(f"no trial reported {metric!r}; see the errors under {results.experiment_path}")
    return ranked[0].result


def pick_notes(ranked: list[Ranked], metric: str, tie_break: str) -> dict[str, Any]:
    """What the console and MLflow say about a pick: the chosen trial, the trials tied with it and how the
    tie was broken, the trials within its noise, and the objective's noise beside its spread across trials."""
    best = ranked[0]
    pct = " %" if metric.startswith(RATES) else ""
    tied = [t for t in ranked[1:] if t.value == best.value]
    notes: dict[str, Any] = {
        "trial": best.number, "value": shown_value(metric, best.value), "backend": best.backend,
        "noise": shown_value(metric, best.se) if best.se == best.se else math.nan,
        "spread": shown_value(metric, float(np.std([t.value for t in ranked], ddof=1))) if len(ranked) > 1 else math.nan,
        "ties": [t.number for t in tied]}
    line = f"chose trial {best.number:02d}: {metric} {shown_value(metric, best.value):.2f}{pct}"
    if best.se == best.se:
        line += f" (noise ± {notes['noise']:.2f})"
    if best.backend:
        line += f", back-end {best.backend}"
    if tied:
        broken = (f"by {tie_break} ({best.secondary:.4g} against "
                  + ", ".join(f"{t.secondary:.4g}" for t in tied) + ")" if best.secondary == best.secondary
                  else f"by creation order (no {tie_break} to compare)")
        line += f"; tied with trial(s) {', '.join(f'{t.number:02d}' for t in tied)}, broken {broken}"
    if best.se == best.se:
        near = [t for t in ranked[1:] if t not in tied and abs(t.value - best.value) <= 2 * best.se]
        if near:
            line += (f"; {len(near)} more trial(s) within twice its noise "
                     f"({', '.join(f'{t.number:02d}' for t in near)}): validation cannot tell them apart")
    if notes["spread"] == notes["spread"]:
        line += f"; spread across trials (std) {notes['spread']:.2f}"
    notes["line"] = line
    return notes


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
    notes: dict | None = None  # pick_notes: the chosen trial, ties, noise


def pick_best(machine_type: str, scfg: SearchConfig, results, exp_root: str, dst: Path) -> Pick:
    """The best trial of a per-type search (``rank_trials``), its checkpoint fetched into ``dst``."""
    s = scfg.search
    ranked = rank_trials(results, s.metric, s.mode, s.tie_break)
    if not ranked:
        raise SearchError(f"no trial reported {s.metric!r}; see the errors under {results.experiment_path}")
    best = ranked[0].result
    ckpt_paths = best.metrics_dataframe.get(CHECKPOINT_PATH_KEY)
    reported = list(ckpt_paths.dropna()) if ckpt_paths is not None else []
    ckpt_path = resolve_checkpoint(reported, exp_root) if reported else None
    if ckpt_path is None:
        raise SearchError(f"{machine_type}: the best trial reported no checkpoint that still exists"
                          + (f" (last reported: {reported[-1]})" if reported else ""))
    return Pick(fetch_checkpoint(ckpt_path, exp_root, dst), {k: best.config[k] for k in scfg.space},
                shown_value(s.metric, ranked[0].value), len(results), sum(r.error is not None for r in results),
                str(best.path).rsplit("/", 1)[-1], best.metrics.get("trial_id"),
                notes=pick_notes(ranked, s.metric, s.tie_break))


def few_clips_warning(machine_type: str, choice: dict, enough: int = 10) -> str:
    """A warning line when the chosen model's validation rested on fewer than ``enough`` normal clips of some
    ID (cross-fitted), or on none; empty otherwise."""
    counts = choice.get("normals_per_id") or {}
    if not counts or min(counts.values()) >= enough:
        return ""
    few = ", ".join(f"{m}: {n}" for m, n in sorted(counts.items()) if n < enough)
    se = choice.get("se", math.nan)
    noise = f" (its noise: ± {100 * se:.1f} points)" if se == se else ""
    return (f"warning: {machine_type}: validation rests on few normal clips for ID(s) {few} (of "
            f"{sum(counts.values())} in all){noise}: trials whose figures differ by less than that are not told "
            "apart, and an ID with none is not validated at all")


def backend_words(choice: dict) -> str:
    """How the default back-end came to be, in words."""
    if not choice.get("chosen"):
        return "the model's default"
    if choice["chosen"] == "stats-knn":
        return "chosen on validation: the training-free baseline wins for this type, the network is not used"
    return choice.get("how") or "chosen on validation"


def pick_tags(pick: Pick, choice: dict, fallbacks: dict[str, dict[str, str]]) -> dict[str, str]:
    """The pick in the parent run's tags: the chosen trial, the ties, the back-end and how it was chosen, and
    where a back-end fell back for an ID (too few training clips)."""
    notes = pick.notes or {}
    fell = "; ".join(f"{b} for ID {m}: {why}" for b, by in sorted(fallbacks.items()) for m, why in sorted(by.items()))
    return {"mimimi.fallbacks": fell[:500] or "none", "mimimi.evidence": notes.get("evidence", "")[:500],"mimimi.pick": notes.get("line", "")[:500], "mimimi.pick.trial": str(notes.get("trial", "")),
            "mimimi.pick.ties": ",".join(map(str, notes.get("ties", []))),
            "mimimi.backend": str(choice.get("chosen") or ""), "mimimi.backend.how": backend_words(choice)[:500],
            "mimimi.backend.values": ", ".join(f"{k} {100 * v:.2f}" for k, v in choice.get("values", {}).items())[:500]}


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
        finalize(ckpt)  # back-ends fitted on a sample of the clips (ASHA stopped it early): refit on all
        fitted = load_checkpoint(ckpt).scoring
        choice = fitted.choice if fitted is not None else {}
        if warning := few_clips_warning(machine_type, choice):
            print(warning, file=sys.stderr, flush=True)
        report = evaluate(ckpt, plan.data_root, eval_dir, progress=False)
        # a driver killed in here and resumed finds what it logged before: each figure once, one version
        before = tracker.get_run(parent_run_id)
        if f"search/{s.metric}" not in before.metrics:
            # the search metric first: MLflow lists a run's metrics in the order they were first logged
            tracker.log_metrics(parent_run_id, {f"search/{s.metric}": pick.value})
            tracker.log_metrics(parent_run_id, report.tracked_metrics())  # every scorer and stats-knn, on test
            tracker.log_metrics(parent_run_id, {f"search/{k}": v for k, v in (pick.notes or {}).items()
                                                if k in ("noise", "spread") and v == v})
        # the chosen values as params; the space itself is one artifact (as params it buried the rest)
        tracker.log_params(parent_run_id, {"best": pick.params, "search": asdict(s), "resources": asdict(res),
                                           "mode": pick.mode, "backend": choice.get("chosen") or "default"})
        tracker.set_tags(parent_run_id, pick_tags(pick, choice, fitted.fallbacks if fitted is not None else {}))
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
            f"{auc:.2f} %, pAUC {pauc:.2f} %{official} with the {scorer} back-end ({backend_words(choice)}) on "
            f"{plan.data_root}. Champion: {champion.reason}.")
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
            "trials": pick.trials, "errored_trials": pick.errored, "champion": champion, "official": report.official,
            "backend": scorer, "choice": choice, "notes": pick.notes or {}}
