"""Training: one model per machine type, on normal training clips only.

``train_loop_per_worker(config)`` is the importable entry point: it takes the config tree as a plain
dict (what Ray Tune hands a trial) and runs the same code in-process (tests, the CLI) and in a Ray
Train worker. A held-out part of the normal training clips (``train.val_fraction`` per ID) is the
validation set: early stopping and the best checkpoint are chosen on it, never on test data.

    python -m mimimi.train --data-root DIR --machine-type fan [--model complex|magnitude|ae|stats-knn] \\
        [--classes type|all] [--attributes] [--config configs/base.yaml] --out DIR

``train.classes: all`` trains the classifier over every (machine type, ID) pair under the root (the 41-class
setup of the DCASE 2020 leaders) and still validates, fits scorers and writes the checkpoint for
``--machine-type``: its IDs keep their own outputs among all the classes. ``train.attributes``
(``--attributes``) splits each class by the training clips' attributes (the 2022+ section x attribute
classes); an ID then owns several outputs (``meta["id_classes"]`` in the checkpoint).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from mimimi import augment, kinds, precision, scoring
from mimimi.checkpoint import save_checkpoint
from mimimi.config import Config, ConfigError, load_config, merge, to_dict
from mimimi.data.audio import AudioError
from mimimi.data.dataset import IDMap
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


def training_clips(cfg: Config, clips: pd.DataFrame | None = None) -> pd.DataFrame:
    """The normal training clips of ``train.machine_type`` in ``clips`` (default: the index of ``data.root``)."""
    mtype = cfg.train.machine_type
    if not mtype:
        raise TrainError("train.machine_type is not set (use --machine-type)")
    clips = index_dataset(cfg.data.root).clips if clips is None else clips
    if mtype not in set(clips.machine_type):
        raise TrainError(f"{cfg.data.root}: no clips of machine type {mtype!r} (found {sorted(set(clips.machine_type))})")
    train = select(clips, machine_type=mtype, split="train", label="normal")
    if train.empty:
        raise TrainError(f"{cfg.data.root}: machine type {mtype!r} has no normal training clips")
    return train


NO_ATTRIBUTE = "noAttribute"  # DCASE 2022+'s attribute part for a clip that has none


def class_name(machine_type: str, machine_id: str, attributes: str = "") -> str:
    """A classifier class: ``<type>/<ID>``, or ``<type>/<ID>/<attributes>`` for a clip with attributes
    (``train.attributes``); ``""`` and ``noAttribute`` are none.

    >>> class_name("fan", "00"), class_name("fan", "00", "m-n_W"), class_name("ToyCar", "00", "noAttribute")
    ('fan/00', 'fan/00/m-n_W', 'ToyCar/00')
    """
    plain = f"{machine_type}/{machine_id}"
    return f"{plain}/{attributes}" if attributes and attributes != NO_ATTRIBUTE else plain


def class_names(clips: pd.DataFrame, attributes: bool) -> pd.Series:
    """(clips,) each clip's class (``class_name``), split by its ``attributes`` column when ``attributes``."""
    attr = clips["attributes"] if attributes else pd.Series("", index=clips.index)
    return pd.Series([class_name(t, m, a) for t, m, a in zip(clips.machine_type, clips.machine_id, attr)],
                     index=clips.index, dtype=object)


class Classes(NamedTuple):
    """What the classifier is trained to tell apart (``train.classes``, ``train.attributes``).

    ``names``: the network's output classes in order, ``"<type>/<ID>"`` (``"fan/02"``) or, with
    ``train.attributes``, ``"<type>/<ID>/<attributes>"`` (``"fan/02/vel_12"``) for clips that have attributes;
    ``ids``: the trained type's machine IDs -> their first class index, with ``ids.classes`` every class each
    owns (what the checkpoint, the scorers and ``mimimi.score`` use); ``pool``: the normal training clips of
    every class but the trained type's, with ``machine_id`` set to the class name (empty with ``classes: type``).
    """

    names: list[str]
    ids: IDMap
    pool: pd.DataFrame


