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
from typing import Literal

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
    "SquaredMagnitude",
    "StackedToComplex",
    "complex_conv2d",
    "split_stacked",
]

Pair = tuple[int, int]
ConvImpl = Literal["block", "textbook"]
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

    ``impl="block"``: one real convolution of the stacked input [x; y] with the block weight
    ``[[W_r, -W_i], [W_i, W_r]]`` of shape (2O, 2I, kF, kT), rebuilt each call so gradients
    reach W_r and W_i. ``impl="textbook"``: the four real convolutions of the formula above
    (the oracle). Same FLOPs, same result up to rounding.

    x: (B, 2I, F, T) stacked; w_r, w_i: (O, I, kF, kT); b_r, b_i: (O,) or None.
    Returns (B, 2O, F', T') stacked.
    """
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
    raise ValueError(f"impl must be 'block' or 'textbook', got {impl!r}")


class ComplexConv2d(nn.Module):
    """Complex 2-D convolution ``W * z + b``, W = W_r + iW_i, b = b_r + ib_i, on stacked maps.

    ``(a+ib)(c+id) = (ac-bd) + i(ad+bc)``, so for z = x + iy::

        Re = W_r * x - W_i * y + b_r,    Im = W_i * x + W_r * y + b_i

    Parameters ``weight_r``, ``weight_i`` (O, I, kF, kT) and ``bias_r``, ``bias_i`` (O,).
    ``impl`` ("block": one real conv with ``[[W_r, -W_i], [W_i, W_r]]``; "textbook": four real
    convs) only selects the kernel; it can be switched on a built module, parameters unchanged.
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
        if impl not in ("block", "textbook"):
            raise ValueError(f"impl must be 'block' or 'textbook', got {impl!r}")
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
