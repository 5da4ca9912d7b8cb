"""The fused head's cosine classifiers (``model.net.head`` other than ``gap``).

Every one reads the backbone embedding e (B, E) of ``ComplexNet.embed_and_classify``, projects it with a
learned Linear + BatchNorm1d to D = ``embedding_dim`` and L2-normalises it::

    x̂ = P(e) / ‖P(e)‖                       (B, E) -> (B, D), unit length: the embedding the scorers use

and turns x̂ into one logit per class (B, n). The logits are what softmax cross-entropy, ``group_nll`` (an ID's
summed class probability), ``pred_id`` and mixup's soft targets read, whatever the head. The heads differ in
the class geometry and the scale s:

==================  =========================================  =====================  ================
head                class logit z_c                            s                      centres
==================  =========================================  =====================  ================
arcface             s·cos(x̂, W_c)  (+ margin in the loss)      ``arcface_scale``      learned
adacos              s·cos(x̂, W_c)                              √2·ln(n − 1)           fixed or learned
subcluster_adacos   logsumexp_k s·cos(x̂, W_{c,k}), k < K       √2·ln(n·K − 1)         fixed or learned
adaproj             s·‖Q_cᵀ x̂‖ (cosine to a subspace)          √2·ln(n·M − 1)         fixed
==================  =========================================  =====================  ================

Sources (re-implemented from the maths, no code copied): AdaCos, Zhang et al., CVPR 2019 (arXiv 1905.00292);
sub-cluster AdaCos, Wilkinghoff, IJCNN 2021; AdaProj, Wilkinghoff, DCASE Workshop 2024 (arXiv 2403.14179).

The scales are AdaCos's *fixed* adaptive scale (:func:`adacos_scale`), not its dynamic one
(s_t = ln B_avg / cos(min(π/4, θ_med)), re-estimated on every training batch): ASDKit's AdaCos and sub-cluster
AdaCos recipes all run with the fixed scale; θ_med is the median angle to each item's one true class, which
mixup's soft targets and a set of classes (``train.attributes``) do not have; and the update would make
``forward`` change state on every training step (two passes with the same weights giving different logits).
With a fixed s the logits, and so the ``ce`` score, are a function of the weights alone.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> head = SubclusterHead(in_features=10, n_classes=3, subclusters=4, dim=8, trainable=False).eval()
>>> out = head(torch.randn(5, 10))
>>> out.logits.shape, out.embedding.shape, round(head.scale, 4)
(torch.Size([5, 3]), torch.Size([5, 8]), 3.3911)
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CosineHead", "HeadOutput", "ProjectionHead", "SubclusterHead", "SubspaceHead", "adacos_scale"]


class HeadOutput(NamedTuple):
    """A cosine head's class logits and the embedding it read them from."""

    logits: Tensor  # (B, n) class logits
    embedding: Tensor  # (B, D) the normalised projection x̂


def adacos_scale(n: int) -> float:
    """AdaCos's fixed adaptive scale √2·ln(n − 1) for n competing logits (classes, sub-clusters, subspace
    directions).

    It is the s at which the target probability P(θ) = e^{s cos θ} / (e^{s cos θ} + n − 1) (the other n − 1
    logits orthogonal to x̂, cos = 0) crosses 1/2 at θ = π/4: s·cos(π/4) = ln(n − 1), so P moves fastest
    around angles of 45° to the centre (Zhang et al. 2019). For n = 2 the formula gives 0, constant logits
    and no gradient; the scale is floored at the three-class value √2·ln 2 ≈ 0.98.

    >>> round(adacos_scale(4), 6) == round(math.sqrt(2) * math.log(3), 6), adacos_scale(2) == adacos_scale(3)
    (True, True)
    """
    if n < 2:
        raise ValueError(f"adacos_scale needs n >= 2 logits, got {n}")
    return math.sqrt(2.0) * math.log(max(n - 1, 2))


def _centres(module: nn.Module, shape: tuple[int, ...], trainable: bool) -> None:
    """Random centre directions (isotropic Gaussian: uniform on the sphere once normalised) as ``centres``:
    a parameter when learned, a buffer (kept in the state dict, so a checkpoint carries it) when fixed."""
    w = torch.randn(*shape) / math.sqrt(shape[-1])
    if trainable:
        module.centres = nn.Parameter(w)
    else:
        module.register_buffer("centres", w)


class ProjectionHead(nn.Module):
    """The part every cosine head shares: x̂ = normalise(BatchNorm1d(Linear(e))), (B, E) -> (B, D).
    Subclasses give ``logits(x̂)`` (B, n) and ``scale``."""

    scale: float

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(in_features, dim), nn.BatchNorm1d(dim))

    def logits(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, e: Tensor) -> HeadOutput:
        x = F.normalize(self.projection(e), dim=1)  # (B, E) -> (B, D), unit length
        return HeadOutput(self.logits(x), x)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}"