def class_map(cfg: Config, clips: pd.DataFrame, index: pd.DataFrame, held_out: pd.DataFrame) -> Classes:
    """``train.classes``: the type's IDs (``type``), or every (machine type, ID) of ``data.machine_types``
    (default: every type in ``index``) with ``held_out`` (the other types' proxy clips) kept out (``all``);
    each split by the attributes of its training clips with ``train.attributes``."""
    mtype, split = cfg.train.machine_type, cfg.train.attributes
    own = class_names(clips, split)  # (clips,) the trained type's classes
    pool = clips.iloc[:0]
    if cfg.train.classes == "all":
        types = list(cfg.data.machine_types) or sorted(set(index.machine_type))
        missing = sorted(set(types) - set(index.machine_type))
        if missing:
            raise TrainError(f"{cfg.data.root}: data.machine_types {missing} not found "
                             f"(found {sorted(set(index.machine_type))})")
        if mtype not in types:
            raise TrainError(f"train.classes=all: the trained type {mtype!r} is not among data.machine_types {types}")
        pool = select(index, split="train", label="normal")
        pool = pool[pool.machine_type.isin(types) & (pool.machine_type != mtype) & ~pool.path.isin(held_out.path)]
        pool = pool.assign(machine_id=class_names(pool, split))
    names = sorted(set(pool.machine_id) | set(own))
    index_of = {n: i for i, n in enumerate(names)}
    owned = {m: sorted({index_of[n] for n in own[(clips.machine_id == m).to_numpy()]})
             for m in sorted(set(clips.machine_id))}  # machine ID -> its classes
    ids = IDMap({m: c[0] for m, c in owned.items()}, owned)
    return Classes(names, ids, pool.reset_index(drop=True))


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# train.compile: auto compiles on CPU when the planned work is at least this many batches of the default
# shape (32 x 1 x 513 x 64). Measured (BENCHMARKS.md, "torch.compile"): compiling the fp32 training step
# costs about 30 s on 2 cores with a cold cache and saves about a fifth of a 1.4 s step, so it pays for
# itself after ~110 such steps; 300 repays it almost three times over, which leaves room for slower
# compilers and smaller savings.
COMPILE_MIN_BATCHES = 300
DEFAULT_BATCH_WORK = 32 * 513 * 64  # segments x frequency bins x frames of one default batch


def compile_decision(mode: bool | str, device: torch.device, planned_steps: int, batch_work: int) -> tuple[bool, str]:
    """``train.compile`` resolved for this run: (compile?, why). ``batch_work`` = batch x F x T.

    ``auto`` compiles on CPU when ``planned_steps`` batches of ``batch_work`` add up to at least
    ``COMPILE_MIN_BATCHES`` default batches and a C++ compiler is there (TorchInductor needs one); on
    CUDA it stays off until the GPU benchmark has measured it. ``True`` compiles or fails with one line.

    >>> compile_decision("auto", torch.device("cpu"), 10, DEFAULT_BATCH_WORK)[0]
    False
    >>> compile_decision(False, torch.device("cpu"), 10**6, DEFAULT_BATCH_WORK)
    (False, 'train.compile: false')
    """
    compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")
    if mode is True:
        if device.type == "cpu" and compiler is None:
            raise TrainError("train.compile: true needs a C++ compiler on the PATH (TorchInductor's CPU backend); "
                             "install g++ or set train.compile: false")
        return True, "train.compile: true"
    if mode is False:
        return False, "train.compile: false"
    if device.type != "cpu":
        return False, f"train.compile: auto, off on {device.type} (not measured there yet)"
    work = planned_steps * batch_work / DEFAULT_BATCH_WORK
    if work < COMPILE_MIN_BATCHES:
        return False, (f"train.compile: auto, off: {planned_steps} planned steps ({work:.0f} default-sized batches; "
                       f"compiling pays from {COMPILE_MIN_BATCHES})")
    if compiler is None:
        return False, "train.compile: auto, off: no C++ compiler on the PATH"
    return True, f"train.compile: auto, on: {planned_steps} planned steps ({work:.0f} default-sized batches)"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# one epoch

