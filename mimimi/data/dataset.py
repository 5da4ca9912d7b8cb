"""torch Datasets over an index table, reading features from the cache (never from wavs once cached).

* ``TrainSegments``: 64-frame complex STFT segments of normal training clips, with the clip's machine-ID
  class: every segment of every clip per epoch at a random offset (or a given number of random segments
  per clip); ``set_epoch`` reseeds so every epoch sees new offsets, reproducibly.
* ``ClipSegments``: every segment of each clip, for scoring whole clips.
* ``TrainFrames`` / ``ClipFrames``: stacked log-mel frames for the DCASE autoencoder baseline.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mimimi.features import FeatureCache, eval_segments, stack_frames

LABEL_CODES = {"normal": 0, "anomaly": 1, "unknown": -1}


def id_map(clips: pd.DataFrame) -> dict[str, int]:
    """Machine ID -> class index, in sorted ID order (the network's output channels).

    >>> id_map(pd.DataFrame({"machine_id": ["04", "00", "04", "02"]}))
    {'00': 0, '02': 1, '04': 2}
    """
    return {m: i for i, m in enumerate(sorted(clips.machine_id.unique()))}


class IDMap(dict):
    """Machine ID -> class index, as ``id_map`` gives it (the per-ID scorers, thresholds, ``mimimi.score`` and
    tracking read its keys, the clip datasets its values), with ``classes``: machine ID -> every output class
    the ID owns, in index order. With ``train.attributes`` an ID owns one class per attribute value of its
    training clips and maps to the first; otherwise ``classes[m] == (ids[m],)``. ``dict(ids)`` keeps the map
    and drops ``classes``: pass the IDMap itself to ``mimimi.scoring.outputs.clip_outputs``.

    >>> ids = IDMap({"00": 0, "02": 2}, {"00": [0, 1], "02": [2]})
    >>> ids == {"00": 0, "02": 2}, ids.classes
    (True, {'00': (0, 1), '02': (2,)})
    """

    def __init__(self, ids: Mapping[str, int], classes: Mapping[str, Sequence[int]] | None = None):
        super().__init__((str(m), int(i)) for m, i in ids.items())
        if classes is None:
            classes = {m: (i,) for m, i in self.items()}
        self.classes = {str(m): tuple(sorted(int(c) for c in cs)) for m, cs in classes.items()}
        if set(self.classes) != set(self) or any(not cs or self[m] != cs[0] for m, cs in self.classes.items()):
            raise ValueError(f"machine ID classes {self.classes} do not match the ID map {dict(self)} "
                             "(every ID needs its classes, the first being its own index)")


def id_classes(ids: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Machine ID -> its output classes: ``IDMap.classes``, or one class per ID for a plain mapping.

    >>> id_classes({"00": 0, "02": 1})
    {'00': (0,), '02': (1,)}
    """
    return dict(ids.classes) if isinstance(ids, IDMap) else {str(m): (int(i),) for m, i in ids.items()}


def _classes(clips: pd.DataFrame, ids: dict[str, int]) -> np.ndarray:
    unknown = sorted(set(clips.machine_id) - set(ids))
    if unknown:
        raise ValueError(f"machine ID(s) {unknown} are not among the model's IDs {sorted(ids)}")
    return clips.machine_id.map(ids).to_numpy(np.int64)


class ClipItem(NamedTuple):
    x: torch.Tensor  # (S, 1, F, T) complex segments, or (S, n_stack * n_mels) frames
    machine_id: int  # class index in the ID map
    label: int  # 0 normal, 1 anomaly, -1 unknown
    index: int  # row in the index table


class TrainSegments(Dataset):
    """Training segments -> ((1, F, T) complex64, class).

    ``segments_per_clip`` 0: each epoch, a clip of ``frames`` STFT frames gives ``frames // T`` adjacent,
    non-overlapping segments that start at a random offset in ``[0, frames - k T]``, so an epoch sees
    (nearly) every frame once and the segment boundaries move from epoch to epoch. ``n`` > 0: ``n``
    segments at independent random starts per clip (the paper's recipe with n = 1).
    """

    def __init__(self, clips: pd.DataFrame, cache: FeatureCache, ids: dict[str, int],
                 segments_per_clip: int = 0, seed: int = 0):
        self.paths = clips.path.tolist()
        self.classes = _classes(clips, ids)
        self.cache = cache
        self.segments_per_clip = segments_per_clip
        self.seed = seed
        self.epoch = 0
        seg = cache.cfg.segment_frames
        self.located = [cache.locate(p, "stft") for p in self.paths]  # each entry's place, found once
        self.frames = np.array([at.shape[-1] for at in self.located], dtype=np.int64)  # (clips,)
        per_clip = self.frames // seg if segments_per_clip == 0 else np.full(len(self.paths), segments_per_clip)
        self.per_clip = np.maximum(per_clip, 1)  # a clip shorter than a segment is padded on load: one segment
        self.first = np.concatenate([[0], np.cumsum(self.per_clip)])  # (clips + 1,) item index of each clip's first

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (before the DataLoader starts its workers)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self.first[-1])

    def item_classes(self) -> np.ndarray:
        """(len,) the class of every item (for a class-balanced sampler)."""
        return np.repeat(self.classes, self.per_clip)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        clip = int(np.searchsorted(self.first, i, side="right")) - 1
        j = i - int(self.first[clip])  # the j-th segment of this clip
        seg, frames = self.cache.cfg.segment_frames, int(self.frames[clip])
        if self.segments_per_clip == 0:
            spare = max(frames - int(self.per_clip[clip]) * seg, 0)
            offset = int(np.random.default_rng((self.seed, self.epoch, clip)).integers(0, spare + 1))
            start = offset + j * seg  # same clip, same epoch -> one offset for all its segments
        else:
            rng = np.random.default_rng((self.seed, self.epoch, i))  # same item, same epoch -> same segment
            start = int(rng.integers(0, max(frames - seg, 0) + 1))
        spec = self.cache.frames(self.located[clip], start, start + seg)  # (F, <= seg): read from the cache
        return torch.from_numpy(spec[None]), int(self.classes[clip])


