"""The model kinds, one object each: what features a kind reads, how it is built and trained, and what it
outputs per segment. Training, evaluation, scoring and the search ask the kind instead of testing names.

* ``complex``: the paper's complex network on 64-frame complex STFT segments, trained to tell machine IDs
  apart; native score ``ce`` (cross-entropy against the clip's own ID: with several classes per ID,
  ``train.attributes``, −log of the summed probability of the ID's classes, ``group_nll``).
* ``magnitude``: the same backbone fed |STFT| (phase dropped), native score ``ce``.
* ``ae``: the DCASE 2020 baseline autoencoder on 5 stacked log-mel frames; native score ``recon``.
* ``stats-knn``: no training. A clip is the mean and standard deviation over time of its log-mel
  spectrogram (2 x n_mels values); the embedding scorers (kNN by default) compare it with the training
  normals of its ID. The trivial baseline every results table shows beside the trained model.

Every kind gives, per segment, an embedding (``SegmentOutputs.embedding``) for the ``knn``,
``mahalanobis`` and ``gmm`` scorers of ``mimimi.scoring``: for the networks the time-averaged magnitude of
the backbone's last block (``ComplexNet.embed_and_classify`` says why), or with a cosine head
(``model.net.head``, ``mimimi.nn.heads``) its normalised projection, for the autoencoder its bottleneck
code, for ``stats-knn`` the statistics themselves.

>>> get("complex").feature, get("ae").native, get("stats-knn").trainable
('stft', 'recon', False)
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from mimimi.config import Config
from mimimi.data.dataset import ClipFrames, ClipItem, ClipSegments, TrainFrames, TrainSegments
from mimimi.features import FeatureCache, Kind
from mimimi.nn import ComplexNet, DenseAE


class SegmentOutputs(NamedTuple):
    """What a model says about the S segments (or frame vectors) of one clip."""

    loss: Tensor  # (S,) the training loss of each segment against the clip's ID (validation loss)
    native: Tensor | None  # (S,) the kind's own anomaly score (ce, recon); None for stats-knn
    embedding: Tensor  # (S, D) real
    log_probs: Tensor | None  # (S, n_classes) class log-probabilities of a classifier, else None


class LogMelStats(nn.Module):
    """Parameter-free: (S, n_mels, T) log-mel -> (S, 2 * n_mels) mean and standard deviation over time."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=False)], dim=-1)


class ClipLogMel(ClipSegments):
    """One item per clip: its whole log-mel spectrogram as a single (1, n_mels, T) 'segment'."""

    def __getitem__(self, i: int) -> ClipItem:
        logmel = np.array(self.cache.get(self.paths[i], "logmel"), dtype=np.float32)  # (n_mels, T), a copy
        return ClipItem(torch.from_numpy(logmel[None]), int(self.classes[i]), int(self.labels[i]), i)


def member_mask(targets: Tensor, n_classes: int) -> Tensor:
    """(S, G) class indices padded with -1 (each row: the classes of one segment's machine ID) -> (S, n_classes)
    bool, True at those classes.

    >>> member_mask(torch.tensor([[0, 2], [1, -1]]), 3)
    tensor([[ True, False,  True],
            [False,  True, False]])
    """
    return (targets[:, :, None] == torch.arange(n_classes, device=targets.device)).any(1)


def group_nll(log_probs: Tensor, member: Tensor) -> Tensor:
    """−log Σ_{c in member} p(c) per row: (S, n) log-probabilities, (S, n) bool -> (S,). For one class per row
    exactly ``F.nll_loss(log_probs, c, reduction="none")`` (the logsumexp of a single finite value is itself).

    >>> lp = torch.tensor([[0.5, 0.3, 0.2]]).log()
    >>> round(float(group_nll(lp, torch.tensor([[True, True, False]]))), 4) == round(-math.log(0.8), 4)
    True
    """
    return -log_probs.masked_fill(~member, -math.inf).logsumexp(1)


