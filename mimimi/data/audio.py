"""Audio I/O: any wav soundfile reads -> mono float32 at the model's sample rate.

MIMII originals have 8 channels (the official baselines use channel 0), DCASE clips have 1.
A file that cannot be decoded, is empty, or is shorter than its header says raises
``AudioError`` naming the file: nothing is silently skipped or scored as 0.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Literal, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF


class AudioError(ValueError):
    """A clip that cannot be used, with the file's path in the message."""


def _wav_data_chunk(path: Path) -> tuple[int, int] | None:
    """(declared, present) byte counts of a RIFF/WAVE file's data chunk; None if not a plain RIFF wav.

    libsndfile quietly reads what is there when a wav was cut short (an interrupted copy or
    download); the header still says how long it should be, so compare.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                return chunk_size, size - pos - 8
            pos += 8 + chunk_size + (chunk_size & 1)  # chunks are word aligned
    return None


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file as float32 (frames, channels) and its sample rate, or raise AudioError."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioError(f"{path}: cannot decode audio ({e})") from None
    chunk = _wav_data_chunk(path)
    if chunk is not None:
        declared, present = chunk
        # 0 and 0xFFFFFFFF are what streaming writers leave when they cannot seek back
        if declared not in (0, 0xFFFFFFFF) and present < declared:
            raise AudioError(f"{path}: truncated wav (header declares {declared} data bytes, file has {present})")
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio contains NaN or inf samples")
    return data, sr




def resample(wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited (windowed sinc) resampling with torchaudio; (n,) -> (n * new_sr / orig_sr,)."""
    if orig_sr == new_sr:
        return wave
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), orig_sr, new_sr)
    return out.numpy().astype(np.float32, copy=False)


def load_audio(
    path: str | Path,
    *,
    sample_rate: int = 16000,
    channel: Union[int, Literal["mean"]] = 0,
    min_samples: int = 0,
) -> np.ndarray:
    """Mono float32 waveform in [-1, 1] at ``sample_rate``; at least ``min_samples`` long.

    ``channel`` picks one channel of a multi-channel file, or ``"mean"`` averages them.
    A clip shorter than ``min_samples`` is extended by repeating it (machine sounds are
    stationary; zero padding would add a silent region the model never saw in training), but
    only up to doubling it: a clip shorter than ``min_samples / 2`` is an ``AudioError``
    (``check_length``), as repeating a few samples would invent the sound being scored.
    """
    data, sr = read_wav(path)
    n_ch = data.shape[1]
    if channel == "mean":
        wave = data.mean(axis=1)
    elif isinstance(channel, int) and 0 <= channel < n_ch:
        wave = data[:, channel]
    else:
        raise AudioError(f"{path}: channel {channel!r} requested but the file has {n_ch} channel(s)")
    wave = resample(np.ascontiguousarray(wave), sr, sample_rate)
    return extend(check_length(str(path), wave, min_samples, sample_rate), min_samples)


def check_length(name: str, wave: np.ndarray, min_samples: int, sample_rate: int) -> np.ndarray:
    """``wave`` when it holds at least half of ``min_samples`` (one network segment), else ``AudioError``."""
    need = (min_samples + 1) // 2
    if len(wave) < need:
        raise AudioError(f"{name}: {len(wave)} samples ({len(wave) / sample_rate:.3g} s at {sample_rate} Hz) is too "
                         f"short: a clip needs at least {need} samples ({need / sample_rate:.3g} s), half a network "
                         "segment")
    return wave


def extend(wave: np.ndarray, min_samples: int) -> np.ndarray:
    """``wave`` repeated up to ``min_samples`` samples when it is shorter (see ``load_audio``)."""
    if len(wave) < min_samples:
        wave = np.pad(wave, (0, min_samples - len(wave)), mode="wrap")
    return wave
