"""Evaluation on the test split, the DCASE 2020 way: score whole clips, AUC and pAUC per machine ID,
their arithmetic mean per type.

A clip's anomaly score is the cross-entropy of the fused head against the clip's own machine ID,
computed for every segment and aggregated (mean, or max); for the autoencoder, the mean squared
reconstruction error of its stacked log-mel frames.

    python -m mimimi.evaluate --checkpoint PATH --data-root DIR --out DIR [--aggregate mean|max]
    python -m mimimi.evaluate --run-id RUN_ID [--data-root DIR] [--tracking-uri URI]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mimimi import metrics, report
from mimimi.checkpoint import CheckpointError, load_checkpoint
from mimimi.config import Config
from mimimi.data.audio import AudioError
from mimimi.data.dataset import ClipFrames, ClipSegments
from mimimi.data.index import DatasetError, index_dataset, select
from mimimi.features import FeatureCache


class EvaluationError(ValueError):
    """Evaluation cannot run on this data (no test split, machine IDs the model never saw, ...)."""


@torch.no_grad()
def score_clips(model: nn.Module, cfg: Config, clips: pd.DataFrame, ids: dict[str, int], cache: FeatureCache,
                aggregate: str = "mean", device: str | torch.device = "cpu", progress: bool = False) -> pd.DataFrame:
    """One row per clip: the index columns plus ``score`` (higher = more anomalous) and ``pred_id``."""
    model.eval().to(device)
    inv = {i: m for m, i in ids.items()}
    is_ae = cfg.model.name == "ae"
    ds = ClipFrames(clips, cache, ids, cfg.model.ae.n_stack) if is_ae else ClipSegments(clips, cache, ids)
    scores, preds = np.empty(len(ds)), []
    for item in tqdm(ds, desc="scoring", unit="clip", leave=False, disable=not progress):
        x = item.x.to(device)
        if is_ae:
            per_part = (model(x).x_hat.float() - x).pow(2).mean(1)  # (V,) error per stacked frame
            preds.append(None)
        else:
            logits = model(x).total.float()  # (S, n_ids)
            target = torch.full((len(x),), item.machine_id, device=device)
            per_part = F.cross_entropy(logits, target, reduction="none")  # (S,)
            preds.append(inv[int(logits.log_softmax(1).mean(0).argmax())])
        scores[item.index] = metrics.aggregate(per_part.cpu().numpy(), aggregate)
    out = clips.copy()
    out["score"] = scores
    out["pred_id"] = preds
    return out


def labelled_test_clips(cfg: Config, data_root: str | Path, machine_type: str, ids: dict[str, int]) -> pd.DataFrame:
    """The labelled test clips of ``machine_type``, checked against the model's machine IDs."""
    clips = index_dataset(data_root).clips
    test = select(clips, machine_type=machine_type, split="test")
    test = test[test.label != "unknown"].reset_index(drop=True)
    if test.empty:
        raise EvaluationError(f"{data_root}: no labelled test clips of machine type {machine_type!r}")
    unseen = sorted(set(test.machine_id) - set(ids))
    if unseen:
        raise EvaluationError(f"{data_root}: test clips of {machine_type} machine ID(s) {unseen} that the model "
                              f"never saw (it knows {sorted(ids)})")
    return test


def evaluate(checkpoint: str | Path, data_root: str | Path, out_dir: str | Path, aggregate: str = "mean",
             device: str = "cpu", cache_dir: str | None = None, progress: bool = True) -> report.Report:
    """Score the test split of the checkpoint's machine type and write the full report to ``out_dir``."""
    loaded = load_checkpoint(checkpoint)
    cfg = loaded.cfg
    mtype = loaded.meta["machine_type"]
    test = labelled_test_clips(cfg, data_root, mtype, loaded.ids)
    cache = FeatureCache(cache_dir or cfg.data.cache_dir, cfg.features)
    scores = score_clips(loaded.model, cfg, test, loaded.ids, cache, aggregate, device, progress)
    return report.write_report(scores, out_dir)


def evaluate_run(run_id: str, data_root: str | None = None, aggregate: str = "mean", device: str = "cpu",
                 tracking_uri: str | None = None) -> tuple[report.Report, str]:
    """Re-check the model of an MLflow run (for a search's parent run, its best model) on the test split.

    Metrics, tables and plots go to a new evaluation run linked to the source run (tag
    ``mimimi.source_run_id``); returns the report and the new run's id.
    """
    import tempfile

    from mimimi import tracking

    tracking.configure(tracking_uri)
    source = tracking.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="mimimi-eval-") as d:
        ckpt = tracking.load_checkpoint_from_run(run_id, Path(d) / "model")
        loaded = load_checkpoint(ckpt)
        root = data_root or loaded.cfg.data.root
        rep = evaluate(ckpt, root, Path(d) / "report", aggregate, device, progress=True)
        eval_run = tracking.start_run(source.experiment_id, f"eval/{source.run_name}", tags={
            "mimimi.role": "evaluation", "mimimi.source_run_id": run_id,
            "mimimi.machine_type": loaded.meta["machine_type"], "mimimi.data_root": str(root)})
        tracking.log_params(eval_run, {"source_run_id": run_id, "data_root": str(root), "aggregate": aggregate})
        tracking.log_metrics(eval_run, {f"test/{k}": v for k, v in rep.flat_metrics().items()})
        tracking.log_artifacts(eval_run, Path(d) / "report", "evaluation")
        tracking.end_run(eval_run)
    return rep, eval_run


def main(argv: list[str] | None = None) -> None:
    from mimimi.tracking import TrackingError

    ap = argparse.ArgumentParser(prog="python -m mimimi.evaluate", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a best.pt/last.pt written by training")
    src.add_argument("--run-id", help="an MLflow run with a model (a search's parent run: its best model)")
    ap.add_argument("--data-root", default=None, help="required with --checkpoint; default with --run-id: the model's")
    ap.add_argument("--out", default=None, help="report folder (--checkpoint); with --run-id the report goes to MLflow")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store of --run-id (default: sqlite under mlruns/)")
    ap.add_argument("--aggregate", choices=["mean", "max"], default="mean", help="segment scores -> clip score")
    ap.add_argument("--cache-dir", default=None, help="default: the checkpoint config's data.cache_dir")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.checkpoint and not (args.data_root and args.out):
        ap.error("--checkpoint needs --data-root and --out")
    try:
        if args.run_id:
            rep, eval_run = evaluate_run(args.run_id, args.data_root, args.aggregate, args.device, args.tracking_uri)
        else:
            rep = evaluate(args.checkpoint, args.data_root, args.out, args.aggregate, args.device, args.cache_dir)
    except (CheckpointError, DatasetError, AudioError, EvaluationError, TrackingError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(rep.markdown)
    print(f"logged to MLflow run {eval_run} (source run {args.run_id})" if args.run_id else f"report in {args.out}")


if __name__ == "__main__":
    main()