def arcface_loss(cos_logits: Tensor, target: Tensor, scale: float, margin: float, reduction: str = "mean") -> Tensor:
    """ArcFace (additive angular margin) cross-entropy for ``cos_logits = scale * cos`` (B, n).

    ``target`` is class indices (B,) or soft targets (B, n) from mixup: the loss is then the target-weighted
    sum over classes c of the cross-entropy with the margin applied at c (Σ_c y_c · CE_c), which equals the
    usual ArcFace loss for a one-hot target. A bool ``target`` (B, n) is a set of classes (a machine ID's with
    ``train.attributes``): −log Σ_{c in the set} exp(−CE_c), which is CE_c for a set of one.
    """
    n = cos_logits.shape[1]
    if target.ndim == 1 and target.dtype != torch.bool:
        target = F.one_hot(target, n).to(cos_logits.dtype)
    cos = (cos_logits.float() / scale).clamp(-1 + 1e-6, 1 - 1e-6)  # (B, n)
    with_margin = scale * torch.cos(torch.acos(cos) + margin)  # (B, n): the logit of c when c is the target
    eye = torch.eye(n, dtype=torch.bool, device=cos.device)
    logits = torch.where(eye, with_margin[:, None, :], scale * cos[:, None, :])  # (B, c, n): margin at c only
    ce = -logits.log_softmax(dim=2).diagonal(dim1=1, dim2=2)  # (B, n): CE_c
    if target.dtype == torch.bool:
        per_item = -(-ce).masked_fill(~target, -math.inf).logsumexp(1)  # (B,)
    else:
        per_item = (target.float() * ce).sum(1)  # (B,)
    return per_item.mean() if reduction == "mean" else per_item


class ModelKind:
    """One model kind. Subclasses fill in the class attributes and the methods."""

    name: str
    feature: Kind  # what the feature cache stores for it
    trainable: bool = True
    classifier: bool = False  # trained to tell machine IDs apart: needs two or more IDs
    native: str | None = None  # its own anomaly score: "ce", "recon" or None

    @property
    def features(self) -> tuple[Kind, ...]:
        """Every feature kind its scoring reads: its own, and log-mel for ``knn-stats`` when it is trained."""
        return tuple(dict.fromkeys((self.feature, "logmel") if self.trainable else (self.feature,)))

    def resolve(self, cfg: Config, n_classes: int) -> Config:
        """The config as it runs: network sizes follow the data (``n_classes``: the classifier's outputs)."""
        return cfg

    def build(self, cfg: Config, n_ids: int) -> nn.Module:
        raise NotImplementedError

    def train_dataset(self, cfg: Config, clips: pd.DataFrame, cache: FeatureCache, ids: dict[str, int]) -> Dataset:
        raise NotImplementedError(f"{self.name} is not trained")

    def train_classes(self, dataset: Dataset) -> np.ndarray | None:
        """The class of every training item (for the balanced sampler); None: the kind has no classes."""
        return None

    def clip_dataset(self, cfg: Config, clips: pd.DataFrame, cache: FeatureCache, ids: dict[str, int]) -> Dataset:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch, cfg: Config) -> tuple[Tensor, int]:
        """(mean training loss of a batch, batch size); ``batch`` as the train loader yields it, augmented."""
        raise NotImplementedError(f"{self.name} is not trained")

    def segment_outputs(self, model: nn.Module, x: Tensor, targets: Tensor, cfg: Config) -> SegmentOutputs:
        """``x``: (S, ...) segments; ``targets``: (S, G) long, the output classes of each segment's machine ID
        padded with -1 (G = 1 but with ``train.attributes``; with ``train.classes: all`` they are among every
        type's classes)."""
        raise NotImplementedError


