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

The story of a search, as ``run`` tells it: ``make_plan`` turns the arguments and YAML into a ``Plan``
(pure), ``prepare_data`` makes and checks the data, ``open_state`` starts the search's state and MLflow run
(or opens them to resume), a local Ray starts, and per machine type (``search_type``) the feature cache is
filled, as many trials at once as fit (``trials_at_once``) run in Tune (``tune_type``), and the best one is
evaluated, logged, registered and promoted (``pick_best``, ``finish_type``), all through one ``Tracker``.
``main`` is the command around it: Ctrl-C and errors, exit codes, the summary.

Only the standard library loads with this module: ``main`` installs its Ctrl-C handler and sets the console
up first, and the story then loads Ray, Optuna, MLflow and torch (seconds on a small machine). So Ctrl-C in
the first second exits 130 with one line, Ray reads the console's settings when it loads, and ``--help``
needs none of them.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a script (`python tuning/search.py`, `ray submit`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuning import console
from tuning.interrupts import INTERRUPTED, SearchError, SearchInterrupted, interrupts

if TYPE_CHECKING:  # the annotations' names; the story loads these modules inside its functions
    from mimimi.tracking import Tracker
    from tuning.plan import Plan
    from tuning.state import SearchState


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


def main(argv: list[str] | None = None) -> None:
    interrupts.install()  # first of all: Ctrl-C while the libraries load exits 130 too, not with a traceback
    try:
        args = parse_args(argv)
        console.quiet(args.verbose)  # before Ray and MLflow load: they read their console settings then
        outcomes, state, tracker = run(args)
        if not outcomes:
            print("nothing left to run")
            return
        summarize(outcomes, state, tracker)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
    except SearchInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(130)
    except SearchError as e:
        sys.exit(f"error: {e}")


@contextlib.contextmanager
def one_line_errors():
    """The libraries' errors that a user fixes (a config, the data, an audio file, the evaluation, the
    tracking store) as a ``SearchError``: one line and exit status 1, no traceback."""
    from mimimi import tracking
    from mimimi.config import ConfigError
    from mimimi.data.audio import AudioError
    from mimimi.data.index import DatasetError
    from mimimi.evaluation import EvaluationError

    try:
        yield
    except (ConfigError, DatasetError, AudioError, EvaluationError, tracking.TrackingError) as e:
        raise SearchError(str(e)) from None


def run(args: argparse.Namespace) -> tuple[list[dict], SearchState, Tracker]:
    """A search from its arguments to its outcomes (one per evaluated machine type), its state and tracker."""
    with one_line_errors():
        import ray

        from mimimi.data.index import index_dataset
        from tuning.plan import make_plan, prepare_data
        from tuning.state import open_state
        from tuning.storage import keep_ray_logs, ray_logs

        plan = make_plan(args)
        types = prepare_data(plan)
        clips = index_dataset(plan.data_root).clips
        state, tracker = open_state(plan, types)
        ctx = start_ray(plan)
        cluster = ray.cluster_resources()  # as it is now: a cluster may grow (trials_at_once)
        use_gpu = plan.use_gpu or cluster.get("GPU", 0) > 0
        if ctx is not None and not plan.verbose:
            console.log_to(ray_logs(ctx))  # what the console leaves out, kept with Ray's logs
            print(f"Ray's logs: {plan.storage}/{state.name}/ray-logs when the search stops "
                  "(--verbose shows them here)")
        try:
            if plan.first_shot:
                outcomes = search_first_shot(plan, state, tracker, types, clips, cluster, use_gpu)
            else:
                outcomes = [o for t in types if (o := search_type(t, plan, state, tracker, clips, cluster, use_gpu))]
        finally:
            if ctx is not None:
                with contextlib.suppress(Exception):  # the logs are a convenience: never the reason a search fails
                    keep_ray_logs(ctx, plan.storage, state.name)
    return outcomes, state, tracker


def start_ray(plan: Plan):
    """A Ray to run on: the cluster at ``--address``, else a new local instance (never one that a killed
    earlier run left behind). Quiet unless --verbose: workers' output and Ray's messages stay in its logs."""
    import logging

    import ray

    quiet = {} if plan.verbose else {"log_to_driver": False, "logging_level": logging.ERROR}
    if plan.address:
        return ray.init(address=plan.address, **quiet)
    if not ray.is_initialized():
        return ray.init(address="local", num_cpus=plan.num_cpus, **quiet)
    return None


def search_type(mtype: str, plan: Plan, state: SearchState, tracker: Tracker, clips, cluster: dict,
                use_gpu: bool) -> dict | None:
    """One machine type: as many trials at once as fit, the feature cache filled, the trials tuned, the best
    one evaluated, logged, registered and promoted; None when it had finished before (a resumed search)."""
    from tuning.concurrency import trials_at_once
    from tuning.finish import finish_type, pick_best
    from tuning.plan import warm_cache
    from tuning.study import tune_type

    if (done := state.type(mtype)).get("finished"):
        print(f"{mtype}: finished before, skipped (parent run {done['parent_run_id']})")
        return None
    scfg, base = plan.type_config(mtype)
    scfg = prune(scfg, base, clips, mtype)
    s = scfg.search
    at_once = trials_at_once(s.max_concurrent, scfg.resources, cluster, use_gpu, may_grow=bool(plan.address),
                             trials=s.num_samples)
    parent = done.get("parent_run_id") or tracker.start_run(
        state.data["experiment_id"], f"{mtype} · {state.name}", state.data["search_run_id"],  # type first:
        tags={"mimimi.role": "type-search", "mimimi.machine_type": mtype})          # the UI truncates
    state.set_type(mtype, parent, finished=False)
    pooled = base.train.classes == "all" or "train.classes" in scfg.space  # the other types' clips too
    warm_cache(base, clips, None if pooled else mtype, console.progress_bars())
    print(f"{mtype}: {s.num_samples} trials of up to {base.train.epochs} epochs, {at_once.trials} at a time, "
          f"selected on {s.metric}", flush=True)
    if at_once.why:
        print(f"{mtype}: {at_once.why}", flush=True)
    results = tune_type(mtype, scfg, base, plan, state, tracker, parent, use_gpu, at_once.trials)
    with tempfile.TemporaryDirectory() as d:
        pick = pick_best(mtype, scfg, results, f"{plan.storage}/{state.name}", Path(d))
        pick = pick._replace(notes={**pick.notes, "evidence": evidence_for(clips, mtype, s.metric)})
        print(f"{mtype}: {pick.notes['line']}\n{mtype}: {pick.notes['evidence']}", flush=True)
        outcome = finish_type(mtype, scfg, base, pick, plan, state, tracker, parent)
    state.set_type(mtype, parent, finished=True)
    return outcome


def evidence_for(clips, machine_type: str | None, metric: str) -> str:
    """What the objective study says about ``metric`` on data like the type's (``tuning.evidence``)."""
    from mimimi.data.index import select
    from tuning.evidence import evidence_line

    train = select(clips, machine_type=machine_type, split="train", label="normal")
    per_id = {f"{t}/{m}": n for (t, m), n in train.groupby(["machine_type", "machine_id"]).size().items()}
    return evidence_line(metric, per_id, {"source", "target"} <= set(train.domain))


def prune(scfg, base, clips, machine_type: str | None):
    """The search space without the keys that cannot change anything on this data (``space.prune_space``),
    each said in one line."""
    from mimimi.data.index import select
    from tuning.space import prune_space

    train = select(clips, split="train")
    if base.data.machine_types:
        train = train[train.machine_type.isin(base.data.machine_types)]
    mine = train if machine_type is None else train[train.machine_type == machine_type]
    has_attributes = bool((~mine.attributes.isin(["", "noAttribute"])).any())
    scfg, notes = prune_space(scfg, base, train.machine_type.nunique(), has_attributes)
    for line in notes:
        print(f"{machine_type or 'first-shot'}: {line}", flush=True)
    return scfg


def search_first_shot(plan: Plan, state: SearchState, tracker: Tracker, types: tuple[str, ...], clips,
                      cluster: dict, use_gpu: bool) -> list[dict]:
    """A first-shot search (DCASE 2023+: nothing may be tuned per machine type): every trial trains one
    sampled configuration on every type; trials are compared on the mean over types of each type's best
    validation metric; the best trial's model of each type is then evaluated, logged, registered and
    promoted as a per-type search's is (``finish_type``), every run tagged ``mimimi.mode: first-shot``. With
    ``--fixed``: one trial of the configuration as given (the train mode)."""
    from tuning.callbacks import shown_value
    from tuning.concurrency import trials_at_once
    from mimimi.training import common_backend, set_backend
    from tuning.finish import Pick, finish_type, pick_notes, rank_trials
    from tuning.plan import FIRST_SHOT, warm_cache
    from tuning.study import tune_type
    from tuning.worker import CHECKPOINT_FILE

    if (done := state.type(FIRST_SHOT)).get("finished"):
        print(f"{FIRST_SHOT}: finished before, skipped (parent run {done['parent_run_id']})")
        return []
    configs = {t: plan.type_config(t) for t in types}
    scfg = prune(configs[types[0]][0], configs[types[0]][1], clips, None)  # the same for every type
    s = scfg.search
    at_once = trials_at_once(s.max_concurrent, scfg.resources, cluster, use_gpu, may_grow=bool(plan.address),
                             trials=s.num_samples)
    eid = state.data["experiment_id"]
    parent = done.get("parent_run_id") or tracker.start_run(
        eid, f"{FIRST_SHOT} · {state.name}", state.data["search_run_id"],
        tags={"mimimi.role": "first-shot-search", "mimimi.mode": FIRST_SHOT, "mimimi.machine_types": ",".join(types)})
    state.set_type(FIRST_SHOT, parent, finished=False)
    warm_cache(configs[types[0]][1], clips, None, console.progress_bars())
    what = "the configuration as given" if plan.fixed else f"{s.num_samples} trials, {at_once.trials} at a time"
    print(f"{FIRST_SHOT}: one configuration for {', '.join(types)}: {what}, selected on the mean {s.metric}",
          flush=True)
    if at_once.why:
        print(f"{FIRST_SHOT}: {at_once.why}", flush=True)
    results = tune_type(FIRST_SHOT, scfg, configs[types[0]][1], plan, state, tracker, parent, use_gpu, at_once.trials,
                        first_shot={t: b for t, (_, b) in configs.items()})
    ranked = rank_trials(results, s.metric, s.mode, s.tie_break)
    if not ranked:
        raise SearchError(f"no trial reported {s.metric!r}; see the errors under {results.experiment_path}")
    best, notes = ranked[0].result, pick_notes(ranked, s.metric, s.tie_break)
    notes["evidence"] = evidence_for(clips[clips.machine_type.isin(types)], None, s.metric)
    print(f"{FIRST_SHOT}: {notes['line']}\n{FIRST_SHOT}: {notes['evidence']}", flush=True)
    params = {k: best.config[k] for k in scfg.space}
    tracker.log_metrics(parent, {f"search/{s.metric}": shown_value(s.metric, float(best.metrics[s.metric]))})
    tracker.log_params(parent, {"best": params, "search": asdict(s), "mode": FIRST_SHOT, "fixed": plan.fixed})
    outcomes = []
    with tempfile.TemporaryDirectory() as d:
        best.checkpoint.to_directory(d)
        paths = [Path(d) / t / CHECKPOINT_FILE for t in types]
        backend, means = common_backend(paths)  # first-shot: one back-end for every type
        for path in paths:
            set_backend(path, backend, f"the highest mean over {len(types)} machine types of the validation figure "
                                       "(first-shot: one back-end for every type)", means)
        print(f"{FIRST_SHOT}: back-end {backend} for every type (mean validation figure "
              f"{100 * means[backend]:.2f} %)", flush=True)
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
                        best.metrics.get("trial_id"), FIRST_SHOT, notes)
            outcomes.append(finish_type(t, scfg, configs[t][1], pick, plan, state, tracker, type_parent))
            state.set_type(key, type_parent, finished=True)
    tracker.end_run(parent, "FINISHED")
    state.set_type(FIRST_SHOT, parent, finished=True)
    return outcomes


