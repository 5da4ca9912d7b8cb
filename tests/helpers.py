"""Plain helpers the tests import (pytest fixtures live in conftest.py): tensors for the layer oracles, wav
writers and the small config that lets a CPU test train the real architecture in seconds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def crandn(*shape, dtype=None):
    """A standard complex normal tensor (complex64 unless ``dtype`` says otherwise)."""
    import torch

    return torch.randn(*shape, dtype=dtype or torch.complex64)


def stacked(z):
    """Complex (B, C, ...) -> real (B, 2C, ...) as [real parts; imag parts], written out for the layer oracles."""
    import torch

    return torch.cat([z.real, z.imag], dim=1)


def write_wav(path: Path, data: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, subtype=subtype)
    return path


def noise(seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, 0.1, (int(seconds * sr), channels)).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def small_config(root: Path, cache: Path, **train):
    """The real architecture on a smaller STFT (129 bins, 32-frame segments) so a CPU test trains in seconds."""
    from mimimi.config import load_config

    return load_config(overrides={
        "data": {"root": str(root), "cache_dir": str(cache)},
        "features": {"n_fft": 256, "hop_length": 128, "segment_frames": 32, "eval_hop_frames": 32, "n_mels": 64},
        "train": {"machine_type": "valve", "epochs": 2, "batch_size": 16, "lr": 1e-3, "progress": False,
                  "val_fraction": 0.25, **train},
    })