class ClipSegments(Dataset):
    """All evaluation segments of each clip (use with ``batch_size=None``)."""

    def __init__(self, clips: pd.DataFrame, cache: FeatureCache, ids: dict[str, int]):
        self.paths = clips.path.tolist()
        self.classes = _classes(clips, ids)
        self.labels = clips.label.map(LABEL_CODES).to_numpy(np.int64)
        self.cache = cache

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> ClipItem:
        segs = eval_segments(self.cache.get(self.paths[i], "stft"), self.cache.cfg)  # (S, F, T)
        return ClipItem(torch.from_numpy(segs[:, None]), int(self.classes[i]), int(self.labels[i]), i)


class ClipFrames(ClipSegments):
    """All stacked log-mel frames of each clip, (T - n_stack + 1, n_stack * n_mels)."""

    def __init__(self, clips: pd.DataFrame, cache: FeatureCache, ids: dict[str, int], n_stack: int = 5):
        super().__init__(clips, cache, ids)
        self.n_stack = n_stack

    def __getitem__(self, i: int) -> ClipItem:
        frames = stack_frames(np.asarray(self.cache.get(self.paths[i], "logmel")), self.n_stack)
        return ClipItem(torch.from_numpy(frames), int(self.classes[i]), int(self.labels[i]), i)


class TrainFrames(Dataset):
    """Every stacked log-mel vector of every clip, flattened: the DCASE AE's training set.

    The vectors of all clips are kept in memory (a 10 s clip gives 309 × 640 float32 = 0.8 MB).
    """

    def __init__(self, clips: pd.DataFrame, cache: FeatureCache, n_stack: int = 5):
        self.vectors = torch.from_numpy(np.concatenate(
            [stack_frames(np.asarray(cache.get(p, "logmel")), n_stack) for p in clips.path]))

    def __len__(self) -> int:
        return len(self.vectors)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.vectors[i]
