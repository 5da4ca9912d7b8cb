"""Training: one model per machine type, on normal training clips only (the library of ``mimimi train``).

``fit(cfg, out_dir)`` is the training loop: the same function runs in-process (tests, ``mimimi train``) and
inside a Ray Train worker (``tuning.worker.train_worker`` is the one adapter Ray calls). A held-out part of
the normal training clips (``train.val_fraction`` per ID) is the validation set: early stopping and the best
checkpoint are chosen on it, never on test data.

``train.classes: all`` trains the classifier over every (machine type, ID) pair under the root (the 41-class
setup of the DCASE 2020 leaders) and still validates, fits scorers and writes the checkpoint for
``--machine-type``: its IDs keep their own outputs among all the classes. ``train.attributes``
(``--attributes``) splits each class by the training clips' attributes (the 2022+ section x attribute
classes); an ID then owns several outputs (``meta["id_classes"]`` in the checkpoint).
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from mimimi import augment, kinds, precision
from mimimi.checkpoint import load_checkpoint, save_checkpoint
from mimimi.config import Config, to_dict
from mimimi.data.dataset import IDMap
from mimimi.data.index import index_dataset, select
from mimimi.features import FeatureCache, cache_dir_for
from mimimi.scoring.fitted import fit_scoring
from mimimi.scoring.objective import FAMILIES, Figures, family_of, figures
from mimimi.scoring.outputs import ClipOutputs, Features, clip_outputs, log_mel_stats
from mimimi.scoring.proxies import make_proxies


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
    bars = None if cfg.train.progress else True  # tqdm's None: a bar only on a terminal
    for batch in tqdm(loader, desc=desc, leave=False, disable=bars):
        if kind.classifier:  # augmented on the training device: one CPU thread's augmentations would cap a
            # GPU's feed (make rehearsal measured ~900 segments/s against ~1 300 an A10G trains at); the random
            # draws stay on the CPU generator, so a seeded run draws the same on any device
            batch = _augment(batch[0].to(device), batch[1].to(device), n_ids, cfg, g)  # (B, 1, F, T), (B, n_ids)
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

    The validation clips: every normal training clip of the type, but at most
    ``validation.max_references_per_id`` per ID (all the held-out ones, then a seeded sample of the others),
    so that validating costs a bounded share of an epoch at any data size. ``val_loss`` (and ``val_acc`` for
    classifiers): the held-out normals' loss (segments weighted equally) and clip ID accuracy. The proxy
    figures and the back-end choice: ``mimimi.scoring.objective.figures``. ``scoring``: every back-end fitted
    on the validation clips with thresholds from the held-out ones, stored with the checkpoint (``finalize``
    refits it on every training clip when the validation clips are a sample).
    """

    def __init__(self, cfg: Config, kind: kinds.ModelKind, train_clips: pd.DataFrame, val_clips: pd.DataFrame,
                 others: pd.DataFrame, cache: FeatureCache, ids: dict[str, int]):
        self.cfg, self.kind, self.ids, self.cache = cfg, kind, ids, cache
        self.clips, self.is_val = validation_clips(train_clips, val_clips, cfg.validation.max_references_per_id,
                                                   cfg.train.seed)
        self.n_training_clips = len(train_clips) + len(val_clips)
        self.complete = len(self.clips) == self.n_training_clips  # every training clip validated
        proxies = make_proxies(cfg, kind, self.clips, self.is_val, others)
        self.proxy_rows = proxies.clips
        first = next(iter(ids))  # another type's clip has no ID here: any known one (objective scores it per ID)
        self.proxy_clips = pd.DataFrame({"path": self.proxy_rows.path,
                                         "machine_id": self.proxy_rows.owner.fillna(first).astype(str),
                                         "label": "anomaly"})
        self.proxy_features = Features(cache, proxies.features)
        # the log-mel statistics do not change with the model: read them once, not every epoch
        self.stats = self.proxy_stats = None
        if kind.trainable:
            self.stats = log_mel_stats(cache, self.clips.path)
            self.proxy_stats = log_mel_stats(self.proxy_features, self.proxy_clips.path)

    def __call__(self, model, device, monitor: str) -> tuple[dict[str, float], ClipOutputs, Figures]:
        cfg, kind = self.cfg, self.kind
        batch = {"batch_segments": cfg.train.batch_size}  # several clips per forward pass: faster
        start = time.perf_counter()
        out = clip_outputs(model, kind, cfg, self.clips, self.ids, self.cache, cfg.scoring.aggregate,
                           device, stats=self.stats, **batch)
        proxies = clip_outputs(model, kind, cfg, self.proxy_clips, self.ids, self.proxy_features,
                               cfg.scoring.aggregate, device, stats=self.proxy_stats, **batch)
        embedded = time.perf_counter()
        val = out.select(self.is_val)
        # the network's share (on the training device) and the back-ends' (CPU), for sizing a GPU cluster
        metrics = {"validation_network_seconds": embedded - start}
        if len(val.clips):
            if kind.trainable:
                metrics["val_loss"] = float(np.average(val.loss, weights=val.n_segments))
            if kind.classifier:
                metrics["val_acc"] = float(np.mean(np.array(val.pred_id) == val.clips.machine_id.to_numpy()))
        found = figures(cfg, kind, out, self.is_val, proxies, self.proxy_rows, monitor)
        metrics.update(found.values)
        metrics["validation_backend_seconds"] = time.perf_counter() - embedded
        return metrics, out, found


