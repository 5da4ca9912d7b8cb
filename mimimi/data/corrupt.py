"""Proxy outliers: deterministic synthetic corruptions of held-out normal clips.

Hyperparameter search must rank models by how well they detect anomalies without looking at a single
labelled test clip. The leak-free validation metric therefore scores held-out *normal* clips against
corrupted copies of those same clips. The four corruptions imitate real machine faults:

* ``tone``: 1-3 stationary sinusoids with a slight frequency wobble, like the whine of a worn bearing,
  gear mesh or electrical hum that a healthy machine does not make;
* ``impulses``: a quasi-periodic train of short damped resonances (2-20 per second), like a loose part,
  a chipped blade or a valve that rattles or knocks;
* ``tilt``: a spectral tilt of up to +-2 dB/octave, like a clogged filter or intake (duller) or a
  rubbing, dry contact (brighter), which reshapes the spectrum without adding any new component;
* ``stretch``: a 1-5 % change of speed and pitch, like a machine running slightly faster or slower
  under a changed load, a slipping belt or a drifting supply frequency.

Every output has the input's length and RMS, so loudness tells nothing (the features are normalised per
clip anyway). ``severity`` in (0, 1] scales how strong a corruption is; the random choices (frequencies,
rates, signs, click times) come only from ``np.random.default_rng((seed, KINDS.index(kind)))`` and do
not depend on ``severity``, so a larger severity is the same fault, stronger.

>>> clip = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
>>> out = proxy_outliers(clip, seed=7)
>>> sorted(out)
['impulses', 'stretch', 'tilt', 'tone']
>>> all(o.shape == clip.shape and o.dtype == np.float32 for o in out.values())
True
>>> bool(np.array_equal(corrupt(clip, "tone", seed=7), out["tone"]))
True
>>> round(float(np.sqrt(np.mean(out["tilt"] ** 2)) / np.sqrt(np.mean(clip ** 2))), 4)
1.0
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable, Iterable

import numpy as np
from scipy import signal

KINDS = ("tone", "impulses", "tilt", "stretch")

_MIN_SAMPLE_RATE = 1000  # tones go from 100 Hz to 0.45 sr: the band must not be empty
_TILT_REF_HZ = 1000.0  # gain 1 here (before the RMS is restored)
_TILT_FLOOR_HZ = 50.0  # bins below this (DC included) get the gain at this frequency


class CorruptionError(ValueError):
    """Unusable arguments for a corruption (one-line message)."""


def _level_db(severity: float) -> float:
    """Power of an added component relative to the clip: -30 dB (severity -> 0) .. -10 dB (severity 1)."""
    return -30.0 + 20.0 * severity


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def _check_wave(wave: Any) -> np.ndarray:
    """The clip as a float64 copy, or CorruptionError."""
    x = np.asarray(wave)
    if x.ndim != 1:
        raise CorruptionError(f"wave must be 1-D (n,) mono, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise CorruptionError(f"wave must be a float array, got dtype {x.dtype}")
    if x.size == 0:
        raise CorruptionError("wave is empty")
    if not np.all(np.isfinite(x)):
        raise CorruptionError("wave holds NaN or infinite samples")
    return x.astype(np.float64)  # always a copy: the caller's array is never written


def _check_kind(kind: Any) -> int:
    if not isinstance(kind, str) or kind not in KINDS:
        raise CorruptionError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    return KINDS.index(kind)


def _check_args(seed: Any, severity: Any, sample_rate: Any) -> tuple[int, float, int]:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise CorruptionError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(severity, bool) or not isinstance(severity, Real) or not 0 < severity <= 1:
        raise CorruptionError(f"severity must be in (0, 1], got {severity!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, Integral) or sample_rate < _MIN_SAMPLE_RATE:
        raise CorruptionError(f"sample_rate must be an integer >= {_MIN_SAMPLE_RATE} Hz, got {sample_rate!r}")
    return int(seed), float(severity), int(sample_rate)


# ---- parameters: drawn first from the kind's generator, independent of the clip and of severity ----

def _draw(kind: str, rng: np.random.Generator, severity: float, sr: int) -> dict[str, Any]:
    if kind == "tone":
        k = int(rng.integers(1, 4))
        freqs = rng.uniform(100.0, 0.45 * sr, k)
        weights = rng.uniform(0.5, 1.0, k)
        return {
            "freqs_hz": tuple(float(f) for f in freqs),
            "weights": tuple(float(w) for w in weights / weights.sum()),  # share of the added power
            "wobble_depth": tuple(float(d) for d in rng.uniform(2e-4, 2e-3, k)),  # relative FM depth
            "wobble_rate_hz": tuple(float(r) for r in rng.uniform(0.1, 1.0, k)),
            "level_db": _level_db(severity),
        }
    if kind == "impulses":
        return {
            "rate_hz": float(rng.uniform(2.0, 20.0)),
            "resonance_hz": float(np.exp(rng.uniform(np.log(300.0), np.log(0.4 * sr)))),
            "decay_s": float(rng.uniform(5e-4, 3e-3)),  # 1/e time of the click's envelope
            "level_db": _level_db(severity),
        }
    if kind == "tilt":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return {"slope_db_per_octave": sign * severity * float(rng.uniform(0.5, 2.0))}
    sign = 1.0 if rng.random() < 0.5 else -1.0  # stretch
    return {"factor": 1.0 + sign * severity * float(rng.uniform(0.01, 0.05))}


def corruption_params(kind: str, *, seed: int, severity: float = 0.5, sample_rate: int = 16000) -> dict[str, Any]:
    """The random choices ``corrupt(wave, kind, seed=seed, ...)`` makes, for logs and tests.

    tone: ``freqs_hz``, ``weights``, ``wobble_depth``, ``wobble_rate_hz``, ``level_db``; impulses:
    ``rate_hz``, ``resonance_hz``, ``decay_s``, ``level_db``; tilt: ``slope_db_per_octave``; stretch:
    ``factor`` (> 1: faster and higher). Per-sample draws (phases, click times) are not listed.

    >>> corruption_params("stretch", seed=3, severity=0.5) == corruption_params("stretch", seed=3, severity=0.5)
    True
    """
    index = _check_kind(kind)
    seed, severity, sample_rate = _check_args(seed, severity, sample_rate)
    return _draw(kind, np.random.default_rng((seed, index)), severity, sample_rate)


# ---- the corruptions: (n,) float64 -> (n,) float64, before the RMS is restored ----

def _add(x: np.ndarray, component: np.ndarray, level_db: float) -> np.ndarray:
    """x + component scaled to ``level_db`` of x's power (nothing is added to a silent clip)."""
    rx, rc = _rms(x), _rms(component)
    if rx == 0 or rc == 0:
        return x
    return x + component * (rx / rc * 10 ** (level_db / 20))


