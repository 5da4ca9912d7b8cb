"""The self-supervised complex network of Kim, Ho & Kang (EUSIPCO 2021), Fig. 2 and Table I.

It classifies the machine ID (within one machine type) of a complex STFT segment; the
anomaly score (cross-entropy of ``Logits.total`` against the true ID) belongs to evaluation,
not here.

Data flow for the default config and one (B, 1, 513, 64) complex segment (``padding="same"``)::

    input            complex (B, 1, 513, 64)
    ComplexToStacked          (B, 2, 513, 64)      real [Re; Im]
    Complex net 1  (7,5)/(2,2) (B, 90, 257, 32)    stacked 45 complex channels
    Complex net 2  (7,5)/(2,2) (B, 180, 129, 16)
    Complex net 3  (5,3)/(2,2) (B, 180, 65, 8)
    Complex net 4  (5,3)/(2,2) (B, 180, 33, 4)
    Complex net 5  (5,2)/(2,1) (B, 90, 17, 3)      z, 45 complex channels
    magnitude branch: |z|^2 (B, 45, 17, 3) -> Magnitude conv2d (5,1)/(2,1) -> F_m (B, 4, 9, 3)
    complex branch:   [Re z; Im z] (B, 90, 17, 3) -> Complex conv2d (5,1)/(2,1) -> F_c (B, 4, 9, 3)
    F_t = cat(F_c, F_m) (B, 8, 9, 3) -> attention block -> Total conv2d (1,1) -> T (B, 4, 9, 3)
    each of F_m, F_c, T: global average pooling -> logits (B, 4)

Complex becomes real in two places: ``SquaredMagnitude`` (magnitude branch) and
``complex_conv``, a real Conv2d that reads the 2C stacked real/imaginary channels as 2C real
features. Table I's "4" is the number of machine IDs: global average pooling of ``n_ids``
channels gives the logits directly (no extra linear classifier, unlike the seed). Any ``cfg.head`` but
``gap`` replaces the fused logits with a cosine classifier on a learned projection of the backbone
embedding (``mimimi.nn.heads``: ArcFace, AdaCos, sub-cluster AdaCos, AdaProj).

Padding (Table I gives none). ``padding="same"`` pads (k-1)//2 on each side (k//2 for the odd
kernels; 0 for the even time kernel 2 of block 5, so no map ever grows); ``"none"`` pads
nothing. Measured with ``torch.utils.flop_counter.FlopCounterMode`` on one (1, 1, 513, 64)
segment with the default config (the count doubles multiply-accumulates, i.e. FLOP = 2 MAC):

==========  ==========  ============  ===================================
padding     parameters  forward FLOP  block-5 output (F, T) / head (F, T)
==========  ==========  ============  ===================================
"same"      860,026     3.095 G       (17, 3) / (9, 3)
"none"      860,026     2.332 G       (12, 1) / (4, 1)
seed        859,366     3.09 G        (its padding is (k-1)//2 too)
==========  ==========  ============  ===================================

The table's FLOPs are those of ``conv_impl="block"`` and ``"textbook"`` (four real multiplications
per complex one). ``conv_impl="auto"`` (the default) runs each complex convolution with the kernel and memory
layout measured fastest for its shape and device (``complex.auto_conv_impl``; on CPU:
channels_last throughout, the block form for block 1's single input channel, Gauss's
three-multiplication form for blocks 2-5): same parameters, same outputs up to rounding, and
``forward_flops`` counts what runs, 3/4 of the table's for the Gauss layers. Its speed against
an independent four-convolution network is in BENCHMARKS.md (``python -m bench.run``).

Padding does not change the parameter count; "same" reproduces the seed's 3.09 GFLOP and
keeps three time steps (and 17 frequency rows) at the end of the backbone, where "none"
collapses time to a single step. Default: "same". The 660 parameters more than the seed: batch
norm here has separate affine weights for the real and imaginary parts (+720), and there is no
Linear(4, n_ids) classifier after each pooled head (-60).

>>> import torch
>>> _ = torch.manual_seed(0)
>>> cfg = ComplexNetConfig(n_ids=3, channels=(4, 8, 8, 8, 4))
>>> net = ComplexNet(cfg).eval()
>>> out = net(torch.randn(2, 1, 513, 64, dtype=torch.complex64))
>>> out.total.shape, out.magnitude.shape, out.complex.shape
(torch.Size([2, 3]), torch.Size([2, 3]), torch.Size([2, 3]))
>>> num_parameters(ComplexNet(ComplexNetConfig()))
860026
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .complex import CONV_IMPLS, AttentionBlock, ComplexBlock, ComplexToStacked, ConvImpl, SquaredMagnitude
from .heads import CosineHead, ProjectionHead, SubclusterHead, SubspaceHead, adacos_scale

__all__ = ["HEADS", "ComplexNet", "ComplexNetConfig", "Embedded", "Logits", "backbone_freq", "build_head", "conv_padding",
           "forward_flops", "num_parameters"]

Pair = tuple[int, int]
Head = Literal["gap", "arcface", "adacos", "subcluster_adacos", "adaproj"]
HEADS: tuple[str, ...] = typing.get_args(Head)


@dataclass(frozen=True)
class ComplexNetConfig:
    """Architecture of :class:`ComplexNet`. Defaults are the paper's Table I (n_ids = 4)."""

    n_ids: int = 4  # machine IDs of one type = channels of every head = logits per branch
    in_channels: int = 1  # complex input channels (one STFT)
    channels: tuple[int, ...] = (45, 90, 90, 90, 45)  # complex channels of "Complex net 1..5"
    kernels: tuple[tuple[int, int], ...] = ((7, 5), (7, 5), (5, 3), (5, 3), (5, 2))  # (F, T)
    strides: tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (2, 2), (2, 2), (2, 1))
    head_kernel: tuple[int, int] = (5, 1)  # Magnitude conv2d and Complex conv2d
    head_stride: tuple[int, int] = (2, 1)
    att_channels: int | None = None  # Attention conv2d output channels; None: 2 * n_ids (Table I: 8)
    att_kernel: tuple[int, int] = (3, 1)
    att_stride: tuple[int, int] = (2, 1)
    att_hidden: int = 32  # first fully-connected layer of the attention block (seed: 4 x 8)
    gate: Literal["sigmoid", "softmax"] = "sigmoid"  # attention gate: Fig. 3's sigma, or the seed's softmax
    # complex conv kernel, same parameters and maths: "block" | "textbook" | "gauss" | "auto" (fastest
    # measured per layer and device, complex.auto_conv_impl: on CPU channels_last, Gauss from 8 channels)
    conv_impl: Literal["block", "textbook", "gauss", "auto"] = "auto"
    padding: Literal["same", "none"] = "same"  # "same": (k-1)//2 per side; "none": Table I literally
    input: Literal["complex", "magnitude"] = "complex"  # "magnitude": the backbone fed |STFT| (phase dropped)
    # fused head: "gap" (Table I: global average pooling of n_ids maps) or a cosine classifier on a learned
    # embedding_dim projection of the backbone embedding (mimimi.nn.heads): "arcface" (its margin lives in the
    # loss, train.arcface_margin), "adacos", "subcluster_adacos", "adaproj" (AdaCos's fixed scale, no margin)
    head: Head = "gap"
    n_freq: int = 513  # input frequency bins (n_fft // 2 + 1; training sets it): fixes the embedding size
    embedding_dim: int = 128  # cosine heads (all but gap): size of the projected, L2-normalised embedding
    arcface_scale: float = 30.0  # arcface only: logits = scale * cos(embedding, class centre)
    subclusters: int = 16  # subcluster_adacos only: centres per class, K (Wilkinghoff's 2023 system, ASDKit)
    subspace_dim: int = 16  # adaproj only: dimension M of each class's subspace (Wilkinghoff's AdaProj code)
    # adacos and subcluster_adacos: learn the centres, or keep them at their random start (Wilkinghoff's
    # 2023/2024 systems and ASDKit's default); arcface's are always learned, adaproj's subspaces never
    trainable_centres: bool = False

    def __post_init__(self) -> None:
        if self.n_ids < 2:
            raise ValueError(f"n_ids must be >= 2 (an ID classifier), got {self.n_ids}")
        n = len(self.channels)
        if n == 0 or len(self.kernels) != n or len(self.strides) != n:
            raise ValueError(
                f"channels, kernels and strides need one entry per block, got {n}, "
                f"{len(self.kernels)}, {len(self.strides)}"
            )
        pairs = (*self.kernels, *self.strides, self.head_kernel, self.head_stride, self.att_kernel, self.att_stride)
        if any(len(p) != 2 or min(p) < 1 for p in pairs):
            raise ValueError("every kernel and stride must be a pair of positive ints")
        for name in ("in_channels", "att_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if min(self.channels) < 1 or (self.att_channels is not None and self.att_channels < 1):
            raise ValueError("channel counts must be positive")
        if self.embedding_dim < 1 or self.arcface_scale <= 0:
            raise ValueError("embedding_dim and arcface_scale must be positive")
        if self.subclusters < 1:
            raise ValueError(f"subclusters must be >= 1, got {self.subclusters}")
        if self.subspace_dim < 1 or (self.head == "adaproj" and self.subspace_dim > self.embedding_dim):
            raise ValueError(f"subspace_dim must be in [1, embedding_dim = {self.embedding_dim}], got {self.subspace_dim}")
        if not isinstance(self.trainable_centres, bool):
            raise ValueError(f"trainable_centres must be true or false, got {self.trainable_centres!r}")
        for name, allowed in (
            ("gate", ("sigmoid", "softmax")),
            ("conv_impl", CONV_IMPLS),
            ("padding", ("same", "none")),
            ("input", ("complex", "magnitude")),
            ("head", HEADS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


class Logits(NamedTuple):
    """Unnormalised class scores, each (B, n_ids). ``total`` (fused branch) is used at inference; with a
    cosine head it is that head's class logits (``mimimi.nn.heads``): ``arcface_scale * cos`` for ``arcface``
    (no margin: the margin is a training loss), the logsumexp of a class's sub-cluster logits for
    ``subcluster_adacos``, so that softmax(total) is always the class probability."""

    magnitude: Tensor
    complex: Tensor
    total: Tensor


class Embedded(NamedTuple):
    """``ComplexNet.embed_and_classify``: the logits and the embedding the anomaly scorers use."""

    logits: Logits
    embedding: Tensor  # (B, D) real: see ComplexNet.embedding_dim


def conv_padding(kernel: Pair, rule: str) -> Pair:
    """Padding per side for ``kernel`` under ``rule``.

    >>> conv_padding((7, 5), "same"), conv_padding((5, 2), "same"), conv_padding((5, 2), "none")
    ((3, 2), (2, 0), (0, 0))
    """
    if rule == "same":
        return ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
    if rule == "none":
        return (0, 0)
    raise ValueError(f"padding rule must be 'same' or 'none', got {rule!r}")


class ComplexNet(nn.Module):
    """Complex CNN -> magnitude, complex and attention-fused ID logits (Fig. 2, Table I).

    ``forward(x)``: x complex (B, in_channels, F, T) (complex64 or complex128, matching the
    parameters' float32/float64). With ``cfg.input == "magnitude"`` the backbone is fed
    ``|x|`` as a complex tensor with zero imaginary part (x may also be real, its absolute
    value is used): the same network without phase, the baseline that measures what phase adds.
    """

    def __init__(self, cfg: ComplexNetConfig = ComplexNetConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        n, pad = cfg.n_ids, cfg.padding
        self.to_stacked = ComplexToStacked()
        ins = (cfg.in_channels, *cfg.channels[:-1])
        self.blocks = nn.ModuleList(
            ComplexBlock(i, o, k, s, conv_padding(k, pad), impl=cfg.conv_impl)
            for i, o, k, s in zip(ins, cfg.channels, cfg.kernels, cfg.strides)
        )
        c = cfg.channels[-1]
        hk, hs, hp = cfg.head_kernel, cfg.head_stride, conv_padding(cfg.head_kernel, pad)
        self.squared_magnitude = SquaredMagnitude()  # complex -> real (|z|^2)
        self.magnitude_conv = nn.Conv2d(c, n, hk, hs, hp)
        self.complex_conv = nn.Conv2d(2 * c, n, hk, hs, hp)  # complex -> real: [Re; Im] as 2C real channels
        self.attention = AttentionBlock(
            channels=2 * n,
            att_channels=cfg.att_channels or 2 * n,
            kernel=cfg.att_kernel,
            stride=cfg.att_stride,
            padding=conv_padding(cfg.att_kernel, pad),
            hidden=cfg.att_hidden,
            gate=cfg.gate,
        )
        self.total_conv = nn.Conv2d(2 * n, n, kernel_size=1)
        self.head = build_head(cfg, cfg.channels[-1] * backbone_freq(cfg))  # None for gap
        if cfg.head == "arcface":
            self.register_load_state_dict_pre_hook(_arcface_keys_before_heads)

    def set_conv_impl(self, impl: ConvImpl) -> None:
        """Switch every complex convolution's kernel (parameters unchanged). Does not edit ``cfg``."""
        if impl not in CONV_IMPLS:
            raise ValueError(f"impl must be one of {CONV_IMPLS}, got {impl!r}")
        for b in self.blocks:
            b.conv.impl = impl

    def stem(self, x: Tensor) -> Tensor:
        """Network input -> stacked real (B, 2C_in, F, T), per ``cfg.input``."""
        if self.cfg.input == "magnitude":
            m = x.abs()  # complex or real (B, C, F, T) -> real |x|: the phase is dropped here
            h = torch.cat([m, torch.zeros_like(m)], dim=1)  # = |x| + 0i, stacked
        else:
            h = self.to_stacked(x)  # (B, C, F, T) complex -> (B, 2C, F, T) real
        w = self.blocks[0].conv.weight_r
        if h.dtype != w.dtype:
            raise TypeError(
                f"input {x.dtype} does not match parameters {w.dtype} "
                "(complex64 goes with float32, complex128 with float64: call .double() on the model)"
            )
        return h

    def forward(self, x: Tensor) -> Logits:
        return self.embed_and_classify(x).logits

    def embed_and_classify(self, x: Tensor) -> Embedded:
        """Logits and the embedding of each segment, in one pass.

        The embedding is the backbone's output magnitude averaged over time: ``|z|`` of block 5,
        (B, C, F, T) -> mean over T -> (B, C * F) (45 x 17 = 765 values for Table I). It is the last
        representation every head shares, before it is squeezed to n_ids channels; magnitude because the
        phase of z at a random segment offset carries no identity; time-averaged because a segment's start
        is arbitrary while the frequency position of a machine's harmonics is what identifies it. With the
        cosine head (every ``cfg.head`` but ``gap``, ``mimimi.nn.heads``) the embedding is instead the
        L2-normalised projection the cosine classifier sees, (B, embedding_dim).
        """
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)  # (B, 2C, F, T) stacked -> (B, 2C', F/sF, T/sT)
        mag2 = self.squared_magnitude(h)  # (B, C, F, T) real |z|^2: complex becomes real
        f_m = self.magnitude_conv(mag2)  # (B, C, F, T) real -> (B, n, F', T')
        f_c = self.complex_conv(h)  # (B, 2C, F, T) real -> (B, n, F', T')
        f_t = torch.cat([f_c, f_m], dim=1)  # (B, 2n, F', T')
        t = self.total_conv(self.attention(f_t))  # (B, 2n, F', T') -> (B, n, F', T')
        emb = (mag2 + 1e-12).sqrt().mean(dim=3).flatten(1)  # (B, C, F, T) -> (B, C * F)
        total = t.mean(dim=(2, 3))
        if self.head is not None:
            total, emb = self.head(emb)  # (B, C * F) -> (B, n) class logits, (B, embedding_dim) unit length
        return Embedded(Logits(magnitude=f_m.mean(dim=(2, 3)), complex=f_c.mean(dim=(2, 3)), total=total), emb)


def build_head(cfg: ComplexNetConfig, in_features: int) -> ProjectionHead | None:
    """The cosine head ``cfg.head`` names on an ``in_features`` backbone embedding; None for ``gap``.

    >>> build_head(ComplexNetConfig(head="adacos", n_ids=4), 765).scale == adacos_scale(4)
    True
    """
    n, d = cfg.n_ids, cfg.embedding_dim
    if cfg.head == "arcface":
        return CosineHead(in_features, n, d, cfg.arcface_scale, trainable=True)
    if cfg.head == "adacos":
        return CosineHead(in_features, n, d, adacos_scale(n), trainable=cfg.trainable_centres)
    if cfg.head == "subcluster_adacos":
        return SubclusterHead(in_features, n, cfg.subclusters, d, trainable=cfg.trainable_centres)
    if cfg.head == "adaproj":
        return SubspaceHead(in_features, n, cfg.subspace_dim, d)
    return None


def _arcface_keys_before_heads(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """An ``arcface`` checkpoint written before ``mimimi.nn.heads`` kept ``projection.*`` and ``centres`` on
    the network itself: move them under ``head.``, where the same tensors live now."""
    for key in [k for k in state_dict if k == prefix + "centres" or k.startswith(prefix + "projection.")]:
        state_dict[prefix + "head." + key[len(prefix):]] = state_dict.pop(key)


def backbone_freq(cfg: ComplexNetConfig) -> int:
    """Frequency rows after block 5 for ``cfg.n_freq`` input bins (17 for Table I's 513).

    >>> backbone_freq(ComplexNetConfig()), backbone_freq(ComplexNetConfig(n_freq=129))
    (17, 5)
    """
    f = cfg.n_freq
    for k, s in zip(cfg.kernels, cfg.strides):
        f = (f + 2 * conv_padding(k, cfg.padding)[0] - k[0]) // s[0] + 1
    return f


def num_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 513, 64)) -> int:
    """Forward FLOPs of ``model`` on one zero complex input (FlopCounterMode: 2 per MAC).

    Runs in eval mode under ``no_grad`` (running statistics untouched), on the parameters'
    device, with complex64/complex128 following their dtype.
    """
    p = next(model.parameters())
    dtype = torch.complex128 if p.dtype == torch.float64 else torch.complex64
    x = torch.zeros(input_shape, dtype=dtype, device=p.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()
