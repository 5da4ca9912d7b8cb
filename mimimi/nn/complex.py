"""Complex-valued layers on a *stacked* real representation.

Between layers a complex feature map z = x + iy with C channels travels as one real tensor
``[x; y]`` of shape (B, 2C, F, T): channels ``0..C-1`` hold the real parts, ``C..2C-1`` the
imaginary parts. Real convolution, batch norm and PReLU kernels then do all the work (no
complex autograd inside the network), and the dtype follows the input: complex64 -> float32,
complex128 -> float64 (so ``torch.autograd.gradcheck`` runs in double precision).

Where types change there is an explicit boundary module:

* :class:`ComplexToStacked`: complex (B, C, F, T) -> real (B, 2C, F, T), the network input.
* :class:`StackedToComplex`: the inverse (tests, inspection).
* :class:`SquaredMagnitude`: stacked (B, 2C, F, T) -> real ``|z|^2`` (B, C, F, T).
  **Complex becomes real here** (the magnitude branch of the network).

>>> import torch
>>> _ = torch.manual_seed(0)
>>> z = torch.randn(2, 1, 17, 8, dtype=torch.complex64)
>>> s = ComplexToStacked()(z)
>>> s.shape, s.dtype
(torch.Size([2, 2, 17, 8]), torch.float32)
>>> block = ComplexBlock(1, 3, kernel=(5, 3), stride=(2, 2), padding=(2, 1))
>>> block(s).shape  # (B, 2*1, F, T) -> (B, 2*3, F/2, T/2)
torch.Size([2, 6, 9, 4])
>>> torch.equal(StackedToComplex()(s), z)
True
"""
from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttentionBlock",
    "ComplexBatchNorm2d",
    "ComplexBlock",
    "ComplexConv2d",
    "ComplexPReLU",
    "ComplexToStacked",
    "ConvChoice",
    "SquaredMagnitude",
    "StackedToComplex",
    "auto_conv_impl",
    "complex_conv2d",
    "split_stacked",
]

Pair = tuple[int, int]
ConvImpl = Literal["block", "textbook", "gauss", "auto"]
KernelImpl = Literal["block", "textbook", "gauss"]  # what "auto" resolves to
CONV_IMPLS: tuple[str, ...] = ("block", "textbook", "gauss", "auto")
Gate = Literal["sigmoid", "softmax"]


def _pair(v: int | Pair) -> Pair:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def split_stacked(x: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 2C, F, T) stacked -> (real (B, C, F, T), imag (B, C, F, T)), as views."""
    if x.dim() < 2 or x.shape[1] % 2:
        raise ValueError(f"stacked tensor needs an even channel count, got shape {tuple(x.shape)}")
    return x.chunk(2, dim=1)


class ComplexToStacked(nn.Module):
    """Boundary: complex (B, C, F, T) -> real (B, 2C, F, T) = ``cat([Re z, Im z], dim=1)``.

    Works for complex64 (-> float32) and complex128 (-> float64); a real input raises, so a
    magnitude or a forgotten STFT is never silently taken for a complex spectrum.
    """

    def forward(self, z: Tensor) -> Tensor:
        if not z.is_complex():
            raise TypeError(f"ComplexToStacked expects a complex tensor, got {z.dtype}")
        return torch.cat([z.real, z.imag], dim=1)  # (B, C, F, T) complex -> (B, 2C, F, T) real


class StackedToComplex(nn.Module):
    """Boundary: real (B, 2C, F, T) -> complex (B, C, F, T) = ``x + iy``."""

    def forward(self, x: Tensor) -> Tensor:
        re, im = split_stacked(x)
        return torch.complex(re, im)


class SquaredMagnitude(nn.Module):
    """Boundary where complex becomes real: ``|z|^2 = x^2 + y^2``, (B, 2C, F, T) -> (B, C, F, T).

    The squared norm (not ``|z|``) as in the paper's Fig. 2: it is smooth at z = 0, so its
    gradient exists everywhere.
    """

    def forward(self, x: Tensor) -> Tensor:
        re, im = split_stacked(x)
        return re * re + im * im


GAUSS_MIN_IN_CHANNELS = 8  # complex input channels from which "auto" uses Gauss's form on CPU


class ConvChoice(NamedTuple):
    """A complex convolution's kernel and the memory layout it runs in."""

    impl: KernelImpl
    channels_last: bool  # convert the stacked input to torch.channels_last first


