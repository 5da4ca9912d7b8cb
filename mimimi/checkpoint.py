"""Build a model from the resolved config; save and load checkpoints that carry everything needed
to score again: state_dict, resolved config, feature settings, ID map (``meta``: the output classes and
each ID's classes), versions and the fitted scorers with their thresholds (``mimimi.scoring``; tensors and
plain values only, read with ``weights_only``).

Beside every checkpoint ``save_checkpoint`` writes ``<name>.sha256`` (``sha256sum`` format), so that a
checkpoint used as a file (``mimimi score --checkpoint``) can be checked for changes since training wrote it
(``mimimi.verify.verify_checkpoint_file``), as a logged model is checked against its recorded digests."""
from __future__ import annotations

import hashlib
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
from mimimi.scoring.fitted import Scoring, ScoringError


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with the file in the message."""


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest_file(path: str | Path) -> Path:
    """Where the sha256 of checkpoint ``path`` is kept: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


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
    digest = f"{sha256_file(tmp)}  {path.name}\n"  # sha256sum's format: `sha256sum -c best.pt.sha256` checks it
    tmp.replace(path)  # a crash mid-write never leaves a half checkpoint under the real name
    side = digest_file(path)
    side.with_suffix(".tmp").write_text(digest)
    side.with_suffix(".tmp").replace(side)
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
