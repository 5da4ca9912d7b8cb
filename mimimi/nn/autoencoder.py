"""The DCASE 2020 Task 2 autoencoder baseline: a dense AE on 5 stacked log-mel frames.

Input: (B, n_mels * n_stack) = (B, 640) vectors; dense 128-128-128-128-8-128-128-128-128, each
layer Linear -> BatchNorm1d -> ReLU, then a linear output layer back to 640. Trained with MSE
on normal clips; a clip's score is the mean reconstruction error over its vectors (evaluation).

>>> import torch
>>> _ = torch.manual_seed(0)
>>> ae = DenseAE(AEConfig()).eval()
>>> x = torch.randn(4, 640)
>>> out = ae(x)
>>> out.x_hat.shape, reconstruction_error(x, out.x_hat).shape
(torch.Size([4, 640]), torch.Size([4]))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["AEConfig", "DenseAE", "Reconstruction", "reconstruction_error"]


@dataclass(frozen=True)
class AEConfig:
    """Sizes of :class:`DenseAE`; defaults are the DCASE 2020 baseline's."""

    n_mels: int = 128  # log-mel bins per frame
    n_stack: int = 5  # consecutive frames concatenated into one input vector
    hidden: int = 128  # width of the 4 + 4 hidden layers
    bottleneck: int = 8  # width of the code layer
    depth: int = 4  # hidden layers on each side of the bottleneck

    def __post_init__(self) -> None:
        for name in ("n_mels", "n_stack", "hidden", "bottleneck", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def input_dim(self) -> int:
        return self.n_mels * self.n_stack


class Reconstruction(NamedTuple):
    """The autoencoder's output: ``x_hat`` has the input's shape; ``z`` is the bottleneck code (..., bottleneck)."""

    x_hat: Tensor
    z: Tensor


def _dense(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU())


class DenseAE(nn.Module):
    """Dense autoencoder: (..., D) -> (..., D), D = n_mels * n_stack (leading dims are flattened
    for batch norm and restored)."""

    def __init__(self, cfg: AEConfig = AEConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        d, h = cfg.input_dim, cfg.hidden
        enc = [_dense(d if k == 0 else h, h) for k in range(cfg.depth)]
        self.encoder = nn.Sequential(*enc, _dense(h, cfg.bottleneck))
        dec = [_dense(cfg.bottleneck if k == 0 else h, h) for k in range(cfg.depth)]
        self.decoder = nn.Sequential(*dec, nn.Linear(h, d))

    def forward(self, x: Tensor) -> Reconstruction:
        if x.shape[-1] != self.cfg.input_dim:
            raise ValueError(f"expected last dim {self.cfg.input_dim}, got shape {tuple(x.shape)}")
        flat = x.reshape(-1, x.shape[-1])  # (..., D) -> (N, D)
        z = self.encoder(flat)  # (N, D) -> (N, 8)
        x_hat = self.decoder(z)  # (N, 8) -> (N, D)
        return Reconstruction(x_hat=x_hat.reshape(x.shape), z=z.reshape(*x.shape[:-1], z.shape[-1]))


def reconstruction_error(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean squared error per vector: (..., D), (..., D) -> (...)."""
    return torch.mean((x - x_hat) ** 2, dim=-1)