def _augment(x: torch.Tensor, y: torch.Tensor, n_ids: int, cfg: Config, g: torch.Generator):
    a = cfg.augment
    x = augment.spectral_mask(x, a.mask_prob, a.mask_max_bins, a.mask_max_frames, g)
    x = augment.add_noise(x, a.noise_prob, a.noise_snr_db, g)
    x = augment.frequency_shift(x, a.shift_prob, a.shift_max_bins, g)
    return augment.dirichlet_mixup(x, y, n_ids, a.mixup_prob, a.mixup_alpha, a.mixup_k, g)


def _train_epoch(model, loader, opt, cfg: Config, kind: kinds.ModelKind, n_ids: int, device, g, desc: str) -> float:
    model.train()
    total, n = 0.0, 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not cfg.train.progress):
        if kind.classifier:
            x, y = _augment(batch[0], batch[1], n_ids, cfg, g)  # (B, 1, F, T) complex, (B, n_ids) soft
            batch = (x.to(device), y.to(device))
        else:
            batch = batch.to(device)  # (B, n_stack * n_mels)
        with precision.autocast(cfg.train.precision, device):
            loss, size = kind.loss(model, batch, cfg)  # the loss itself in fp32 (kinds casts the logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * size
        n += size
    return total / max(n, 1)