def _tone(x: np.ndarray, p: dict[str, Any], rng: np.random.Generator, sr: int) -> np.ndarray:
    t = np.arange(len(x)) / sr
    comp = np.zeros_like(x)
    for f, w, d, r in zip(p["freqs_hz"], p["weights"], p["wobble_depth"], p["wobble_rate_hz"]):
        phase0, wphase = rng.uniform(0, 2 * np.pi, 2)
        # instantaneous frequency f (1 + d sin(2 pi r t + wphase)), integrated in closed form
        phase = 2 * np.pi * f * t - (f * d / r) * (np.cos(2 * np.pi * r * t + wphase) - np.cos(wphase))
        comp += np.sqrt(2 * w) * np.sin(phase + phase0)  # power w each
    return _add(x, comp, p["level_db"])


def _impulses(x: np.ndarray, p: dict[str, Any], rng: np.random.Generator, sr: int) -> np.ndarray:
    n, rate, tau = len(x), p["rate_hz"], p["decay_s"]
    duration = n / sr
    # quasi-periodic onsets (+-25 % jitter); the first lies inside the clip, so there is at least one click
    first = rng.uniform(0, min(1 / rate, duration))
    gaps = rng.uniform(0.75, 1.25, math.ceil(duration * rate * 1.4) + 1) / rate
    times = first + np.concatenate(([0.0], np.cumsum(gaps)))
    amps = rng.uniform(0.5, 1.0, len(times))
    keep = times < duration
    idx = np.minimum((times[keep] * sr).astype(np.int64), n - 1)
    train = np.zeros(n)
    train[idx] = amps[keep]  # gaps >= 37 ms, so no two onsets share a sample
    tk = np.arange(max(1, math.ceil(8 * tau * sr))) / sr
    click = np.exp(-tk / tau) * np.sin(2 * np.pi * p["resonance_hz"] * tk)  # damped resonance
    comp = signal.oaconvolve(train, click)[:n]
    return _add(x, comp, p["level_db"])