def summarize(outcomes: list[dict], state: SearchState, tracker: Tracker) -> None:
    """The search's results table (per type, beside the baseline, the official score) on the console and as
    its MLflow run's ``summary.md`` and description; then where to look next."""
    import pandas as pd

    from mimimi import metrics as M
    from mimimi import tracking

    per_type = pd.concat([o["per_type"] for o in outcomes], ignore_index=True)
    summary = (M.results_markdown(per_type) + "\n\n" + baseline_markdown(outcomes) + official_line(outcomes)
               + "\n\n" + selection_markdown(outcomes))
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


def baseline_markdown(outcomes: list[dict]) -> str:
    """Per type: the back-end validation chose, then every back-end of the tuned model and the training-free
    ``stats-knn`` baseline (mean per-ID AUC / pAUC in % on the test split, from each type's evaluation), and
    the chosen back-end's gain over the baseline in AUC points."""
    import numpy as np
    import pandas as pd

    from mimimi import markdown

    table = pd.concat([o["comparison"] for o in outcomes], ignore_index=True)
    means = table[table.machine_id == "mean"]
    keys = list(dict.fromkeys(means.key))
    keys = [k for k in keys if k != "stats-knn"] + (["stats-knn"] if "stats-knn" in keys else [])
    cell = {(r.machine_type, r.key): (r.auc, r.pauc) for r in means.itertuples()}
    shown = lambda v: None if v is None else f"{100 * v[0]:.2f} / {100 * v[1]:.2f}"  # noqa: E731
    rows, picked, gains = [], [], []
    for o in outcomes:
        mt, chosen = o["machine_type"], o.get("backend")
        base, mine = cell.get((mt, "stats-knn")), cell.get((mt, chosen))
        if mine:
            picked.append(mine)
        if base and mine:
            gains.append(mine[0] - base[0])
        rows.append([mt, chosen, shown(mine), *(shown(cell.get((mt, k))) for k in keys),
                     f"{100 * gains[-1]:+.2f}" if base and mine else None])
    avg = means.groupby("key")[["auc", "pauc"]].mean()
    mean_picked = tuple(np.mean(picked, axis=0)) if len(picked) == len(outcomes) else None
    rows.append(["mean", None, shown(mean_picked), *(shown((avg.auc[k], avg.pauc[k])) for k in keys),
                 f"{100 * np.mean(gains):+.2f}" if len(gains) == len(outcomes) else None])
    head = ["machine type", "back-end (chosen on validation)", "tuned model, chosen back-end",
            *("stats-knn (no training)" if k == "stats-knn" else f"tuned model, {k}" for k in keys),
            "chosen − stats-knn (AUC points)"]
    words = [f"{o['machine_type']}: the training-free baseline won on validation" for o in outcomes
             if o.get("backend") == "stats-knn"]
    return ("Mean per-ID AUC / pAUC (%) on the test split: every back-end of the tuned model beside the "
            "training-free baseline, and the back-end validation chose (no test clip):\n\n"
            + markdown.table(head, rows) + ("\n\n" + "; ".join(words) + "." if words else ""))