def validation_clips(train_clips: pd.DataFrame, val_clips: pd.DataFrame, per_id: int,
                     seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """(the validation clips, (n,) which were held out of training): per ID every held-out clip and a seeded
    sample of the training split, ``per_id`` clips in all (or all of them)."""
    both = pd.concat([train_clips.assign(_held=False), val_clips.assign(_held=True)], ignore_index=True)
    picked = []
    for _, g in both.groupby("machine_id", sort=True):
        held, rest = g[g._held], g[~g._held]
        room = max(per_id - len(held), 0)
        picked.append(pd.concat([held, rest if len(rest) <= room else rest.sample(n=room, random_state=seed)]))
    chosen = pd.concat(picked).sort_values(["_held", "path"], ignore_index=True)
    return chosen.drop(columns="_held"), chosen._held.to_numpy(bool)


# ---------------------------------------------------------------------------------------------
# the loop

@dataclass
class Distributed:
    """Hooks a data-parallel launcher (Ray Train) passes to ``fit``; the defaults are one process."""

    prepare_model: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m
    prepare_loader: Callable[[DataLoader], DataLoader] = lambda dl: dl
    is_main: bool = True  # only the main process writes checkpoints


@dataclass
class Prepared:
    """What a run trains on, decided before the first step: the config as it runs (network sizes from the
    data), the kind, the classifier's classes, the train / validation split, the feature cache, and the
    validation that follows every epoch."""

    cfg: Config
    kind: kinds.ModelKind
    classes: Classes
    train_clips: pd.DataFrame
    val_clips: pd.DataFrame
    cache: FeatureCache
    validation: Validation

    def meta(self) -> dict:
        """What every checkpoint records about the run (``save_checkpoint`` adds ``id_classes`` from the IDs)."""
        return dict(machine_type=self.cfg.train.machine_type, n_train_clips=len(self.train_clips),
                    n_val_clips=len(self.val_clips), classes=self.classes.names)


def prepare(cfg: Config) -> Prepared:
    """Select the data (``training_clips``, ``other_type_proxies``, ``class_map``), check that the kind can
    train on it, split off the validation clips, fill the feature cache and set up the validation."""
    t, kind = cfg.train, kinds.of(cfg)
    if t.classes == "all" and not kind.classifier:
        raise TrainError(f"train.classes=all needs a classifier; the {kind.name} model has no classes")
    if t.attributes and not kind.classifier:
        raise TrainError(f"train.attributes needs a classifier; the {kind.name} model has no classes")
    index = index_dataset(cfg.data.root).clips
    clips = training_clips(cfg, index)
    others = other_type_proxies(cfg, index)
    classes = class_map(cfg, clips, index, others)
    if kind.classifier and len(classes.names) < 2:
        raise TrainError(f"machine type {t.machine_type!r} has one machine ID ({list(classes.ids)})"
                         f"{' and no two attribute values' if t.attributes else ''}: the self-supervised "
                         "classifier needs at least two classes (or train.classes=all)")
    cfg = kind.resolve(cfg, len(classes.names))
    train_clips, val_clips = split_train_val(clips, t.val_fraction, t.seed)
    cache = FeatureCache(cache_dir_for(cfg.data.root, cfg.data.cache_dir), cfg.features)
    # in a Ray Train worker, as many processes as the CPUs it was given (Ray sets torch's threads to them)
    cache.warm(pd.concat([clips.path, others.path, classes.pool.path]), kinds=kind.features, progress=t.progress,
               workers=max(1, torch.get_num_threads()))
    validation = Validation(cfg, kind, train_clips, val_clips, others, cache, classes.ids)
    return Prepared(cfg, kind, classes, train_clips, val_clips, cache, validation)


def _loader(run: Prepared, dist: Distributed) -> DataLoader:
    """The training items (every segment of the type's clips, and the other types' with ``classes: all``)."""
    cfg, t = run.cfg, run.cfg.train
    class_of = {n: i for i, n in enumerate(run.classes.names)}
    named = run.train_clips.assign(machine_id=class_names(run.train_clips, t.attributes))  # ID -> class name
    train_ds = run.kind.train_dataset(cfg, pd.concat([named, run.classes.pool], ignore_index=True), run.cache, class_of)
    sampler = make_sampler(cfg, run.kind, train_ds, len(run.classes.names))
    return dist.prepare_loader(DataLoader(
        train_ds, batch_size=t.batch_size, shuffle=sampler is None, sampler=sampler, num_workers=t.num_workers,
        generator=torch.Generator().manual_seed(t.seed), drop_last=len(train_ds) > t.batch_size))


def _step_model(run: Prepared, model: torch.nn.Module, device: torch.device, steps: int) -> torch.nn.Module:
    """What the training steps call: the model, compiled when ``train.compile`` says so for this run."""
    t, f = run.cfg.train, run.cfg.features
    if not run.kind.classifier:
        return model
    compiled, why = compile_decision(t.compile, device, steps, t.batch_size * f.n_freq * f.segment_frames)
    if t.progress:
        print(why, file=sys.stderr)
    return torch.compile(model) if compiled else model


class Checkpoints:
    """``best.pt`` (with the fitted scorers) and ``last.pt`` under ``out_dir``, written by the main process."""

    def __init__(self, run: Prepared, out_dir: Path, core: torch.nn.Module, is_main: bool):
        self.run, self.core, self.is_main = run, core, is_main
        self.best, self.last = out_dir / "best.pt", out_dir / "last.pt"
        out_dir.mkdir(parents=True, exist_ok=True)
        if is_main:
            (out_dir / "config.json").write_text(json.dumps(to_dict(run.cfg), indent=1))

    def save(self, epoch: int, metrics: dict, out: ClipOutputs | None, calibrate: np.ndarray | None, *,
             choice: dict | None = None, scored_last: bool = False) -> None:
        """``last.pt``; and, when ``out`` (this epoch improved), ``best.pt`` with back-ends fitted on ``out``
        (``calibrate``: the clips that set the thresholds; ``choice``: validation's choice of back-end).
        ``scored_last``: ``last.pt`` gets them too."""
        if not self.is_main:
            return
        run = self.run
        common = dict(epoch=epoch, val=_plain_metrics(metrics), **run.meta())
        fitted = None
        if out is not None:
            fitted = fit_scoring(run.cfg, run.kind, out, calibrate, choice)
            fitted.settings["references"] = references_note(run.validation, len(out.clips))
            fitted.settings["fitted_on_every_clip"] = len(out.clips) == run.validation.n_training_clips
        save_checkpoint(self.last, self.core, run.cfg, run.classes.ids, scoring=fitted if scored_last else None,
                        **common)
        if fitted is not None:
            save_checkpoint(self.best, self.core, run.cfg, run.classes.ids, scoring=fitted, **common)


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
    g = _seed_everything(cfg.train.seed)
    run = prepare(cfg)
    device = _device(cfg.train.device)
    model = dist.prepare_model(run.kind.build(run.cfg, len(run.classes.names)).to(device))
    core = getattr(model, "module", model)  # what a checkpoint holds (DDP wraps the model)
    ckpts = Checkpoints(run, Path(out_dir), core, dist.is_main)
    report = on_epoch or (lambda metrics, checkpoint: None)
    if not run.kind.trainable:  # one "epoch": fit the back-ends, save
        start = time.perf_counter()
        metrics, out, found = run.validation(core, device, cfg.train.monitor)
        metrics = {"epoch": 0, **metrics, "epoch_seconds": time.perf_counter() - start,
                   "setup_seconds": start - fit_start, **_backend(found)}
        ckpts.save(0, metrics, out, np.ones(len(out.clips), bool), scored_last=True,  # best = last: nothing trains
                   choice=_choice(cfg, found, cfg.train.monitor))
        finish(run, ckpts, device)
        report({**metrics, **_best_keys(metrics), "final": True},
               ckpts.best if dist.is_main else None)
        return TrainResult(ckpts.best, ckpts.last, 0, metrics, [metrics])
    loader = _loader(run, dist)
    opt = torch.optim.Adam(model.parameters(), lr=run.cfg.train.lr, weight_decay=run.cfg.train.weight_decay)
    step_model = _step_model(run, model, device, run.cfg.train.epochs * len(loader))
    return _epochs(run, step_model, core, loader, opt, device, g, ckpts, report, time.perf_counter() - fit_start)


def _epochs(run: Prepared, step_model, core, loader: DataLoader, opt, device, g: torch.Generator,
            ckpts: Checkpoints, report: Callable[[dict, Path | None], None], setup_seconds: float) -> TrainResult:
    """The epoch loop: train, validate, keep the best checkpoint (with validation's choice of back-end), stop
    early after ``train.patience`` epochs without a better ``train.monitor``; then ``finish``."""
    cfg, kind, t = run.cfg, run.kind, run.cfg.train
    n_classes = len(run.classes.names)
    best, best_epoch, history, bad_epochs, monitor = None, -1, [], 0, None
    for epoch in range(t.epochs):
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        if hasattr(loader.sampler, "set_epoch"):  # DistributedSampler
            loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        train_loss = _train_epoch(step_model, loader, opt, cfg, kind, n_classes, device, g, f"epoch {epoch}")
        val_start = time.perf_counter()
        val_metrics, out, found = run.validation(core, device, t.monitor)
        end = time.perf_counter()
        metrics = {"epoch": epoch, "train_loss": train_loss, **val_metrics, "epoch_seconds": end - start,
                   "validation_seconds": end - val_start, "setup_seconds": setup_seconds, **_backend(found)}
        history.append(metrics)
        if epoch == 0:  # the figure that picks the best epoch, fixed for the whole run
            monitor = monitored(metrics, t.monitor)
        value = metrics.get(monitor) if monitor else None
        if monitor is None:
            improved = True  # no validation figure at all: the last epoch is kept
        elif not isinstance(value, float) or not math.isfinite(value):
            improved = False
        else:
            improved = best is None or (value < best if monitor.endswith("loss") else value > best)
        if improved:
            best, best_epoch, bad_epochs = value, epoch, 0
        else:
            bad_epochs += 1
        ckpts.save(epoch, metrics, out if improved else None, run.validation.is_val,
                   choice=_choice(cfg, found, monitor))
        if t.progress:
            shown = "  ".join(f"{k} {metrics[k]:.4f}" for k in ("train_loss", "val_loss", "val_acc", "val_proxy_auc",
                                                                 "cv_proxy_auc") if k in metrics)
            print(f"epoch {epoch:3d}  {shown}  {metrics.get('backend', '')}{'  *' if best_epoch == epoch else ''}",
                  file=sys.stderr)
        final = epoch == t.epochs - 1 or bad_epochs > t.patience
        if final:
            finish(run, ckpts, device)
        report({**metrics, **_best_keys(history[best_epoch]), "final": final},
               ckpts.best if (improved or final) and ckpts.is_main else None)
        if final:
            break
    return TrainResult(ckpts.best, ckpts.last, best_epoch, history[best_epoch], history)


def monitored(metrics: dict, wanted: str) -> str | None:
    """The figure that picks the best epoch: ``wanted`` (``train.monitor``) when the first epoch has it, else
    the first of ``cv_proxy_auc``, ``val_proxy_auc``, ``val_loss`` it has (IDs with one clip each have no
    cross-fitted figure, a type without held-out clips no loss); None with none (the last epoch is kept).

    >>> monitored({"cv_proxy_auc": float("nan"), "val_loss": 0.5}, "cv_proxy_auc")
    'val_loss'
    """
    for name in dict.fromkeys((wanted, *FAMILIES, "val_loss")):
        value = metrics.get(name)
        if isinstance(value, float) and math.isfinite(value):
            return name
    return None


def _backend(found: Figures) -> dict:
    """The back-end validation chose this epoch, as reported with the metrics (a name, not a number)."""
    return {"backend": found.chosen} if found.chosen else {}


def _choice(cfg: Config, found: Figures, monitor: str | None) -> dict | None:
    """What the best checkpoint records about the back-end: validation's choice, unless ``scoring.scorer``
    names one (then only the figures)."""
    family = family_of(monitor) or "cv_proxy_auc"
    choice = found.choice(family)
    if cfg.scoring.scorer != "default":
        choice.update(chosen=cfg.scoring.scorer, how=f"fixed by scoring.scorer: {cfg.scoring.scorer}")
    elif not choice["chosen"]:
        return None
    else:
        choice["how"] = f"the highest {family} among {len(choice['values'])} back-ends"
    return choice


def references_note(validation: Validation, n_fitted: int) -> str:
    """Which clips the back-ends of a checkpoint were fitted on."""
    n_all = validation.n_training_clips
    return (f"all {n_all} training clips" if n_fitted == n_all else
            f"a sample of {n_fitted} of the {n_all} training clips (validation.max_references_per_id); "
            "mimimi.training.finalize refits them on all")


def finish(run: Prepared, ckpts: Checkpoints, device) -> None:
    """At the end of a run: where validation used a sample of the clips, refit the best checkpoint's back-ends
    on every training clip (``finalize``)."""
    if ckpts.is_main and not run.validation.complete and ckpts.best.is_file():
        finalize(ckpts.best, device)


def finalize(checkpoint: str | Path, device: str | torch.device = "cpu") -> bool:
    """Refit the back-ends of ``checkpoint`` on every normal training clip of its type (its config says where
    the data is), keeping its weights and validation's choice; True when it changed. A checkpoint whose
    back-ends already saw every clip is left alone. Cost: one pass of the model over the type's training
    clips. The search driver calls it for the chosen trial (ASHA may have stopped it before its own end)."""
    loaded = load_checkpoint(checkpoint, map_location=device)
    if loaded.scoring is None:
        return False
    settings = loaded.scoring.settings
    every_clip = settings.get("fitted_on_every_clip")
    if every_clip is None:  # a checkpoint written before the flag: its note says it
        every_clip = str(settings.get("references", "all")).startswith("all")
    if every_clip:
        return False
    cfg, kind = loaded.cfg, kinds.of(loaded.cfg)
    clips = training_clips(cfg)
    train_clips, val_clips = split_train_val(clips, cfg.train.val_fraction, cfg.train.seed)
    every = pd.concat([train_clips, val_clips], ignore_index=True)
    held = np.r_[np.zeros(len(train_clips), bool), np.ones(len(val_clips), bool)]
    cache = FeatureCache(cache_dir_for(cfg.data.root, cfg.data.cache_dir), cfg.features)
    stats = log_mel_stats(cache, every.path) if kind.trainable else None
    out = clip_outputs(loaded.model.to(device), kind, cfg, every, loaded.ids, cache, cfg.scoring.aggregate, device,
                       stats=stats, batch_segments=cfg.train.batch_size)
    fitted = fit_scoring(cfg, kind, out, held if kind.trainable else np.ones(len(every), bool),
                         loaded.scoring.choice or None)
    fitted.settings["references"] = f"all {len(every)} training clips (refitted after training)"
    fitted.settings["fitted_on_every_clip"] = True
    meta = {k: v for k, v in loaded.meta.items() if k not in ("versions", "id_classes")}
    save_checkpoint(checkpoint, loaded.model, cfg, loaded.ids, scoring=fitted, **meta)
    return True


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
    """``best_<figure>``: every number of the best epoch (``best_epoch`` its number), reported with every
    epoch, so that a search can rank on, and break ties by, any figure of the checkpoint it would deliver.

    >>> _best_keys({"epoch": 3, "val_loss": 0.5, "backend": "knn", "cv_proxy_auc": 0.8})
    {'best_epoch': 3, 'best_val_loss': 0.5, 'best_cv_proxy_auc': 0.8}
    """
    return {f"best_{k}": v for k, v in best.items()
            if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}


def _plain_metrics(metrics: dict) -> dict:
    """The metrics a checkpoint records (numbers and the chosen back-end's name)."""
    return {k: (float(v) if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) else v)
            for k, v in metrics.items()}


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


