"""Build a model from the resolved config; save and load checkpoints that carry everything needed
to score again: state_dict, resolved config, feature settings, ID map (``meta``: the output classes and
each ID's classes), versions and the fitted scorers with their thresholds (``mimimi.scoring``; tensors and
plain values only, read with ``weights_only``)."""
from __future__ import annotations

import pickle
import platform
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torchaudio
from torch import nn

import mimimi
from mimimi import kinds
from mimimi.config import Config, merge, to_dict
from mimimi.data.dataset import IDMap, id_classes
from mimimi.scoring import Scoring, ScoringError


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with the file in the message."""


def build_model(cfg: Config, n_classes: int) -> nn.Module:
    """The network that ``cfg.model.name`` asks for, with ``n_classes`` outputs (one per machine ID, more with
    ``train.classes: all`` or ``train.attributes``)."""
    return kinds.of(cfg).build(cfg, n_classes)


def versions() -> dict[str, str]:
    return {"mimimi": mimimi.__version__, "torch": str(torch.__version__),
            "torchaudio": str(torchaudio.__version__),
            "python": platform.python_version()}


class Loaded(NamedTuple):
    model: nn.Module
    cfg: Config
    ids: IDMap  # machine ID -> class index, and ``ids.classes``: every output class it owns (meta["id_classes"])
    meta: dict[str, Any]  # machine_type, epoch, validation metrics, classes, id_classes, versions
    scoring: Scoring | None = None  # fitted scorers and thresholds; None in a checkpoint that has none (last.pt)


def save_checkpoint(path: str | Path, model: nn.Module, cfg: Config, ids: dict[str, int],
                    scoring: Scoring | None = None, **meta: Any) -> Path:
    """``ids`` a plain map (one class per ID) or an ``IDMap``, whose classes go to ``meta["id_classes"]``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {**meta, "id_classes": {m: list(cs) for m, cs in id_classes(ids).items()}}  # ids as an IDMap says
    blob = {"state_dict": state, "config": to_dict(cfg), "features": to_dict(cfg.features), "ids": dict(ids),
            "versions": versions(), "meta": meta, "scoring": scoring.state() if scoring is not None else None}
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a half checkpoint under the real name
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Loaded:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
        cfg = merge(Config(), blob["config"])
        meta = blob["meta"]
        ids = IDMap(blob["ids"], meta.get("id_classes"))  # a checkpoint without id_classes: one class per ID
        n_classes = len(meta.get("classes") or ids)  # train.classes=all, train.attributes: more than the IDs
        if max(c for cs in ids.classes.values() for c in cs) >= n_classes:
            raise ValueError(f"id_classes {ids.classes} name outputs beyond the model's {n_classes}")
        model = build_model(cfg, n_classes)
        model.load_state_dict(blob["state_dict"])
        fitted = Scoring.from_state(blob["scoring"]) if blob.get("scoring") is not None else None
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError, OSError, pickle.UnpicklingError,
            ScoringError) as e:
        raise CheckpointError(f"{path}: not a usable MIMIMI checkpoint ({str(e).splitlines()[0]})") from None
    model.eval()
    return Loaded(model, cfg, ids, {**meta, "versions": blob["versions"]}, fitted)
