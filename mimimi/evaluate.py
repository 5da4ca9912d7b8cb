"""The ``mimimi evaluate`` command: evaluate a model on the test split of its data and print the report.

    python -m mimimi.evaluate --checkpoint PATH --data-root DIR --out DIR [--scorer gmm] [--aggregate mean|max]
    python -m mimimi.evaluate --run-id RUN_ID [--data-root DIR] [--out DIR] [--tracking-uri URI]

With ``--checkpoint``, the report goes to ``--out``; with ``--run-id`` (the model of an MLflow run; a
search's parent run stands for its best model) it goes to a new evaluation run in MLflow, tagged with the
source run, and also to ``--out`` when given. The library is ``mimimi.evaluation``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mimimi import report, verify
from mimimi.checkpoint import CheckpointError, load_checkpoint
from mimimi.data.audio import AudioError
from mimimi.data.index import DatasetError
from mimimi.evaluation import EvaluationError, evaluate

if TYPE_CHECKING:  # MLflow is imported only by --run-id
    from mimimi.tracking import Tracker


def evaluate_run(tracker: Tracker, run_id: str, data_root: str | None = None, aggregate: str = "mean",
                 device: str = "cpu", scorer: str | None = None, precision: str | None = None,
                 ground_truth: str | Path | None = None, out_dir: str | Path | None = None,
                 cache_dir: str | None = None) -> tuple[report.Report, str]:
    """Re-check the model of an MLflow run (for a search's parent run, its best model) on the test split.

    Metrics, tables and plots go to a new evaluation run in ``tracker``'s store, linked to the source run
    (tag ``mimimi.source_run_id``), and to ``out_dir`` when given; returns the report and the new run's id.
    """
    source = tracker.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="mimimi-eval-") as d:
        ckpt = tracker.load_checkpoint_from_run(run_id, Path(d) / "model")
        loaded = load_checkpoint(ckpt)
        root = data_root or loaded.cfg.data.root
        folder = Path(out_dir) if out_dir else Path(d) / "report"
        rep = evaluate(ckpt, root, folder, aggregate, device, cache_dir, progress=sys.stderr.isatty(), scorer=scorer,
                       precision=precision, ground_truth=ground_truth)
        eval_run = tracker.start_run(source.experiment_id, f"eval/{source.run_name}", tags={
            "mimimi.role": "evaluation", "mimimi.source_run_id": run_id,
            "mimimi.machine_type": loaded.meta["machine_type"], "mimimi.data_root": str(root)})
        tracker.log_params(eval_run, {"source_run_id": run_id, "data_root": str(root), "aggregate": aggregate,
                                      "scorer": scorer or "default"})
        tracker.log_metrics(eval_run, rep.tracked_metrics())
        tracker.log_artifacts(eval_run, folder, "evaluation")
        tracker.end_run(eval_run)
    return rep, eval_run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mimimi.evaluate", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a best.pt/last.pt written by training")
    src.add_argument("--run-id", help="an MLflow run with a model (a search's parent run: its best model)")
    ap.add_argument("--data-root", default=None, help="required with --checkpoint; default with --run-id: the model's")
    ap.add_argument("--out", default=None, help="report folder (required with --checkpoint; with --run-id the report "
                                                "goes to MLflow, and here too when given)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store of --run-id (default: sqlite under mlruns/)")
    ap.add_argument("--ground-truth", default=None,
                    help="the challenge's ground-truth folder of an evaluation set whose labels are hidden")
    ap.add_argument("--aggregate", choices=["mean", "max"], default="mean", help="segment scores -> clip score")
    ap.add_argument("--scorer", default=None, help="ce, recon, knn, mahalanobis, gmm or knn-stats (default: the "
                                                   "model's); every scorer is reported side by side")
    ap.add_argument("--cache-dir", default=None, help="feature cache (default: the model config's data.cache_dir)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None,
                    help="the network's precision (default: the model's scoring.precision)")
    args = ap.parse_args(argv)
    if args.checkpoint and not (args.data_root and args.out):
        ap.error("--checkpoint needs --data-root and --out")
    try:
        if args.run_id:
            from mimimi.tracking import Tracker  # MLflow only for --run-id

            rep, eval_run = evaluate_run(Tracker(args.tracking_uri), args.run_id, args.data_root, args.aggregate,
                                         args.device, args.scorer, args.precision, args.ground_truth, args.out,
                                         args.cache_dir)
        else:
            unverified = verify.verify_checkpoint_file(args.checkpoint) is None  # checked as mimimi score checks it
            rep = evaluate(args.checkpoint, args.data_root, args.out, args.aggregate, args.device, args.cache_dir,
                           progress=sys.stderr.isatty(), scorer=args.scorer, precision=args.precision,
                           ground_truth=args.ground_truth)
    except (CheckpointError, DatasetError, AudioError, EvaluationError, ValueError) as e:
        sys.exit(f"error: {str(e).splitlines()[0] if str(e) else e}")
    print(rep.markdown)
    if args.checkpoint and unverified:
        print(f"note: {args.checkpoint}: no {Path(args.checkpoint).name}.sha256 beside it, so whether it changed "
              "since training could not be checked (it was read as weights only)", file=sys.stderr)
    where = f"; report in {args.out}" if args.out else ""
    print(f"logged to MLflow run {eval_run} (source run {args.run_id}){where}" if args.run_id
          else f"report in {args.out}")


if __name__ == "__main__":
    main()