def common_backend(checkpoints: list[str | Path]) -> tuple[str, dict[str, float]]:
    """One back-end for several machine types' checkpoints (DCASE 2023+ first-shot rules: nothing is tuned
    per type): the candidate with the highest mean over the types of its validation figure, as each
    checkpoint recorded it (``Scoring.choice``); (name, mean figure per candidate)."""
    values: dict[str, list[float]] = {}
    metric = None
    for path in checkpoints:
        scoring = load_checkpoint(path).scoring
        choice = scoring.choice if scoring is not None else {}
        metric = metric or choice.get("metric")
        for name, v in choice.get("values", {}).items():
            values.setdefault(name, []).append(float(v))
    means = {n: float(np.mean(v)) for n, v in values.items() if len(v) == len(checkpoints) and np.isfinite(v).all()}
    if not means:
        raise TrainError("no back-end has a validation figure for every machine type")
    return max(means, key=lambda n: (means[n], -list(means).index(n))), means


def set_backend(checkpoint: str | Path, name: str, how: str, values: dict[str, float] | None = None) -> None:
    """Make ``name`` the default back-end of ``checkpoint`` (its fitted back-ends and thresholds stay), and
    record why in its ``Scoring.choice``."""
    loaded = load_checkpoint(checkpoint)
    if loaded.scoring is None:
        raise TrainError(f"{checkpoint}: this checkpoint has no fitted back-ends")
    choice = {**loaded.scoring.choice, "chosen": name, "how": how, **({"values": values} if values else {})}
    meta = {k: v for k, v in loaded.meta.items() if k not in ("versions", "id_classes")}
    save_checkpoint(checkpoint, loaded.model, loaded.cfg, loaded.ids, scoring=loaded.scoring.with_default(name, choice),
                    **meta)
