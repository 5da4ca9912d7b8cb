"""The reference the benchmark times MIMIMI's network against: Table I's network written the way most
public complex-valued CNN code writes it, independently of ``mimimi.nn``.

Real and imaginary parts travel as two separate tensors; a complex convolution is two ``nn.Conv2d``
(one for W_r, one for W_i) applied four times (``Re = W_r*x - W_i*y``, ``Im = W_r*y + W_i*x``); batch
norm and PReLU are one module per part. The heads are Fig. 2's: |z|^2 -> magnitude conv, [Re; Im] ->
complex conv, channel attention on their concatenation, total conv, global average pooling. Same
layer sizes and parameter count as ``mimimi.nn.ComplexNet`` with the default config (860,026); the
test suite loads one network's weights into the other and checks that they compute the same logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS = (45, 90, 90, 90, 45)
KERNELS = ((7, 5), (7, 5), (5, 3), (5, 3), (5, 2))
STRIDES = ((2, 2), (2, 2), (2, 2), (2, 2), (2, 1))


def same(k: tuple[int, int]) -> tuple[int, int]:
    return ((k[0] - 1) // 2, (k[1] - 1) // 2)


class CConv(nn.Module):
    """Complex convolution as two real convolutions used four times."""

    def __init__(self, i: int, o: int, k: tuple[int, int], s: tuple[int, int]):
        super().__init__()
        self.re = nn.Conv2d(i, o, k, s, same(k))
        self.im = nn.Conv2d(i, o, k, s, same(k))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.re(x) - self.im(y), self.re(y) + self.im(x)


class CBlock(nn.Module):
    def __init__(self, i: int, o: int, k: tuple[int, int], s: tuple[int, int]):
        super().__init__()
        self.conv = CConv(i, o, k, s)
        self.bn_re, self.bn_im = nn.BatchNorm2d(o), nn.BatchNorm2d(o)
        self.act_re, self.act_im = nn.PReLU(o), nn.PReLU(o)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.conv(x, y)
        return self.act_re(self.bn_re(x)), self.act_im(self.bn_im(y))


class ReferenceNet(nn.Module):
    """Input: complex (B, 1, F, T). Output: (magnitude, complex, total) logits, each (B, n_ids)."""

    def __init__(self, n_ids: int = 4):
        super().__init__()
        ins = (1, *CHANNELS[:-1])
        self.blocks = nn.ModuleList(CBlock(i, o, k, s) for i, o, k, s in zip(ins, CHANNELS, KERNELS, STRIDES))
        c = CHANNELS[-1]
        self.magnitude_conv = nn.Conv2d(c, n_ids, (5, 1), (2, 1), (2, 0))
        self.complex_conv = nn.Conv2d(2 * c, n_ids, (5, 1), (2, 1), (2, 0))
        self.att_conv = nn.Conv2d(2 * n_ids, 2 * n_ids, (3, 1), (2, 1), (1, 0))
        self.att_fc1, self.att_fc2 = nn.Linear(2 * n_ids, 32), nn.Linear(32, 2 * n_ids)
        self.total_conv = nn.Conv2d(2 * n_ids, n_ids, 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = z.real, z.imag
        for block in self.blocks:
            x, y = block(x, y)
        f_m = self.magnitude_conv(x * x + y * y)
        f_c = self.complex_conv(torch.cat([x, y], dim=1))
        f_t = torch.cat([f_c, f_m], dim=1)
        a = torch.sigmoid(self.att_fc2(F.relu(self.att_fc1(self.att_conv(f_t).mean(dim=(2, 3))))))
        t = self.total_conv(a[:, :, None, None] * f_t + f_t)
        return f_m.mean(dim=(2, 3)), f_c.mean(dim=(2, 3)), t.mean(dim=(2, 3))


def load_from_complexnet(ref: ReferenceNet, state: dict[str, torch.Tensor]) -> ReferenceNet:
    """Copy the weights of a default ``mimimi.nn.ComplexNet`` (its ``state_dict``) into ``ref``, so that both
    compute the same function. ComplexNet stacks [Re; Im] channels (batch norm and PReLU over 2C) and adds
    b_r to Re and b_i to Im; here Re gets ``re.bias - im.bias`` and Im ``re.bias + im.bias``."""
    with torch.no_grad():
        for n, block in enumerate(ref.blocks):
            p = f"blocks.{n}."
            c = block.bn_re.num_features
            block.conv.re.weight.copy_(state[p + "conv.weight_r"])
            block.conv.im.weight.copy_(state[p + "conv.weight_i"])
            b_r, b_i = state[p + "conv.bias_r"], state[p + "conv.bias_i"]
            block.conv.re.bias.copy_((b_r + b_i) / 2)
            block.conv.im.bias.copy_((b_i - b_r) / 2)
            for part, (bn, act) in enumerate(((block.bn_re, block.act_re), (block.bn_im, block.act_im))):
                sl = slice(part * c, (part + 1) * c)
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(bn, name).copy_(state[p + f"bn.{name}"][sl])
                act.weight.copy_(state[p + "act.weight"][sl])
        for mine, theirs in (("magnitude_conv", "magnitude_conv"), ("complex_conv", "complex_conv"),
                             ("att_conv", "attention.conv"), ("att_fc1", "attention.fc1"),
                             ("att_fc2", "attention.fc2"), ("total_conv", "total_conv")):
            getattr(ref, mine).weight.copy_(state[f"{theirs}.weight"])
            getattr(ref, mine).bias.copy_(state[f"{theirs}.bias"])
    return ref