def selection_markdown(outcomes: list[dict]) -> str:
    """How each type's trial was chosen: the search metric of the chosen trial, its noise (bootstrap standard
    error at its best epoch) beside the spread of the trials' figures, and the ties."""
    from mimimi import markdown

    def num(v):
        return None if v is None or v != v else f"{v:.2f}"

    rows = [[o["machine_type"], f"{n['trial']:02d}" if "trial" in n else None, num(n.get("value")),
             num(n.get("noise")), num(n.get("spread")), ", ".join(f"{t:02d}" for t in n.get("ties", [])) or None]
            for o in outcomes if (n := o.get("notes"))]
    if not rows:
        return ""
    evidence = list(dict.fromkeys(f"- {o['machine_type']}: {o['notes']['evidence']}" for o in outcomes
                                  if (o.get("notes") or {}).get("evidence")))
    return ("Selection (validation only, no test clip): a difference between trials smaller than about twice "
            "the noise is not evidence that one is better.\n\n"
            + markdown.table(["machine type", "trial chosen", "its search metric", "noise (± SE)",
                              "spread across trials (std)", "tied with"], rows)
            + ("\n\nDoes the search metric rank trials on data like this?\n\n" + "\n".join(evidence) if evidence else ""))


def official_line(outcomes: list[dict]) -> str:
    """The challenge's score of the whole run: every evaluated type's per-section figures pooled (each type's
    own is in its report); empty when a type has none (a section without anomalies, say)."""
    from mimimi import metrics as M

    results = [o.get("official") for o in outcomes]
    if not results or any(r is None for r in results) or len({r.protocol for r in results}) != 1:
        return ""
    pooled = M.pooled_official(results)
    types = ", ".join(o["machine_type"] for o in outcomes)
    return (f"\n\nOfficial {pooled.protocol} score over {types}: {100 * pooled.score:.2f} % "
            f"({M.OFFICIAL_DESCRIPTIONS[pooled.protocol]}; the tuned model's default scorer, test split).")


if __name__ == "__main__":
    main()
