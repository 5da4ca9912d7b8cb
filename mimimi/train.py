"""The ``mimimi train`` command: train one model for one machine type, then evaluate it on the test split.

    python -m mimimi.train --data-root DIR --machine-type fan [--model complex|magnitude|ae|stats-knn] \\
        [--classes type|all] [--attributes] [--config configs/base.yaml] --out DIR

``--out`` gets the checkpoints (``best.pt`` with its fitted scorers, ``last.pt``, each with a ``.sha256``),
the resolved ``config.json`` and, unless ``--no-eval``, the evaluation report in ``eval/``. Score new
recordings with the result: ``python -m mimimi.score --checkpoint DIR/best.pt PATH...``. The library is
``mimimi.training``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mimimi import kinds
from mimimi.checkpoint import load_checkpoint
from mimimi.config import ConfigError, load_config
from mimimi.data.audio import AudioError
from mimimi.data.index import DatasetError
from mimimi.evaluation import EvaluationError, evaluate
from mimimi.training import TrainError, fit


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mimimi.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--machine-type", required=True)
    ap.add_argument("--model", choices=list(kinds.KINDS), default=None, help="default: model.name of the config")
    ap.add_argument("--config", action="append", default=[], help="YAML overrides, applied in order")
    ap.add_argument("--out", required=True, help="output folder: checkpoints, config, evaluation report")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--classes", choices=["type", "all"], default=None,
                    help="train.classes: the type's machine IDs, or every (type, ID) under the root")
    ap.add_argument("--attributes", action=argparse.BooleanOptionalAction, default=None,
                    help="train.attributes: split each class by the training clips' attributes (DCASE 2021+)")
    ap.add_argument("--no-eval", action="store_true", help="skip the final evaluation on the test split")
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {"data": {"root": args.data_root}, "train": {"machine_type": args.machine_type}}
    if args.model:
        overrides["model"] = {"name": args.model}
    if args.epochs is not None:
        overrides["train"]["epochs"] = args.epochs
    if args.classes is not None:
        overrides["train"]["classes"] = args.classes
    if args.attributes is not None:
        overrides["train"]["attributes"] = args.attributes
    try:
        cfg = load_config(*args.config, overrides=overrides)
        result = fit(cfg, args.out)
        shown = {k: v for k, v in result.best.items() if k.startswith("val") and not k.endswith("_seconds")}
        print(f"best epoch {result.best_epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        print(f"checkpoint {result.best_checkpoint}")
        fitted = load_checkpoint(result.best_checkpoint).scoring
        if fitted is not None:
            how = fitted.choice.get("how", "the configured default")
            print(f"back-end {fitted.default} ({how}"
                  + (": the training-free baseline, no network" if fitted.default == "stats-knn" else "") + ")")
            for name, by in sorted(fitted.fallbacks.items()):
                for mid, why in sorted(by.items()):
                    print(f"note: {name} for ID {mid}: {why}")
        if not args.no_eval:
            report = evaluate(result.best_checkpoint, cfg.data.root, Path(args.out) / "eval",
                              cache_dir=cfg.data.cache_dir, progress=sys.stderr.isatty())
            print(report.markdown)
    except (ConfigError, DatasetError, AudioError, TrainError, EvaluationError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