class CosineHead(ProjectionHead):
    """One centre W_c per class: z_c = s·⟨x̂, W_c/‖W_c‖⟩ = s·cos θ_c. ``arcface`` (its additive angular margin,
    cos(θ_y + m) at the target, is a training loss: ``mimimi.kinds.arcface_loss``) and ``adacos`` (no margin,
    s = √2·ln(n − 1): plain softmax cross-entropy of z)."""

    def __init__(self, in_features: int, n_classes: int, dim: int, scale: float, trainable: bool) -> None:
        super().__init__(in_features, dim)
        _centres(self, (n_classes, dim), trainable)  # (n, D)
        self.scale = float(scale)

    def logits(self, x: Tensor) -> Tensor:
        return self.scale * x @ F.normalize(self.centres, dim=1).T  # (B, D) @ (D, n) -> (B, n) = s cos


class SubclusterHead(ProjectionHead):
    """Sub-cluster AdaCos (Wilkinghoff 2021): K centres W_{c,k} per class, one softmax over all n·K
    sub-cluster logits z_{c,k} = s·cos(x̂, W_{c,k}), s = √2·ln(n·K − 1), and a class's probability the sum of
    its sub-clusters' probabilities::

        p(c | x) = Σ_k softmax(z)_{c,k}    <=>    class logit z_c = logsumexp_k z_{c,k}

    since softmax over the z_c gives exp(logsumexp_k z_{c,k}) / Σ_{c'} exp(logsumexp_k z_{c',k}) = the same
    sum. The loss is then the plain cross-entropy of the class logits (soft targets: −Σ_c y_c log p(c|x)).
    K = 1 is ``adacos`` with the scale of n classes."""

    def __init__(self, in_features: int, n_classes: int, subclusters: int, dim: int, trainable: bool) -> None:
        super().__init__(in_features, dim)
        _centres(self, (n_classes, subclusters, dim), trainable)  # (n, K, D)
        self.scale = adacos_scale(n_classes * subclusters)

    def subcluster_logits(self, x: Tensor) -> Tensor:
        """(B, D) unit embeddings -> (B, n, K) sub-cluster logits s·cos(x̂, W_{c,k})."""
        return self.scale * torch.einsum("bd,nkd->bnk", x, F.normalize(self.centres, dim=2))

    def logits(self, x: Tensor) -> Tensor:
        return self.subcluster_logits(x).logsumexp(dim=2)  # (B, n, K) -> (B, n)


class SubspaceHead(ProjectionHead):
    """AdaProj (Wilkinghoff 2024): per class a fixed random M-dimensional subspace with orthonormal basis
    Q_c (D, M) (M Gaussian vectors orthonormalised once by QR). The class logit is s times the cosine of the
    angle between x̂ and the subspace, i.e. the length of x̂'s orthogonal projection P_c x̂ = Q_c Q_cᵀ x̂::

        z_c = s·⟨x̂, P_c x̂ / ‖P_c x̂‖⟩ = s·‖P_c x̂‖ = s·‖Q_cᵀ x̂‖ ∈ [0, s],    s = √2·ln(n·M − 1)

    and the loss the plain softmax cross-entropy of z. The scale counts the n·M basis directions, as the
    author's code does (ASDKit's port uses √2·ln(n − 1); n·M also keeps two classes away from the floor
    of :func:`adacos_scale`). A class's embeddings only have to lie near its
    subspace, not near one centre: a less restrictive picture of the normal data. The bases are buffers (in
    the state dict) and never trained, as in every implementation the notes list."""

    def __init__(self, in_features: int, n_classes: int, subspace_dim: int, dim: int) -> None:
        super().__init__(in_features, dim)
        if not 1 <= subspace_dim <= dim:
            raise ValueError(f"subspace_dim must be in [1, embedding_dim = {dim}], got {subspace_dim}")
        q, _ = torch.linalg.qr(torch.randn(n_classes, dim, subspace_dim))  # (n, D, M), orthonormal columns
        self.register_buffer("bases", q)
        self.scale = adacos_scale(n_classes * subspace_dim)

    def logits(self, x: Tensor) -> Tensor:
        coords = torch.einsum("bd,ndm->bnm", x, self.bases)  # (B, n, M): Q_cᵀ x̂
        return self.scale * torch.linalg.vector_norm(coords, dim=2)  # (B, n) = s ‖Q_cᵀ x̂‖
