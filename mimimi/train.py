"""Training: one model per machine type, on normal training clips only.

``train_loop_per_worker(config)`` is the importable entry point: it takes the config tree as a plain
dict (what Ray Tune hands a trial) and runs the same code in-process (tests, the CLI) and in a Ray
Train worker. A held-out part of the normal training clips (``train.val_fraction`` per ID) is the
validation set: early stopping and the best checkpoint are chosen on it, never on test data.

    python -m mimimi.train --data-root DIR --machine-type fan [--model complex|magnitude|ae] \\
        [--config configs/base.yaml] --out DIR
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from mimimi import augment
from mimimi.checkpoint import build_model, save_checkpoint
from mimimi.config import Config, ConfigError, load_config, merge, to_dict
from mimimi.data.audio import AudioError
from mimimi.data.dataset import ClipFrames, ClipSegments, TrainFrames, TrainSegments, id_map
from mimimi.data.index import DatasetError, index_dataset, select
from mimimi.features import FeatureCache


class TrainError(ValueError):
    """Training cannot start (no data for the type, a single machine ID, ...)."""


@dataclass
class TrainResult:
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    best: dict[str, float]  # validation metrics of the best epoch
    history: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# data

def split_train_val(clips: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``fraction`` of each ID's normal training clips (at least one where an ID has two)."""
    train, val = [], []
    for _, group in clips.groupby("machine_id", sort=True):
        order = group.sample(frac=1.0, random_state=seed)
        n_val = min(len(group) - 1, max(1, math.ceil(fraction * len(group)))) if fraction > 0 else 0
        val.append(order.iloc[:n_val])
        train.append(order.iloc[n_val:])
    return (pd.concat(train).sort_values("path", ignore_index=True),
            pd.concat(val).sort_values("path", ignore_index=True))


def training_clips(cfg: Config) -> pd.DataFrame:
    mtype = cfg.train.machine_type
    if not mtype:
        raise TrainError("train.machine_type is not set (use --machine-type)")
    clips = index_dataset(cfg.data.root).clips
    if mtype not in set(clips.machine_type):
        raise TrainError(f"{cfg.data.root}: no clips of machine type {mtype!r} (found {sorted(set(clips.machine_type))})")
    train = select(clips, machine_type=mtype, split="train", label="normal")
    if train.empty:
        raise TrainError(f"{cfg.data.root}: machine type {mtype!r} has no normal training clips")
    return train


def resolve(cfg: Config, ids: dict[str, int]) -> Config:
    """The config as it runs: the network's input and output size follow the model name and the data."""
    net = dataclasses.replace(cfg.model.net, n_ids=len(ids), input="magnitude" if cfg.model.name == "magnitude" else "complex")
    ae = dataclasses.replace(cfg.model.ae, n_mels=cfg.features.n_mels)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, net=net, ae=ae))


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# one epoch

def classifier_loss(logits, target: torch.Tensor, weights: tuple[float, float, float]) -> torch.Tensor:
    """Weighted sum of the three heads' cross-entropies; ``target`` is class indices or soft (B, n_ids)."""
    return sum(w * F.cross_entropy(l.float(), target) for w, l in zip(weights, logits) if w)