def _tilt(x: np.ndarray, p: dict[str, Any], rng: np.random.Generator, sr: int) -> np.ndarray:
    f = np.fft.rfftfreq(len(x), 1 / sr)
    alpha = p["slope_db_per_octave"] / (20 * np.log10(2))  # amplitude exponent: gain (f / f0) ** alpha
    gain = (np.maximum(f, _TILT_FLOOR_HZ) / _TILT_REF_HZ) ** alpha
    return np.fft.irfft(np.fft.rfft(x) * gain, n=len(x))


def _stretch(x: np.ndarray, p: dict[str, Any], rng: np.random.Generator, sr: int) -> np.ndarray:
    # y(t) = x(factor t): n samples resampled (FFT, band-limited, the clip treated as periodic) to n / factor
    n = len(x)
    m = max(1, round(n / p["factor"]))
    y = signal.resample(x, m) if m != n else x
    # faster (m < n): wrap around, continuing the periodic clip the resampler assumed; slower: crop
    return y[:n] if m >= n else np.resize(y, n)


_APPLY: dict[str, Callable[[np.ndarray, dict[str, Any], np.random.Generator, int], np.ndarray]] = {
    "tone": _tone, "impulses": _impulses, "tilt": _tilt, "stretch": _stretch,
}


def _corrupt(x: np.ndarray, kind: str, index: int, seed: int, severity: float, sr: int) -> np.ndarray:
    rng = np.random.default_rng((seed, index))
    y = _APPLY[kind](x, _draw(kind, rng, severity, sr), rng, sr)
    rx, ry = _rms(x), _rms(y)
    if ry > 0:
        y = y * (rx / ry)  # same RMS as the input: loudness tells nothing
    return y.astype(np.float32)


def corrupt(wave: np.ndarray, kind: str, *, seed: int, severity: float = 0.5,
            sample_rate: int = 16000) -> np.ndarray:
    """(n,) float mono clip -> (n,) float32 corrupted copy with the same length and RMS.

    ``kind`` is one of ``KINDS``; ``severity`` in (0, 1]; the result depends only on
    (wave, kind, seed, severity, sample_rate). The input is never modified.
    """
    index = _check_kind(kind)
    seed, severity, sample_rate = _check_args(seed, severity, sample_rate)
    return _corrupt(_check_wave(wave), kind, index, seed, severity, sample_rate)


def proxy_outliers(wave: np.ndarray, *, seed: int, kinds: Iterable[str] = KINDS, severity: float = 0.5,
                   sample_rate: int = 16000) -> dict[str, np.ndarray]:
    """``{kind: corrupt(wave, kind, seed=seed, ...)}`` for each kind, in the order given."""
    if isinstance(kinds, str):
        raise CorruptionError(f"kinds must be a sequence of kind names, not the string {kinds!r}")
    kinds = tuple(kinds)
    indices = [_check_kind(k) for k in kinds]
    seed, severity, sample_rate = _check_args(seed, severity, sample_rate)
    x = _check_wave(wave)
    return {k: _corrupt(x, k, i, seed, severity, sample_rate) for k, i in zip(kinds, indices)}