class Validation:
    """Everything measured on normal training data after an epoch, never on test clips.

    ``val_loss`` (and ``val_acc`` for classifiers): the held-out normals' loss (segments weighted equally)
    and clip ID accuracy. ``val_proxy_auc``: ``mimimi.scoring.proxy_auc`` of the default scorer fitted on
    the training split. ``scoring``: the scorers fitted on all normal training clips with thresholds from
    the held-out ones, stored with the checkpoint.
    """

    def __init__(self, cfg: Config, kind: kinds.ModelKind, train_clips: pd.DataFrame, val_clips: pd.DataFrame,
                 others: pd.DataFrame, cache: FeatureCache, ids: dict[str, int]):
        self.cfg, self.kind, self.ids, self.cache = cfg, kind, ids, cache
        self.clips = pd.concat([train_clips, val_clips], ignore_index=True)
        self.is_val = np.r_[np.zeros(len(train_clips), bool), np.ones(len(val_clips), bool)]
        self.scorer = scoring.resolve_scorer(kind, cfg.scoring.scorer)
        proxies = scoring.make_proxies(cfg, kind, val_clips, others, cache) if len(val_clips) else None
        self.proxy_rows = proxies.clips if proxies is not None else pd.DataFrame(columns=["path", "owner", "family"])
        first = next(iter(ids))  # another type's clip has no ID here: any known one (proxy_auc scores it per ID)
        self.proxy_clips = pd.DataFrame({"path": self.proxy_rows.path,
                                         "machine_id": self.proxy_rows.owner.fillna(first).astype(str),
                                         "label": "anomaly"})
        self.proxy_features = scoring.Features(cache, proxies.features if proxies is not None else {})
        # the log-mel statistics do not change with the model: read them once, not every epoch
        self.stats = self.proxy_stats = None
        if kind.trainable:
            self.stats = scoring.log_mel_stats(cache, self.clips.path)
            self.proxy_stats = scoring.log_mel_stats(self.proxy_features, self.proxy_clips.path)

    def __call__(self, model, device) -> tuple[dict[str, float], scoring.ClipOutputs]:
        cfg, kind = self.cfg, self.kind
        batch = {"batch_segments": cfg.train.batch_size}  # several clips per forward pass: faster
        out = scoring.clip_outputs(model, kind, cfg, self.clips, self.ids, self.cache, cfg.scoring.aggregate,
                                   device, stats=self.stats, **batch)
        proxies = scoring.clip_outputs(model, kind, cfg, self.proxy_clips, self.ids, self.proxy_features,
                                       cfg.scoring.aggregate, device, stats=self.proxy_stats, **batch)
        train, val = out.select(~self.is_val), out.select(self.is_val)
        metrics = {}
        if len(val.clips):
            if kind.trainable:
                metrics["val_loss"] = float(np.average(val.loss, weights=val.n_segments))
            if kind.classifier:
                metrics["val_acc"] = float(np.mean(np.array(val.pred_id) == val.clips.machine_id.to_numpy()))
            metrics.update(scoring.proxy_auc(cfg, kind, self.scorer, train, val, proxies, self.proxy_rows, self.ids))
        return metrics, out


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

    The best epoch is the one with the highest ``val_proxy_auc`` (``train.monitor``; the lowest
    ``val_loss`` with ``monitor: val_loss``, or where there is no proxy AUC). Each best checkpoint carries
    its fitted scorers and thresholds (``mimimi.scoring``). A kind that is not trained (``stats-knn``) has
    one "epoch": its scorers are fitted and saved. ``on_epoch(metrics, checkpoint)`` is called after every
    epoch, with the path of the best checkpoint when this epoch improved or is the last one, else None (Ray
    reports through it); ``metrics["final"]`` is True on the last call (the last epoch, or early stopping).
    """
    fit_start = time.perf_counter()
    dist = distributed or Distributed()
    out_dir = Path(out_dir)
    t = cfg.train
    g = _seed_everything(t.seed)
    kind = kinds.of(cfg)
    if t.classes == "all" and not kind.classifier:
        raise TrainError(f"train.classes=all needs a classifier; the {kind.name} model has no classes")
    if t.attributes and not kind.classifier:
        raise TrainError(f"train.attributes needs a classifier; the {kind.name} model has no classes")
    index = index_dataset(cfg.data.root).clips
    clips = training_clips(cfg, index)
    others = other_type_proxies(cfg, index)
    classes = class_map(cfg, clips, index, others)
    ids = classes.ids
    if kind.classifier and len(classes.names) < 2:
        raise TrainError(f"machine type {t.machine_type!r} has one machine ID ({list(ids)})"
                         f"{' and no two attribute values' if t.attributes else ''}: the self-supervised "
                         "classifier needs at least two classes (or train.classes=all)")
    cfg = kinds.of(cfg).resolve(cfg, len(classes.names))
    train_clips, val_clips = split_train_val(clips, t.val_fraction, t.seed)
    if val_clips.empty and kind.trainable:
        raise TrainError(f"no validation clips: train.val_fraction={t.val_fraction} with {len(clips)} training clips")
    cache = FeatureCache(cfg.data.cache_dir, cfg.features)
    cache.warm(pd.concat([clips.path, others.path, classes.pool.path]), kinds=kind.features, progress=t.progress)
    validation = Validation(cfg, kind, train_clips, val_clips, others, cache, ids)

    device = _device(t.device)
    model = dist.prepare_model(kind.build(cfg, len(classes.names)).to(device))
    core = getattr(model, "module", model)  # what a checkpoint holds (DDP wraps the model)
    meta = dict(machine_type=t.machine_type, n_train_clips=len(train_clips), n_val_clips=len(val_clips),
                classes=classes.names)  # save_checkpoint adds id_classes from ids
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        (out_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    best_path, last_path = out_dir / "best.pt", out_dir / "last.pt"

    if not kind.trainable:
        start = time.perf_counter()
        metrics, out = validation(core, device)
        fitted = scoring.fit_scoring(cfg, kind, out, np.ones(len(out.clips), bool))
        metrics = {"epoch": 0, **metrics, "epoch_seconds": time.perf_counter() - start,
                   "setup_seconds": start - fit_start}
        if dist.is_main:
            for path in (best_path, last_path):
                save_checkpoint(path, core, cfg, ids, scoring=fitted, epoch=0, val=metrics, **meta)
        if on_epoch is not None:
            on_epoch({**metrics, **_best_keys(metrics), "final": True}, best_path if dist.is_main else None)
        return TrainResult(best_path, last_path, 0, metrics, [metrics])

    class_of = {n: i for i, n in enumerate(classes.names)}
    named = train_clips.assign(machine_id=class_names(train_clips, t.attributes))  # ID -> class name
    train_ds = kind.train_dataset(cfg, pd.concat([named, classes.pool], ignore_index=True), cache, class_of)
    n_classes = len(classes.names)
    sampler = make_sampler(cfg, kind, train_ds, n_classes)
    loader = dist.prepare_loader(DataLoader(
        train_ds, batch_size=t.batch_size, shuffle=sampler is None, sampler=sampler, num_workers=t.num_workers,
        generator=torch.Generator().manual_seed(t.seed), drop_last=len(train_ds) > t.batch_size))
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    step_model = model  # what the training steps call; validation and checkpoints use the module itself
    if kind.classifier:
        f = cfg.features
        compiled, why = compile_decision(t.compile, device, t.epochs * len(loader),
                                         t.batch_size * f.n_freq * f.segment_frames)
        if compiled:
            step_model = torch.compile(model)
        if t.progress:
            print(why, file=sys.stderr)
    setup_seconds = time.perf_counter() - fit_start

    best, best_epoch, history, bad_epochs = None, -1, [], 0
    monitor = t.monitor
    for epoch in range(t.epochs):
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        if hasattr(loader.sampler, "set_epoch"):  # DistributedSampler
            loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        train_loss = _train_epoch(step_model, loader, opt, cfg, kind, n_classes, device, g, f"epoch {epoch}")
        val_metrics, out = validation(core, device)
        metrics = {"epoch": epoch, "train_loss": train_loss, **val_metrics,
                   "epoch_seconds": time.perf_counter() - start, "setup_seconds": setup_seconds}
        history.append(metrics)
        if monitor == "val_proxy_auc" and not math.isfinite(metrics.get("val_proxy_auc", math.nan)):
            monitor = "val_loss"  # no ID has both held-out normals and proxies: fall back, for the whole run
        value = metrics[monitor]
        improved = best is None or (value > best if monitor == "val_proxy_auc" else value < best)
        if improved:
            best, best_epoch, bad_epochs = value, epoch, 0
        else:
            bad_epochs += 1
        if dist.is_main:
            save_checkpoint(last_path, core, cfg, ids, epoch=epoch, val=metrics, **meta)
            if improved:
                fitted = scoring.fit_scoring(cfg, kind, out, validation.is_val)
                save_checkpoint(best_path, core, cfg, ids, scoring=fitted, epoch=epoch, val=metrics, **meta)
        if t.progress:
            shown = "  ".join(f"{k} {metrics[k]:.4f}" for k in ("train_loss", "val_loss", "val_acc", "val_proxy_auc")
                              if k in metrics)
            print(f"epoch {epoch:3d}  {shown}{'  *' if best_epoch == epoch else ''}", file=sys.stderr)
        final = epoch == t.epochs - 1 or bad_epochs > t.patience
        if on_epoch is not None:
            on_epoch({**metrics, **_best_keys(history[best_epoch]), "final": final},
                     best_path if (improved or final) and dist.is_main else None)
        if final:
            break
    return TrainResult(best_path, last_path, best_epoch, history[best_epoch], history)


def make_sampler(cfg: Config, kind: kinds.ModelKind, dataset, n_ids: int) -> WeightedRandomSampler | None:
    """``train.sampler``: None (uniform: the loader shuffles) or, for ``balanced``, a sampler that draws
    ``len(dataset)`` items per epoch with replacement, each machine ID equally often in expectation."""
    if cfg.train.sampler != "balanced":
        return None
    classes = kind.train_classes(dataset)
    if classes is None:
        raise TrainError(f"train.sampler=balanced needs a classifier; the {kind.name} model has no classes")
    weights = 1.0 / np.bincount(classes, minlength=n_ids)[classes]  # (items,): 1 / items of its class
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(dataset), replacement=True,
                                 generator=torch.Generator().manual_seed(cfg.train.seed))


def _best_keys(best: dict) -> dict[str, float]:
    """``best_val_loss`` / ``best_val_proxy_auc``: the best epoch's values, reported with every epoch."""
    return {f"best_{k}": best[k] for k in ("val_loss", "val_proxy_auc") if k in best}


def other_type_proxies(cfg: Config, index: pd.DataFrame) -> pd.DataFrame:
    """The proxy outliers from other machine types: up to ``validation.other_types`` normal training clips
    of each (the first in path order). With ``train.classes: all`` they are kept out of training."""
    n = cfg.validation.other_types
    others = select(index, split="train", label="normal")
    others = others[others.machine_type != cfg.train.machine_type]
    if cfg.data.machine_types:
        others = others[others.machine_type.isin(cfg.data.machine_types)]
    if not n:
        return others.iloc[:0]
    return (others.sort_values("path").groupby("machine_type", sort=True).head(n)
            .sort_values(["machine_type", "path"]).reset_index(drop=True))


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