def auto_conv_impl(
    in_channels: int, out_channels: int, kernel: Pair, stride: Pair, device: torch.device | str
) -> ConvChoice:
    """The kernel and layout ``impl="auto"`` uses for one layer: a static rule, measured on CPU.

    CPU: always ``torch.channels_last`` (oneDNN's native layout: no reorders around each
    convolution); ``"gauss"`` when the layer has at least ``GAUSS_MIN_IN_CHANNELS`` complex input
    channels, else ``"block"``. With few input channels a convolution is bound by memory, not
    arithmetic: Gauss saves multiplications it was not waiting on and pays for its extra input
    passes (x + y, y - x) and three launches. Other devices (CUDA, not measured here): ``"block"``
    in the input's own layout, the previous default; ``python -m bench.run`` prints the
    per-layer table on every device it finds, to revisit this.

    Evidence (AMD EPYC, AVX-512, torch 2.11, 1 thread, process CPU time, best of 5 (forward) / 3
    (forward + backward) while other jobs loaded the machine; batch 32 of (1, 513, 64); speed-up
    over the four-convolution form in the default layout)::

        layer (complex in->out, input F x T)   forward                fwd + bwd
                                               block/CL  gauss/CL     block/CL  gauss/CL
        1   1->45, 513x64, k(7,5) s(2,2)       4.59x     1.79x        3.19x     1.71x
        2  45->90, 257x32, k(7,5) s(2,2)       1.25x     1.40x        1.42x     1.59x
        3  90->90, 129x16, k(5,3) s(2,2)       1.33x     1.49x        1.30x     1.38x
        4  90->90,  65x8,  k(5,3) s(2,2)       1.16x     1.31x        1.23x     1.38x
        5  90->45,  33x4,  k(5,2) s(2,1)       1.08x     1.26x        1.19x     1.30x

    With 2 threads, wall clock (``python -m bench.run``, BENCHMARKS.md) the order is the same but
    for layer 4's forward, a tie (block/CL 1.20x, gauss/CL 1.17x). Crossover (1 thread, forward,
    45 output channels, 257 x 32, batch 16): Gauss / block = 0.21x, 0.37x, 0.54x, 1.07x, 1.09x,
    1.10x for 1, 2, 4, 8, 16, 32 complex input channels.

    >>> auto_conv_impl(1, 45, (7, 5), (2, 2), "cpu"), auto_conv_impl(45, 90, (7, 5), (2, 2), "cpu")
    (ConvChoice(impl='block', channels_last=True), ConvChoice(impl='gauss', channels_last=True))
    """
    if torch.device(device).type == "cpu":
        return ConvChoice("gauss" if in_channels >= GAUSS_MIN_IN_CHANNELS else "block", True)
    return ConvChoice("block", False)


