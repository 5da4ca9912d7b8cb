"""A model's pass over clips: every segment of every clip through the model, then one row per clip.

A model kind (``mimimi.kinds``) gives per segment an embedding, and for trained kinds its native score
(``ce``: cross-entropy against the clip's own ID, −log Σ p(c) over the ID's classes c when it owns several,
``train.attributes``; ``recon``: reconstruction error). ``clip_outputs`` turns them into one row per clip:
the native score aggregated over segments, the clip embedding (the mean of its segment embeddings), the
predicted ID (the owner of the likeliest of the type's classes) and, for trained kinds, the clip's log-mel
mean and standard deviation (``knn-stats``).

Cost: one forward pass per segment; memory holds one batch of segments and one embedding row per clip.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from mimimi import metrics as M
from mimimi import precision
from mimimi.config import Config
from mimimi.data.dataset import id_classes
from mimimi.features import FeatureCache, compute
from mimimi.kinds import LogMelStats, ModelKind


class Features:
    """What clip datasets read (``cfg``, ``get``): arrays held in memory under their keys (waveforms sent to
    the served model, corrupted validation clips), everything else through the feature cache."""

    def __init__(self, cache: FeatureCache, arrays: Mapping[str, np.ndarray] | None = None,
                 waves: Mapping[str, np.ndarray] | None = None):
        self.cache, self.cfg = cache, cache.cfg
        self.arrays = dict(arrays or {})  # key -> {kind: features}
        self.waves = dict(waves or {})  # key -> mono waveform, transformed on use

    def get(self, key: str, kind: str = "stft", mmap: bool = True) -> np.ndarray:
        if key in self.arrays:
            return self.arrays[key][kind]
        if key in self.waves:
            return compute(self.waves[key], self.cfg, kind)
        return self.cache.get(key, kind, mmap)


# --------------------------------------------------------------------------------------------- clip outputs
@dataclass
class ClipOutputs:
    """One row per clip of ``clips`` (same order)."""

    clips: pd.DataFrame
    native: np.ndarray | None  # (n,) native score aggregated over segments; None for stats-knn
    loss: np.ndarray  # (n,) training loss, mean over segments
    n_segments: np.ndarray  # (n,)
    embedding: np.ndarray  # (n, D) float64: mean of the segment embeddings
    log_probs: np.ndarray | None  # (n, n_classes) mean segment class log-probabilities (classifiers)
    pred_id: list  # predicted machine ID per clip (None without a classifier)
    stats: np.ndarray | None = None  # (n, 2 n_mels) log-mel mean + std of the clip (trained kinds: knn-stats)

    def select(self, mask: np.ndarray) -> ClipOutputs:
        m = np.asarray(mask, dtype=bool)
        return ClipOutputs(self.clips[m].reset_index(drop=True), None if self.native is None else self.native[m],
                           self.loss[m], self.n_segments[m], self.embedding[m],
                           None if self.log_probs is None else self.log_probs[m],
                           [p for p, k in zip(self.pred_id, m) if k], None if self.stats is None else self.stats[m])


def _batches(ds, batch_segments: int) -> Iterator[list]:
    """Consecutive clip items whose segments have one shape, up to ``batch_segments`` segments a batch
    (a clip with more goes alone); 1 gives one clip per batch."""
    batch, size = [], 0
    for item in ds:
        if batch and (size + len(item.x) > batch_segments or item.x.shape[1:] != batch[0].x.shape[1:]):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item.x)
    if batch:
        yield batch


@torch.no_grad()
def clip_outputs(model: nn.Module, kind: ModelKind, cfg: Config, clips: pd.DataFrame, ids: Mapping[str, int],
                 features, aggregate: str = "mean", device: str | torch.device = "cpu",
                 progress: bool = False, batch_segments: int = 1, stats: np.ndarray | None = None) -> ClipOutputs:
    """Run ``model`` over every segment of every clip; ``features`` is a FeatureCache or ``Features``.

    ``stats``: the clips' ``log_mel_stats`` when the caller has them (they do not depend on the model);
    otherwise a trained kind's are read from the log-mel features.

    ``batch_segments`` > 1 runs the segments of several clips in one forward pass (validation during
    training does); 1, the default, runs each clip alone, so that a clip's outputs never depend on which
    other clips were scored with it (a batched convolution may round differently)."""
    was_training = model.training
    model.eval().to(device)
    groups = id_classes(ids)  # machine ID -> its output classes (several with train.attributes)
    own = sorted((c, m) for m, cs in groups.items() for c in cs)  # pred_id: the ID of the likeliest own class
    own_classes, own_names = [c for c, _ in own], [m for _, m in own]
    width = max(len(cs) for cs in groups.values())
    padded = {m: torch.tensor(list(cs) + [-1] * (width - len(cs))) for m, cs in groups.items()}  # (G,) each
    row_ids = clips.machine_id.tolist()
    ds = kind.clip_dataset(cfg, clips, features, dict(ids))
    n = len(ds)
    native = np.empty(n) if kind.native else None
    loss, n_seg, embs, logp, preds = np.empty(n), np.empty(n, np.int64), [None] * n, [None] * n, [None] * n
    bar = tqdm(total=n, desc="scoring", unit="clip", leave=False,
               disable=None if progress else True)  # None: a bar only on a terminal
    for batch in _batches(ds, batch_segments):
        x = torch.cat([item.x for item in batch]).to(device)
        targets = torch.cat([padded[row_ids[item.index]].expand(len(item.x), width)  # (S, G): the ID's classes
                             for item in batch]).to(device)
        with precision.autocast(cfg.scoring.precision, device):
            out = kind.segment_outputs(model, x, targets, cfg)  # its outputs in fp32 (kinds casts them)
        start = 0
        for item in batch:
            part = slice(start, start + len(item.x))
            start = part.stop
            i = item.index
            if native is not None:
                native[i] = M.aggregate(out.native[part].cpu().numpy(), aggregate)
            loss[i] = float(out.loss[part].mean())
            n_seg[i] = len(item.x)
            embs[i] = out.embedding[part].double().mean(0).cpu().numpy()
            if out.log_probs is not None:
                logp[i] = out.log_probs[part].double().mean(0).cpu().numpy()
                preds[i] = own_names[int(np.argmax(logp[i][own_classes]))]
        bar.update(len(batch))
    bar.close()
    model.train(was_training)
    dim = embs[0].shape[0] if n else 0
    if stats is None and kind.trainable:  # the clip's log-mel statistics, for knn-stats
        stats = log_mel_stats(features, ds.paths)
    return ClipOutputs(clips.reset_index(drop=True), native, loss, n_seg,
                       np.stack(embs) if n else np.empty((0, dim)),
                       np.stack(logp) if n and logp[0] is not None else None, preds, stats)


def log_mel_stats(features, paths: Sequence[str]) -> np.ndarray:
    """(n, 2 n_mels) float64: each clip's log-mel mean and standard deviation over time, as ``stats-knn``
    computes them (``kinds.LogMelStats``)."""
    stats = LogMelStats()
    rows = [stats(torch.from_numpy(np.asarray(features.get(p, "logmel"), dtype=np.float64))[None])[0].numpy()
            for p in paths]
    return np.stack(rows) if rows else np.empty((0, 0))

