"""The ``mimimi score`` command: score new recordings with a model, one row per file (anomaly score, machine
ID, decision).

    python -m mimimi.score --checkpoint runs/fan/best.pt PATH...          # what `mimimi train` wrote
    python -m mimimi.score --machine-type fan PATH...                      # models:/mimimi-fan@champion
    python -m mimimi.score --model models:/mimimi-fan/3 PATH... [--format table|csv|json] [--output FILE]
    python -m mimimi.score --run-id RUN_ID PATH... [--machine-id 02] [--tracking-uri URI]

PATH is a wav file or a folder (searched recursively for ``*.wav``). Files of any channel count and
sample rate are decoded as for training. The machine ID comes from the file name (``..._id_02_...``) or an
``id_02`` folder, or from ``--machine-id``. ``--scorer`` picks the anomaly score (default: the model's).
A model is verified before it is loaded (``mimimi.verify``): a logged model against the digests recorded
when it was logged, a checkpoint file against the ``.sha256`` training wrote beside it. Reading a model from
MLflow never creates a tracking store.

A file that cannot be scored is reported on stderr (one line naming it), the others are still scored,
and the exit status is 1; 2 when nothing can be scored (usage, a model that cannot be loaded, or no
file that could be scored). The scoring itself is ``mimimi.scoring.clips``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mimimi import verify
from mimimi.checkpoint import CheckpointError, load_checkpoint
from mimimi.config import merge
from mimimi.scoring.clips import (AGGREGATES, COLUMNS, Model, ScoreError, find_audio, machine_id_of, score_paths,
                                  scorer_used, thresholds_for)

if TYPE_CHECKING:  # MLflow only for a model given by URI or run id
    from mimimi.tracking import Tracker

FORMATS = ("table", "csv", "json")


def load_model(tracker: Tracker, model_uri: str | None = None, *, run_id: str | None = None) -> Model:
    """The model of a ``models:/`` or ``runs:/`` URI, or of an MLflow run (a search's parent run: its best
    model) in ``tracker``'s store, with its stored thresholds. Raises ``TrackingError`` or ``CheckpointError``
    (one line)."""
    with tempfile.TemporaryDirectory(prefix="mimimi-model-") as d:
        resolved = tracker.resolve_model(model_uri, run_id=run_id, dst_dir=d)
        loaded = load_checkpoint(resolved.checkpoint)
    return Model(loaded, resolved.thresholds, resolved.uri, resolved.version)


def load_checkpoint_file(path: str | Path) -> tuple[Model, str | None]:
    """A checkpoint that ``mimimi train`` wrote, verified against the digest beside it; (the model, a note
    when it had no digest to check)."""
    digest = verify.verify_checkpoint_file(path)
    note = (None if digest is not None else
            f"{path}: no {Path(path).name}.sha256 beside it, so whether it changed since training cannot be "
            "checked (it is read as weights only: no code in it runs)")
    return Model(load_checkpoint(path), None, str(path), None), note


def _jsonable(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def format_scores(scores: pd.DataFrame, fmt: str = "table") -> str:
    """``scores`` (``COLUMNS``) as an aligned text table, CSV, or a JSON list of records (full precision)."""
    if fmt == "csv":
        return scores.to_csv(index=False)
    if fmt == "json":
        records = [{k: _jsonable(v) for k, v in r.items()} for r in scores.astype(object).to_dict("records")]
        return json.dumps(records, indent=1, allow_nan=False) + "\n"
    if fmt != "table":
        raise ScoreError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    rows = [[str(r.path), str(r.machine_id), f"{r.score:.6g}", r.decision or "—",
             "—" if r.threshold is None or pd.isna(r.threshold) else f"{r.threshold:.6g}",
             "—" if r.pred_id is None or pd.isna(r.pred_id) else str(r.pred_id)]
            for r in scores.itertuples()]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]
    right = {"score", "threshold"}
    lines = ["  ".join(c.rjust(w) if c in right else c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    lines += ["  ".join(v.rjust(w) if c in right else v.ljust(w) for c, v, w in zip(COLUMNS, row, widths)).rstrip()
              for row in rows]
    return "\n".join(lines) + "\n"


def chosen_words(loaded, scorer: str | None) -> str:
    """How the model's default back-end was chosen, when it is the one in use: `` (chosen on validation:
    cv_proxy_auc 84.96 %)``; empty otherwise."""
    fitted = loaded.scoring
    if fitted is None or not fitted.choice or scorer not in (None, "", "default", fitted.default):
        return ""
    value = fitted.choice.get("values", {}).get(fitted.default)
    figure = f": {fitted.choice.get('metric')} {100 * value:.2f} %" if isinstance(value, float) else ""
    return f" (chosen on validation{figure})"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mimimi.score", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", metavar="PATH", help="wav files and folders (searched recursively)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="a best.pt written by `mimimi train` (no MLflow involved)")
    src.add_argument("--model", help="an MLflow model URI, e.g. models:/mimimi-fan@champion, models:/mimimi-fan/3")
    src.add_argument("--run-id", help="an MLflow run with a model (a search's parent run: its best model)")
    ap.add_argument("--machine-type", help="default --model: models:/mimimi-<type>@champion")
    ap.add_argument("--machine-id", help="the machine ID of every file (default: from each file's name or folder)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                                                         "sqlite under mlruns/); never created by scoring")
    ap.add_argument("--format", choices=FORMATS, default="table")
    ap.add_argument("--output", default=None, help="write the output to this file instead of stdout")
    ap.add_argument("--scorer", default=None, help="a scorer stored with the model (default: the model's choice)")
    ap.add_argument("--aggregate", choices=AGGREGATES, default="mean", help="segment scores -> clip score")
    ap.add_argument("--batch-size", type=int, default=32, help="files decoded and scored at a time")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None,
                    help="the network's precision (default: the model's scoring.precision)")
    return ap


def _model(args: argparse.Namespace) -> Model:
    """The model the arguments name, verified and loaded (a note for a checkpoint without a digest on stderr)."""
    if args.checkpoint:
        model, note = load_checkpoint_file(args.checkpoint)
        if note:
            print(f"note: {note}", file=sys.stderr)
        return model
    from mimimi import tracking  # the CLI's MLflow side; scoring itself never imports MLflow

    uri = args.model or (None if args.run_id else f"models:/mimimi-{args.machine_type}@champion")
    return load_model(tracking.Tracker(args.tracking_uri, create=False), uri, run_id=args.run_id)


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if not (args.checkpoint or args.model or args.run_id or args.machine_type):
        ap.error("give --checkpoint, --model, --run-id or --machine-type")
    if args.batch_size < 1:
        ap.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.checkpoint and args.tracking_uri:
        ap.error("--tracking-uri is for --model, --run-id and --machine-type; --checkpoint reads a file")
    try:
        model = _model(args)
        if args.precision:
            cfg = merge(model.loaded.cfg, {"scoring": {"precision": args.precision}})
            model = model._replace(loaded=model.loaded._replace(cfg=cfg))
        mtype = model.loaded.meta.get("machine_type")
        if args.machine_type and mtype and args.machine_type != mtype:
            raise ScoreError(f"{model.uri} is a model of {mtype!r}, not of --machine-type {args.machine_type!r}")
        given = machine_id_of("--machine-id", args.machine_id, model.loaded.ids) if args.machine_id else None
        thresholds = thresholds_for(model.loaded, args.scorer, model.thresholds)
    except (CheckpointError, ScoreError, ValueError) as e:  # TrackingError is a ValueError
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    files, errors = find_audio(args.paths)
    result = score_paths(model, files, machine_id=given, aggregate=args.aggregate, batch_size=args.batch_size,
                         device=args.device, scorer=args.scorer)
    errors += result.errors
    text = format_scores(result.scores, args.format)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    for _, message in errors:
        print(f"error: {message}", file=sys.stderr)
    version = f" (version {model.version})" if model.version is not None else ""
    note = "" if thresholds is not None else "; the model has no stored thresholds: no decisions"
    print(f"scored {len(result.scores)} file(s) with {model.uri}{version}, scorer "
          f"{scorer_used(model.loaded, args.scorer)}{chosen_words(model.loaded, args.scorer)}, {len(errors)} error(s)"
          f"{note}", file=sys.stderr)
    if errors and result.scores.empty:
        return 2  # nothing could be scored
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