def complex_conv2d(
    x: Tensor,
    w_r: Tensor,
    w_i: Tensor,
    b_r: Tensor | None = None,
    b_i: Tensor | None = None,
    stride: Pair = (1, 1),
    padding: Pair = (0, 0),
    impl: ConvImpl = "block",
) -> Tensor:
    """Complex convolution of a stacked input, ``W * z + b`` with ``W = W_r + iW_i``.

    With z = x + iy and ``(a+ib)(c+id) = (ac-bd) + i(ad+bc)``::

        Re = W_r * x - W_i * y + b_r
        Im = W_i * x + W_r * y + b_i

    ``impl`` selects the kernel; all give the same result up to rounding:

    * ``"block"``: one real convolution of the stacked input [x; y] with the block weight
      ``[[W_r, -W_i], [W_i, W_r]]`` of shape (2O, 2I, kF, kT), rebuilt each call so gradients
      reach W_r and W_i.
    * ``"textbook"``: the four real convolutions of the formula above (the oracle); same FLOPs.
    * ``"gauss"``: three real convolutions (Gauss's trick, 3/4 of the FLOPs)::

          k1 = (W_r + W_i) * x,   k2 = W_r * (y - x) + b_i,   k3 = W_i * (x + y) - b_r
          Re = k1 - k3,           Im = k1 + k2

    * ``"auto"``: the kernel and memory layout :func:`auto_conv_impl` picks for this layer's
      shape and ``x``'s device (a static rule measured on CPU; see there).

    x: (B, 2I, F, T) stacked; w_r, w_i: (O, I, kF, kT); b_r, b_i: (O,) or None.
    Returns (B, 2O, F', T') stacked.
    """
    if impl == "auto":
        choice = auto_conv_impl(w_r.shape[1], w_r.shape[0], (w_r.shape[2], w_r.shape[3]), stride, x.device)
        if choice.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # no copy once a layer before has converted
        impl = choice.impl
    if impl == "block":
        w = torch.cat([torch.cat([w_r, -w_i], dim=1), torch.cat([w_i, w_r], dim=1)], dim=0)
        b = None if b_r is None else torch.cat([b_r, b_i])
        return F.conv2d(x, w, b, stride=stride, padding=padding)  # (B, 2I, F, T) -> (B, 2O, F', T')
    if impl == "textbook":
        xr, xi = split_stacked(x)

        def conv(inp: Tensor, w: Tensor) -> Tensor:
            return F.conv2d(inp, w, None, stride=stride, padding=padding)

        re = conv(xr, w_r) - conv(xi, w_i)  # ac - bd
        im = conv(xi, w_r) + conv(xr, w_i)  # ad + bc
        if b_r is not None:
            re = re + b_r.view(1, -1, 1, 1)
            im = im + b_i.view(1, -1, 1, 1)
        return torch.cat([re, im], dim=1)
    if impl == "gauss":
        xr, xi = split_stacked(x)

        def conv(inp: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
            return F.conv2d(inp, w, b, stride=stride, padding=padding)

        k1 = conv(xr, w_r + w_i, None)  # W_r x + W_i x
        k2 = conv(xi - xr, w_r, b_i)  # W_r y - W_r x (+ b_i)
        k3 = conv(xr + xi, w_i, None if b_r is None else -b_r)  # W_i x + W_i y (- b_r)
        return torch.cat([k1 - k3, k1 + k2], dim=1)  # Re = W_r x - W_i y + b_r, Im = W_i x + W_r y + b_i
    raise ValueError(f"impl must be one of {CONV_IMPLS}, got {impl!r}")


class ComplexConv2d(nn.Module):
    """Complex 2-D convolution ``W * z + b``, W = W_r + iW_i, b = b_r + ib_i, on stacked maps.

    ``(a+ib)(c+id) = (ac-bd) + i(ad+bc)``, so for z = x + iy::

        Re = W_r * x - W_i * y + b_r,    Im = W_i * x + W_r * y + b_i

    Parameters ``weight_r``, ``weight_i`` (O, I, kF, kT) and ``bias_r``, ``bias_i`` (O,).
    ``impl`` ("block": one real conv with ``[[W_r, -W_i], [W_i, W_r]]``; "textbook": four real
    convs; "gauss": three; "auto": per layer and device, see :func:`auto_conv_impl`) only selects
    the kernel; it can be switched on a built module, parameters unchanged. "auto" may return a
    ``torch.channels_last`` tensor (same shape and values; batch norm and PReLU keep the layout).
    Init: each of W_r, W_i (and b_r, b_i) as ``nn.Conv2d``'s default, scaled by 1/sqrt(2) so the
    complex weight has the variance of one real ``nn.Conv2d`` weight of the same fan-in.

    Input (B, 2I, F, T) stacked -> output (B, 2O, F', T') stacked.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | Pair,
        stride: int | Pair = 1,
        padding: int | Pair = 0,
        bias: bool = True,
        impl: ConvImpl = "block",
    ) -> None:
        super().__init__()
        if impl not in CONV_IMPLS:
            raise ValueError(f"impl must be one of {CONV_IMPLS}, got {impl!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel, self.stride, self.padding = _pair(kernel), _pair(stride), _pair(padding)
        self.impl: ConvImpl = impl
        shape = (out_channels, in_channels, *self.kernel)
        self.weight_r = nn.Parameter(torch.empty(shape))
        self.weight_i = nn.Parameter(torch.empty(shape))
        if bias:
            self.bias_r = nn.Parameter(torch.empty(out_channels))
            self.bias_i = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias_r", None)
            self.register_parameter("bias_i", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel[0] * self.kernel[1]
        for w in (self.weight_r, self.weight_i):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Conv2d's default
            with torch.no_grad():
                w.div_(math.sqrt(2.0))
        if self.bias_r is not None:
            bound = 1.0 / math.sqrt(fan_in) / math.sqrt(2.0)
            nn.init.uniform_(self.bias_r, -bound, bound)
            nn.init.uniform_(self.bias_i, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        # (B, 2I, F, T) stacked -> (B, 2O, (F + 2pF - kF) // sF + 1, (T + 2pT - kT) // sT + 1)
        return complex_conv2d(
            x, self.weight_r, self.weight_i, self.bias_r, self.bias_i, self.stride, self.padding, self.impl
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias_r is not None}, impl={self.impl!r}"
        )


class ComplexBatchNorm2d(nn.BatchNorm2d):
    """Batch norm of the real and the imaginary parts separately ("naive" complex BN).

    For channel c: ``x_c -> g_c (x_c - mu_x) / sqrt(var_x + eps) + h_c`` and
    ``y_c -> g'_c (y_c - mu_y) / sqrt(var_y + eps) + h'_c``: exactly a ``BatchNorm2d`` over the
    2C stacked channels (4C parameters, 4C running statistics). The full 2x2 whitening of
    Trabelsi et al. (covariance of (x, y) per channel) is not implemented: the reference
    implementation normalises the parts separately, and whitening needs a per-channel matrix
    square root that this layer avoids.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> None:
        super().__init__(2 * channels, eps=eps, momentum=momentum, affine=affine)
        self.channels = channels  # complex channels C; num_features = 2C


class ComplexPReLU(nn.PReLU):
    """PReLU on each part: ``x -> max(0, x) + a_c min(0, x)``, ``y -> max(0, y) + a'_c min(0, y)``.

    One learnable slope per complex channel *and part* (2C slopes, init 0.25), i.e. a
    ``PReLU(2C)`` over the stacked channels: real and imaginary slopes are separate, as in the
    reference implementation (two ``PReLU(C)``). A split-type activation: unlike the linear
    convolution it does not commute with a phase rotation z -> e^{i phi} z (nor does the split
    batch norm), so the network's output depends on the input's phase, not only on |z|.
    """

    def __init__(self, channels: int, init: float = 0.25) -> None:
        super().__init__(num_parameters=2 * channels, init=init)
        self.channels = channels


class ComplexBlock(nn.Module):
    """One "Complex net" row of Table I: ComplexConv2d -> ComplexBatchNorm2d -> ComplexPReLU.

    (B, 2I, F, T) stacked -> (B, 2O, F', T') stacked.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | Pair,
        stride: int | Pair = 1,
        padding: int | Pair = 0,
        impl: ConvImpl = "block",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ComplexConv2d(in_channels, out_channels, kernel, stride, padding, bias=bias, impl=impl)
        self.bn = ComplexBatchNorm2d(out_channels)
        self.act = ComplexPReLU(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class AttentionBlock(nn.Module):
    """Channel attention of Fig. 3 (real-valued), acting on F_t = stack(F_c; F_m).

    ::

        u    = GAP(Conv2d_att(F_t))                      # (B, att_channels)
        A    = gate(W_2 ReLU(W_1 u + b_1) + b_2)         # (B, channels): one weight per channel
        F_out = A (x) F_t (+) F_t                        # broadcast over (F, T); residual

    ``gate="sigmoid"`` (the figure's sigma: independent weights in (0, 1)) or ``"softmax"``
    over channels (the seed's choice: weights sum to 1). ``hidden`` is the width of the first
    fully-connected layer (the seed uses 4 x channels). The attention convolution may stride
    (Table I: (3,1)/(2,1)); only its pooled output is used, so F_out keeps F_t's shape.
    """

    def __init__(
        self,
        channels: int = 8,
        att_channels: int = 8,
        kernel: int | Pair = (3, 1),
        stride: int | Pair = (2, 1),
        padding: int | Pair = (1, 0),
        hidden: int = 32,
        gate: Gate = "sigmoid",
    ) -> None:
        super().__init__()
        if gate not in ("sigmoid", "softmax"):
            raise ValueError(f"gate must be 'sigmoid' or 'softmax', got {gate!r}")
        self.gate: Gate = gate
        self.conv = nn.Conv2d(channels, att_channels, _pair(kernel), _pair(stride), _pair(padding))
        self.fc1 = nn.Linear(att_channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def attention(self, f_t: Tensor) -> Tensor:
        """The attention vector A(F_t), shape (B, channels)."""
        u = self.conv(f_t).mean(dim=(2, 3))  # (B, C, F, T) -> (B, C_att, F', T') -> (B, C_att)
        a = self.fc2(F.relu(self.fc1(u)))  # (B, C_att) -> (B, hidden) -> (B, C)
        return torch.sigmoid(a) if self.gate == "sigmoid" else torch.softmax(a, dim=1)

    def forward(self, f_t: Tensor) -> Tensor:
        a = self.attention(f_t)[:, :, None, None]  # (B, C, 1, 1)
        return a * f_t + f_t  # (B, C, F, T) -> (B, C, F, T)