class Classifier(ModelKind):
    """``complex`` and ``magnitude``: the ID classifier of the paper."""

    feature, classifier, native = "stft", True, "ce"

    def __init__(self, name: str):
        self.name = name

    def resolve(self, cfg: Config, n_classes: int) -> Config:
        net = dataclasses.replace(cfg.model.net, n_ids=n_classes, input=self.name,
                                  n_freq=cfg.features.n_freq)
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, net=net))

    def build(self, cfg: Config, n_ids: int) -> nn.Module:
        return ComplexNet(dataclasses.replace(cfg.model.net, n_ids=n_ids, input=self.name))

    def train_dataset(self, cfg, clips, cache, ids):
        return TrainSegments(clips, cache, ids, cfg.train.segments_per_clip, seed=cfg.train.seed)

    def train_classes(self, dataset: TrainSegments) -> np.ndarray:
        return dataset.item_classes()

    def clip_dataset(self, cfg, clips, cache, ids):
        return ClipSegments(clips, cache, ids)

    @staticmethod
    def _ce(logits: Tensor, target: Tensor, reduction: str) -> Tensor:
        """One head's cross-entropy: soft targets (B, n), or a bool (B, n) set of classes (``group_nll``)."""
        if target.dtype != torch.bool:
            return F.cross_entropy(logits.float(), target, reduction=reduction)
        per_item = group_nll(logits.float().log_softmax(1), target)
        return per_item.mean() if reduction == "mean" else per_item

    def _loss(self, logits, target: Tensor, cfg: Config, reduction: str = "mean") -> Tensor:
        """Weighted cross-entropy of the three heads; the fused head with the ArcFace margin when it is one.
        ``target``: soft targets (B, n) (training) or each item's machine-ID classes as a bool (B, n) (scoring).

        The other cosine heads (``adacos``, ``subcluster_adacos``, ``adaproj``) have no margin: their loss is
        the plain cross-entropy of ``Logits.total``, their class logits at AdaCos's fixed scale. For
        ``subcluster_adacos`` those are the logsumexp of each class's sub-cluster logits, so this is
        −Σ_c y_c log Σ_k softmax(z)_{c,k}, the sub-cluster AdaCos loss."""
        w, net = cfg.train.loss_weights, cfg.model.net
        terms = [w[0] * self._ce(logits.magnitude, target, reduction),
                 w[1] * self._ce(logits.complex, target, reduction)]
        fused = (arcface_loss(logits.total, target, net.arcface_scale, cfg.train.arcface_margin, reduction)
                 if net.head == "arcface" else self._ce(logits.total, target, reduction))
        return sum(t for t, wi in zip(terms + [w[2] * fused], w) if wi)

    def loss(self, model, batch, cfg):
        x, y = batch  # (B, 1, F, T) complex, (B, n_ids) soft targets
        return self._loss(model(x), y, cfg), len(x)

    def segment_outputs(self, model, x, targets, cfg):
        emb = model.embed_and_classify(x)
        logits = emb.logits
        log_probs = logits.total.float().log_softmax(1)  # (S, n_classes)
        member = member_mask(targets, log_probs.shape[1])  # (S, n_classes): the classes of the segment's ID
        return SegmentOutputs(loss=self._loss(logits, member, cfg, reduction="none"),
                              native=group_nll(log_probs, member), embedding=emb.embedding.float(),
                              log_probs=log_probs)


class Autoencoder(ModelKind):
    name, feature, native = "ae", "logmel", "recon"

    def resolve(self, cfg, n_classes):
        ae = dataclasses.replace(cfg.model.ae, n_mels=cfg.features.n_mels)
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ae=ae))

    def build(self, cfg, n_ids):
        return DenseAE(dataclasses.replace(cfg.model.ae, n_mels=cfg.features.n_mels))

    def train_dataset(self, cfg, clips, cache, ids):
        return TrainFrames(clips, cache, cfg.model.ae.n_stack)

    def clip_dataset(self, cfg, clips, cache, ids):
        return ClipFrames(clips, cache, ids, cfg.model.ae.n_stack)

    def loss(self, model, batch, cfg):
        return F.mse_loss(model(batch).x_hat.float(), batch), len(batch)

    def segment_outputs(self, model, x, targets, cfg):
        out = model(x)
        err = (out.x_hat.float() - x).pow(2).mean(1)  # (V,) per stacked frame vector
        return SegmentOutputs(loss=err, native=err, embedding=out.z.float(), log_probs=None)


class Stats(ModelKind):
    name, feature, trainable = "stats-knn", "logmel", False

    def build(self, cfg, n_ids):
        return LogMelStats()

    def clip_dataset(self, cfg, clips, cache, ids):
        return ClipLogMel(clips, cache, ids)

    def segment_outputs(self, model, x, targets, cfg):
        emb = model(x)
        return SegmentOutputs(loss=torch.zeros(len(x)), native=None, embedding=emb, log_probs=None)


KINDS: dict[str, ModelKind] = {k.name: k for k in (Classifier("complex"), Classifier("magnitude"), Autoencoder(),
                                                    Stats())}


def get(name: str) -> ModelKind:
    if name not in KINDS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(KINDS)}")
    return KINDS[name]


def of(cfg: Config) -> ModelKind:
    """The kind of ``cfg.model.name``."""
    return get(cfg.model.name)

