"""Numeric precision of the network's passes: ``fp32``, ``bf16`` or ``auto`` (``train.precision`` for
training steps, ``scoring.precision`` for every pass that scores: validation, evaluation, ``mimimi.score``
and the served model).

``bf16`` runs the convolutions, matrix products and activations under ``torch.autocast`` with bfloat16;
the weights, the optimiser state and the batch-norm running statistics stay float32, and the losses, the
embeddings the scorers are fitted on, the scores and the metrics are computed in float32 from the
network's outputs (``mimimi.kinds`` casts them). ``auto`` is bf16 where the hardware executes it natively —
a CPU with AVX512-BF16 or AMX-BF16, a CUDA device of compute capability 8.0 or newer — and fp32 elsewhere,
where emulated bf16 would only be slower and less exact.

>>> resolve("fp32", "cpu"), resolve("bf16", "cpu")
('fp32', 'bf16')
>>> resolve("auto", "mps")
'fp32'
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "auto"]
PRECISIONS = ("fp32", "bf16", "auto")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic


@functools.cache
def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where that cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` executes bfloat16 arithmetic natively (see the module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return any(f in cpu_flags() for f in CPU_BF16_FLAGS)
    return False


def resolve(precision: Precision, device: str | torch.device) -> Literal["fp32", "bf16"]:
    """``fp32`` or ``bf16``: ``auto`` resolved for ``device``; the others as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: Precision, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: bfloat16 autocast on ``device`` when ``precision`` resolves to
    bf16, else nothing."""
    device = torch.device(device)
    if resolve(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