def _augment(x: torch.Tensor, y: torch.Tensor, n_ids: int, cfg: Config, g: torch.Generator):
    a = cfg.augment
    x = augment.spectral_mask(x, a.mask_prob, a.mask_max_bins, a.mask_max_frames, g)
    x = augment.add_noise(x, a.noise_prob, a.noise_snr_db, g)
    x = augment.frequency_shift(x, a.shift_prob, a.shift_max_bins, g)
    return augment.dirichlet_mixup(x, y, n_ids, a.mixup_prob, a.mixup_alpha, a.mixup_k, g)


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def _train_epoch(model, loader, opt, cfg: Config, n_ids: int, device, g, desc: str) -> float:
    model.train()
    total, n = 0.0, 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not cfg.train.progress):
        with _autocast(device, cfg.train.amp):
            if cfg.model.name == "ae":
                x = batch.to(device)  # (B, n_stack * n_mels)
                loss = F.mse_loss(model(x).x_hat.float(), x)
            else:
                x, y = _augment(batch[0], batch[1], n_ids, cfg, g)  # (B, 1, F, T) complex, (B, n_ids) soft
                loss = classifier_loss(model(x.to(device)), y.to(device), cfg.train.loss_weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(x)
        n += len(x)
    return total / max(n, 1)


@torch.no_grad()
def _validate(model, dataset, cfg: Config, device) -> dict[str, float]:
    """Mean loss over every segment (or frame vector) of the held-out normal clips, and ID accuracy."""
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for item in dataset:
        x = item.x.to(device)
        with _autocast(device, cfg.train.amp):
            if cfg.model.name == "ae":
                err = (model(x).x_hat.float() - x).pow(2).mean(1)
                loss_sum += float(err.sum())
            else:
                logits = model(x)
                y = torch.full((len(x),), item.machine_id, device=device)
                loss_sum += float(classifier_loss(logits, y, cfg.train.loss_weights)) * len(x)
                correct += int((logits.total.argmax(1) == y).sum())
        n += len(x)
    out = {"val_loss": loss_sum / n}
    if cfg.model.name != "ae":
        out["val_acc"] = correct / n
    return out


# ---------------------------------------------------------------------------------------------
# the loop

@dataclass
class Distributed:
    """Hooks a data-parallel launcher (Ray Train) passes to ``fit``; the defaults are one process."""

    prepare_model: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m
    prepare_loader: Callable[[DataLoader], DataLoader] = lambda dl: dl
    is_main: bool = True  # only the main process writes checkpoints


def fit(cfg: Config, out_dir: str | Path, on_epoch: Callable[[dict, Path | None], None] | None = None,
        distributed: Distributed | None = None) -> TrainResult:
    """Train ``cfg.model.name`` on ``cfg.train.machine_type``; checkpoints go to ``out_dir``.

    ``on_epoch(metrics, checkpoint)`` is called after every epoch, with the path of the new best
    checkpoint when this epoch improved the validation loss, else None (Ray reports through it).
    """
    dist = distributed or Distributed()
    out_dir = Path(out_dir)
    t = cfg.train
    g = _seed_everything(t.seed)
    clips = training_clips(cfg)
    ids = id_map(clips)
    if cfg.model.name != "ae" and len(ids) < 2:
        raise TrainError(f"machine type {t.machine_type!r} has one machine ID ({list(ids)}): "
                         "the self-supervised classifier needs at least two")
    cfg = resolve(cfg, ids)
    train_clips, val_clips = split_train_val(clips, t.val_fraction, t.seed)
    if val_clips.empty:
        raise TrainError(f"no validation clips: train.val_fraction={t.val_fraction} with {len(clips)} training clips")
    cache = FeatureCache(cfg.data.cache_dir, cfg.features)
    kind = "logmel" if cfg.model.name == "ae" else "stft"
    cache.warm(clips.path, kinds=(kind,), progress=t.progress)

    if cfg.model.name == "ae":
        train_ds = TrainFrames(train_clips, cache, cfg.model.ae.n_stack)
        val_ds = ClipFrames(val_clips, cache, ids, cfg.model.ae.n_stack)
    else:
        train_ds = TrainSegments(train_clips, cache, ids, t.segments_per_clip, seed=t.seed)
        val_ds = ClipSegments(val_clips, cache, ids)
    loader = dist.prepare_loader(DataLoader(
        train_ds, batch_size=t.batch_size, shuffle=True, num_workers=t.num_workers,
        generator=torch.Generator().manual_seed(t.seed), drop_last=len(train_ds) > t.batch_size))

    device = _device(t.device)
    model = dist.prepare_model(build_model(cfg, len(ids)).to(device))
    core = getattr(model, "module", model)  # what a checkpoint holds (DDP wraps the model)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    meta = dict(machine_type=t.machine_type, n_train_clips=len(train_clips), n_val_clips=len(val_clips))
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        (out_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))

    best, best_epoch, history, bad_epochs = math.inf, -1, [], 0
    best_path, last_path = out_dir / "best.pt", out_dir / "last.pt"
    for epoch in range(t.epochs):
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        if hasattr(loader.sampler, "set_epoch"):  # DistributedSampler
            loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        train_loss = _train_epoch(model, loader, opt, cfg, len(ids), device, g, f"epoch {epoch}")
        metrics = {"epoch": epoch, "train_loss": train_loss, **_validate(core, val_ds, cfg, device),
                   "epoch_seconds": time.perf_counter() - start}
        history.append(metrics)
        improved = metrics["val_loss"] < best
        if improved:
            best, best_epoch, bad_epochs = metrics["val_loss"], epoch, 0
        else:
            bad_epochs += 1
        if dist.is_main:
            save_checkpoint(last_path, core, cfg, ids, epoch=epoch, val=metrics, **meta)
            if improved:
                save_checkpoint(best_path, core, cfg, ids, epoch=epoch, val=metrics, **meta)
        if t.progress:
            acc = f" val_acc {metrics['val_acc']:.3f}" if "val_acc" in metrics else ""
            print(f"epoch {epoch:3d}  train_loss {train_loss:.4f}  val_loss {metrics['val_loss']:.4f}{acc}"
                  f"{'  *' if best_epoch == epoch else ''}", file=sys.stderr)
        if on_epoch is not None:
            on_epoch({**metrics, "best_val_loss": best}, best_path if improved and dist.is_main else None)
        if bad_epochs > t.patience:
            break
    return TrainResult(best_path, last_path, best_epoch, history[best_epoch], history)


def train_loop_per_worker(config: dict[str, Any]) -> TrainResult:
    """Entry point for Ray Train and for plain calls: ``config`` is the config tree as a dict plus ``out_dir``."""
    config = dict(config)
    out_dir = config.pop("out_dir", "runs/train")
    on_epoch = config.pop("on_epoch", None)
    return fit(merge(Config(), config), out_dir, on_epoch)


def main(argv: list[str] | None = None) -> None:
    from mimimi.evaluate import EvaluationError, evaluate

    ap = argparse.ArgumentParser(prog="python -m mimimi.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--machine-type", required=True)
    ap.add_argument("--model", choices=["complex", "magnitude", "ae"], default=None, help="default: model.name of the config")
    ap.add_argument("--config", action="append", default=[], help="YAML overrides, applied in order")
    ap.add_argument("--out", required=True, help="output folder: checkpoints, config, evaluation report")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--no-eval", action="store_true", help="skip the final evaluation on the test split")
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {"data": {"root": args.data_root}, "train": {"machine_type": args.machine_type}}
    if args.model:
        overrides["model"] = {"name": args.model}
    if args.epochs is not None:
        overrides["train"]["epochs"] = args.epochs
    try:
        cfg = load_config(*args.config, overrides=overrides)
        result = fit(cfg, args.out)
        print(f"best epoch {result.best_epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.best.items()
                                                               if k.startswith("val")))
        print(f"checkpoint {result.best_checkpoint}")
        if not args.no_eval:
            report = evaluate(result.best_checkpoint, cfg.data.root, Path(args.out) / "eval")
            print(report.markdown)
    except (ConfigError, DatasetError, AudioError, TrainError, EvaluationError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
