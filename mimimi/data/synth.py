"""Synthetic MIMII-like machine sounds in the DCASE 2020, 2021 and 2022-2025 Task 2 development layouts.

**These data are synthetic.** They stand in for MIMII / DCASE recordings, which cannot be downloaded
everywhere, so the pipeline can run offline in demos and tests. A score on them (ID accuracy,
AUC, pAUC) does NOT predict the score on real recordings and must not be compared with published
results: it only shows that the pipeline runs end to end and that a model learns *something* (that
IDs can be told apart and that anomalies differ from normal sounds).

Layouts written by ``generate`` (16 kHz, mono, 16-bit PCM), chosen by ``layout`` (``LAYOUTS``: the DCASE
namings of ``mimimi.data.dcase``, the names the index gives them):

``"dcase2020"`` (the default; ``NNNNNNNN`` counts from 0 per ID and label)::

    <out>/<type>/train/normal_id_XX_NNNNNNNN.wav
    <out>/<type>/test/normal_id_XX_NNNNNNNN.wav
    <out>/<type>/test/anomaly_id_XX_NNNNNNNN.wav

``"dcase2021"`` (sections ``XX`` as the classes, default 00 01 02; ``NNNN`` counts from 0000 per section,
domain, split and label; test names carry no attribute, as in 2021)::

    <out>/<type>/train/section_XX_{source,target}_train_normal_NNNN_<attr>.wav
    <out>/<type>/source_test/section_XX_source_test_{normal,anomaly}_NNNN.wav
    <out>/<type>/target_test/section_XX_target_test_{normal,anomaly}_NNNN.wav

``"dcase2022"`` (the 2022-2025 names; default one section 00, as in 2023-2025)::

    <out>/<type>/train/section_XX_{source,target}_train_normal_NNNN_<attr>.wav
    <out>/<type>/test/section_XX_{source,target}_test_{normal,anomaly}_NNNN_<attr>.wav
    <out>/<type>/attributes_XX.csv      header file_name,d1p,d1v; one row per clip of section XX

In the section layouts a section is a machine instance exactly as an ID is in ``"dcase2020"`` (section
``XX`` sounds like ID ``XX``), so a classifier over sections can learn. Each section has a source domain
(``n_train`` training clips) and a target domain (``n_target_train``, default 3 for 2021 and 10 from 2022
on, as in the challenges); each domain has ``n_test_normal`` normal and ``n_test_anomaly`` anomalous test clips.
The target domain is a real shift of the operating condition, set by ``domain_shift`` (s in 0..1; 0 = none):
the machine runs at ``1 + s`` times its source speed (the fan's and pump's shaft rates, the pump's
pulsation, their airflow and flow-noise bands, the slider's travel rate and whine, the valve's actuation
rate: harmonics move up by that factor) and its background is ``TARGET_SNR_DROP_DB * s`` dB louder. The
attribute ``<attr>`` is the operating speed, ``vel_<percent of the source speed>``: ``vel_100`` in the
source domain, ``vel_125`` in the target domain at s = 0.25 (``DEFAULT_DOMAIN_SHIFT``). A clip of the section
layouts is seeded by (seed, type, section, split, label, index, domain), so ``"dcase2021"`` and
``"dcase2022"`` name the same clips differently, and the source clips do not depend on ``domain_shift``.

Sound models, one per machine type:

* fan: blade-pass harmonics (shaft rate x blade count) and coloured airflow noise chopped by the blades;
* pump: shaft and vane-pass harmonics and flow noise, amplitude-modulated at a pulsation rate;
* slider: back-and-forth travel; rail friction noise and a motor whine follow the speed, end-stop clicks;
* valve: open/close clicks (damped resonances) in a repeating pattern, flow hiss while open.

Each ID's parameters (speeds, blade counts, harmonic profiles, resonances, timing pattern) come from a
generator seeded by (type, id) only, so an ID sounds alike under every ``seed``. Each clip adds speed
drift, amplitude/timing jitter and random phases, a factory background (pink/brown noise, distant
hum, occasional impacts) at ``snr_db``, and a random gain within a common RMS range, so loudness
alone does not tell IDs apart. The random streams of a clip are seeded by (seed, type, id, split,
label, index): asking for fewer test clips leaves the training clips unchanged.

Anomalous clips use one of ``ANOMALY_KINDS[type]``, chosen by the clip's index (``anomaly_kind``),
so a file name is enough to recover the kind. The kinds in ``PHASE_TIMING_KINDS`` change phase or
timing while leaving the average magnitude spectrum nearly as it is.

``generate(..., anomalies="off-manifold")`` draws the anomalous clips from ``OFF_MANIFOLD_KINDS[type]``
instead (``anomaly_kind(type, index, "off-manifold")``). Each adds a sound, or reshapes the spectrum, in a
way no ID's normal clips do, so the clip leaves every ID's manifold rather than moving towards another ID:

* fan ``clogged_intake``: a clogged intake filter: airflow noise 6-10 dB down, all above 400-800 Hz muffled;
* fan ``eroded_blades``: eroded, rounded blade edges: a smoother blade pulse, each harmonic 2.6-6 dB below the last;
* fan ``obstructed_intake``: a sheet sucked onto the intake guard: a 24 dB/octave cut above 300-600 Hz, flapping;
* pump ``dry_running``: no liquid: pulsation nearly stops, flow noise -10 dB, the low end below 250-400 Hz fades;
* pump ``worn_impeller``: worn, chipped vanes: the harmonic envelope tilts up, the 30th harmonic +18-24 dB;
* pump ``air_entrainment``: air drawn in: pulses at a fifth of their depth, the low end below 150-250 Hz softened;
* slider ``belt_squeal``: a glazed drive belt: a 1.5-4 kHz tone with vibrato while the carriage moves;
* slider ``rail_grinding``: a scored rail: 5.5-7.5 kHz grinding, above every ID's friction, as loud as it is fast;
* slider ``carriage_rattle``: a loose carriage: low 250-700 Hz knocks, 15-40 a second, while it moves;
* valve ``seat_whistle``: a leaking seat: a narrow 3-7 kHz whistle while the valve is closed;
* valve ``chatter``: the disc chatters on its seat: 40-90 small, high (3-7 kHz) clicks a second while open;
* valve ``solenoid_buzz``: a failing solenoid: a 100 Hz buzz with 25 harmonics while energised (open).

The spectral kinds keep the ID's harmonic series (its pitch and spacing), so an ID classifier still
names the ID while the log-mel statistics leave every ID's normal clips.

``generate(..., anomalies="temporal")`` draws them from ``TEMPORAL_KINDS[type]``: faults that change only when
things happen or how the phase runs. A clip's log-mel mean and standard deviation over time, per mel band (all
that the training-free ``stats-knn`` baseline sees), stay where the ID's normal clips have them, so only a model
that looks at the order of the frames or at the complex STFT's phase can find these:

* fan ``pulse_drift``: unsteady flow over the blades (separation coming and going) reshapes the blade-pass
  pulse: each harmonic's phase against the blade angle wanders by 2.25-3 rad, about 0.5 changes a second. A
  harmonic's power does not depend on its phase, and its frequency moves by ~0.2 Hz (1 Hz at most), as little
  as a normal fan's speed drift moves its second harmonic, so every frame's mel spectrum stays; the harmonics'
  phases, which advance in lockstep from frame to frame at their STFT bins in a normal fan, drift apart;
* pump ``late_pulses``: a sticking check valve: each pressure pulse comes late, by its own 0 to 0.38-0.48 of a
  pulsation cycle, while the drive keeps its pace, so the pressure trough before the next pulse is shorter;
* slider ``stroke_jitter``: a sticking carriage breaks away from each end stop late, by its own 0 to 0.75-0.95
  of a rest, while the controller keeps its pace, so the next rest is shorter;
* valve ``actuation_jitter``: a sticking pilot stage: each actuation cycle (open click, hiss, close click) starts
  late, by its own 0 to 0.75-0.95 of the closed time that ends the cycle, while the controller keeps its pace.

The timing kinds leave the events (pulses, strokes, clicks) as they are and as many, never overlapping; as the
clock that schedules them keeps its pace, each delay comes out of the rest that follows and the delays
telescope (``_late_after_rests``): over a clip the machine spends as long in every state as it does running
regularly (but for a delay cut off at either end), its frames are nearly a permutation of a regular clip's, and
a per-band mean or standard deviation over the frames stays. The rhythm, which the autocorrelation of the clip's
energy envelope shows, is irregular. ``TEMPORAL_SET`` (``python -m mimimi.synth --preset temporal``) is a set of
them large enough to train on. ``tests/test_synth_temporal.py`` measures both sides: ``stats-knn`` at chance, a
timing or phase oracle near 1.

``train_counts`` gives IDs different numbers of training clips; ``FAILS_LIKE_REAL`` is a set (imbalanced
counts, off-manifold anomalies, low SNR) on which an ID classifier's cross-entropy score inverts for the
majority ID while a training-free log-mel statistics kNN still finds the anomalies, as on real MIMII fans.

>>> sd = clip_seed(0, "fan", "00", "test", "anomaly", 2)
>>> x = synth_clip("fan", "00", sd, seconds=0.5, anomaly=anomaly_kind("fan", 2))
>>> x.dtype, x.shape, bool(np.abs(x).max() < 1.0), anomaly_kind("fan", 2)
(dtype('float32'), (8000,), True, 'blade_flutter')
>>> clip_name("anomaly", "06", 12)
'anomaly_id_06_00000012.wav'
>>> section_clip_path("dcase2022", "fan", "00", "target", "test", "anomaly", 7, attribute("target", 0.25))
'fan/test/section_00_target_test_anomaly_0007_vel_125.wav'
>>> section_clip_path("dcase2021", "fan", "01", "source", "test", "normal", 3, attribute("source", 0.25))
'fan/source_test/section_01_source_test_normal_0003.wav'
"""
from __future__ import annotations

import math
import multiprocessing
import re
import zlib
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import soundfile as sf

from mimimi.data import dcase

SAMPLE_RATE = 16_000
MACHINE_TYPES = ("fan", "pump", "slider", "valve")
DEFAULT_IDS = ("00", "02", "04", "06")
ANOMALY_KINDS: dict[str, tuple[str, ...]] = {
    "fan": ("imbalance", "bearing_rattle", "blade_flutter"),
    "pump": ("leak", "cavitation", "irregular_pulsation"),
    "slider": ("rail_damage", "no_lubrication", "stutter"),
    "valve": ("extra_missing_clicks", "shifted_timing", "damped_resonance"),
}
# Kinds that alter phase or timing far more than the average magnitude spectrum.
PHASE_TIMING_KINDS = frozenset({"blade_flutter", "irregular_pulsation", "stutter", "shifted_timing"})
# Kinds that take a clip off every ID's manifold (a sound or an envelope no ID has): anomalies="off-manifold".
OFF_MANIFOLD_KINDS: dict[str, tuple[str, ...]] = {
    "fan": ("clogged_intake", "eroded_blades", "obstructed_intake"),
    "pump": ("dry_running", "worn_impeller", "air_entrainment"),
    "slider": ("belt_squeal", "rail_grinding", "carriage_rattle"),
    "valve": ("seat_whistle", "chatter", "solenoid_buzz"),
}
# Kinds that change only when things happen or how phase runs, not the per-band log-mel mean and std of a
# clip: anomalies="temporal" (a training-free statistics baseline cannot see them; see the module docstring).
TEMPORAL_KINDS: dict[str, tuple[str, ...]] = {
    "fan": ("pulse_drift",),
    "pump": ("late_pulses",),
    "slider": ("stroke_jitter",),
    "valve": ("actuation_jitter",),
}
ANOMALY_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "default": ANOMALY_KINDS, "off-manifold": OFF_MANIFOLD_KINDS, "temporal": TEMPORAL_KINDS}
# generate() keywords of a set that fails like real MIMII fans (see the module docstring); add machine_types.
FAILS_LIKE_REAL: dict = dict(ids=DEFAULT_IDS, train_counts={"00": 40, "02": 20, "04": 3, "06": 3},
                             n_test_normal=10, n_test_anomaly=10, seconds=10.0, snr_db=0.0, anomalies="off-manifold")
# generate() keywords of a set whose anomalies only a model of timing or phase can find (module docstring):
# enough normal clips per ID to train a network on, at MIMII's cleanest SNR; add machine_types.
TEMPORAL_SET: dict = dict(ids=DEFAULT_IDS, n_train=120, n_test_normal=20, n_test_anomaly=20, seconds=10.0,
                          snr_db=6.0, anomalies="temporal")

RMS_DBFS = -36.0  # centre of the common loudness range: leaves headroom for impulsive valves (crest ~40)
RMS_JITTER_DB = 4.0  # per-clip gain drawn uniformly within +-this
PEAK_LIMIT = 0.95  # never reach full scale, so 16-bit PCM never clips

_SPLITS = {"train": 0, "test": 1}
_LABELS = {"normal": 0, "anomaly": 1}
_SIGNATURE_TAG = 0x5167_AB1E  # keeps the per-ID signature streams apart from the per-clip streams
_ID_RE = re.compile(r"[0-9]{2}")
TAU = 2.0 * np.pi

LAYOUTS = tuple(name for name in dcase.LAYOUTS if name != "mimii")  # the DCASE namings; not MIMII's
SECTION_LAYOUTS = tuple(name for name in LAYOUTS if name in dcase.SECTION_LAYOUTS)
_SECTIONED = " and ".join(SECTION_LAYOUTS)  # for messages: "dcase2021 and dcase2022"
DOMAINS = dcase.DOMAINS
_DOMAINS = {d: i for i, d in enumerate(DOMAINS)}  # source 0, target 1: part of the section clips' seeds
DEFAULT_DOMAIN_SHIFT = 0.25  # the target domain runs 25 % faster, with a 3 dB louder background
MAX_DOMAIN_SHIFT = 1.0  # twice the source speed at most (the fan's harmonics stay below Nyquist: see _fan)
TARGET_SNR_DROP_DB = 12.0  # per unit of domain_shift: the target domain's background is this much louder
SPEED_RANGE = (0.25, 2.0)  # synth_clip's speed, relative to the machine's nominal (source) speed
ATTRIBUTE_PARAMETER = "vel"  # d1p of attributes_XX.csv: the operating speed
_MAX_SECTION_CLIPS = 10_000  # NNNN has four digits


# ----------------------------------------------------------------------------- naming and seeding
def clip_name(label: str, machine_id: str, index: int) -> str:
    """DCASE 2020 Task 2 file name, e.g. ``normal_id_00_00000003.wav``."""
    return f"{label}_id_{machine_id}_{index:08d}.wav"


def operating_speed(domain: str, domain_shift: float) -> float:
    """The machine's speed relative to its source-domain speed: 1 in the source domain, ``1 + domain_shift``
    in the target domain."""
    return 1.0 + float(domain_shift) if _check_domain(domain) == "target" else 1.0


def attribute(domain: str, domain_shift: float) -> str:
    """The attribute part of a section-layout file name: the operating speed in percent of the source speed,
    rounded, e.g. ``vel_100`` (source) or ``vel_125`` (target at ``domain_shift`` 0.25)."""
    return f"{ATTRIBUTE_PARAMETER}_{round(100.0 * operating_speed(domain, domain_shift))}"


def section_clip_path(layout: str, machine_type: str, section: str, domain: str, split: str, label: str,
                      index: int, attr: str) -> str:
    """The path of a section-layout clip below the output root, ``<type>/<folder>/<name>`` (see the module
    docstring): ``layout`` "dcase2021" or "dcase2022", ``attr`` as ``attribute`` gives it."""
    if check_layout(layout) not in SECTION_LAYOUTS:
        raise ValueError(f"section_clip_path names {_SECTIONED} clips; use clip_name for {layout}")
    if split not in _SPLITS or label not in _LABELS or (split == "train" and label != "normal"):
        raise ValueError(f"split and label must be train/normal, test/normal or test/anomaly, got {split}/{label}")
    if not 0 <= index < _MAX_SECTION_CLIPS:
        raise ValueError(f"index must be in 0..{_MAX_SECTION_CLIPS - 1} (four digits), got {index}")
    stem = f"section_{check_id(section)}_{_check_domain(domain)}_{split}_{label}_{index:04d}"
    if layout == "dcase2021" and split == "test":
        return f"{check_type(machine_type)}/{domain}_test/{stem}.wav"  # 2021: per-domain folders, no attribute
    return f"{check_type(machine_type)}/{split}/{stem}_{attr}.wav"


def check_layout(layout: str) -> str:
    """``layout`` if the generator writes it, else ValueError; a year is not a layout (the command and a
    search's ``synthetic:`` map one to its layout, ``dcase.layout_of``), and the message says which it has."""
    if layout not in LAYOUTS:
        year = dcase.YEARS.get(layout)
        hint = f" ({layout} is a year; its layout is {year.layout.name})" if year and year.layout.name != layout else ""
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}{hint}")
    return layout


def layout_defaults(layout: str) -> tuple[tuple[str, ...], int | None]:
    """(default ids or sections, default target-domain training clips per section; None: no domains) of a
    layout: the development sections and target clips of the newest year with that naming (2021: 00 01 02 and
    3; 2023-2025: 00 and 10), ``DEFAULT_IDS`` where machine_id is a machine ID."""
    newest = dcase.years_of(check_layout(layout))[-1]
    return newest.dev_sections or DEFAULT_IDS, newest.target_train


def _check_domain(domain: str) -> str:
    if domain not in _DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose from {', '.join(DOMAINS)}")
    return domain


def anomaly_kind(machine_type: str, index: int, anomalies: str = "default") -> str:
    """The anomaly kind of the ``index``-th anomalous clip of any ID of ``machine_type`` (round robin) in the
    anomaly set ``anomalies`` (a key of ``ANOMALY_SETS``)."""
    kinds = ANOMALY_SETS[_check_anomalies(anomalies)][check_type(machine_type)]
    return kinds[index % len(kinds)]


def _check_anomalies(anomalies: str) -> str:
    if anomalies not in ANOMALY_SETS:
        raise ValueError(f"unknown anomaly set {anomalies!r}; choose from {', '.join(ANOMALY_SETS)}")
    return anomalies


def clip_seed(seed: int, machine_type: str, machine_id: str, split: str, label: str,
              index: int, domain: str | None = None) -> np.random.SeedSequence:
    """The seed of one clip: a function of all of (seed, type, id, split, label, index) and nothing else.

    ``domain`` ("source" or "target") seeds the clips of the section layouts, ``machine_id`` then being the
    section; None (the dcase2020 clips) keeps the seeds those clips always had.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if split not in _SPLITS or label not in _LABELS:
        raise ValueError(f"split must be one of {list(_SPLITS)} and label one of {list(_LABELS)}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    entropy = [int(seed), _tag(check_type(machine_type)), int(check_id(machine_id)), _SPLITS[split],
               _LABELS[label], int(index)]
    return np.random.SeedSequence(entropy if domain is None else entropy + [_DOMAINS[_check_domain(domain)]])


def _tag(s: str) -> int:
    return zlib.crc32(s.encode())  # stable across runs, unlike hash()


def check_type(machine_type: str) -> str:
    """``machine_type`` if the generator has a sound model for it, else ValueError."""
    if machine_type not in MACHINE_TYPES:
        raise ValueError(f"unknown machine type {machine_type!r}; choose from {', '.join(MACHINE_TYPES)}")
    return machine_type


def check_id(machine_id: str) -> str:
    """``machine_id`` (an ID or a section) if it is two digits, else ValueError."""
    if not isinstance(machine_id, str) or not _ID_RE.fullmatch(machine_id):
        raise ValueError(f"machine id must be two digits like '00', got {machine_id!r}")
    return machine_id


def _child(ss: np.random.SeedSequence, i: int) -> np.random.Generator:
    # what SeedSequence.spawn does, but stateless: the same ss always gives the same children
    return np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (i,)))


# ----------------------------------------------------------------------------- signal helpers
@lru_cache(maxsize=16)
def _freqs(n: int) -> np.ndarray:
    return np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)


def _unit(x: np.ndarray) -> np.ndarray:
    r = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return x / r if r > 0 else x


def _noise(rng: np.random.Generator, n: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Unit-RMS Gaussian noise of length n with amplitude response gain(f) (shaped in the rfft domain)."""
    f = _freqs(n)
    # independent re, im; single precision halves the FFT time and is plenty for noise
    spec = rng.standard_normal(2 * f.size, dtype=np.float32).view(np.complex64) * gain(f).astype(np.float32)
    return _unit(np.fft.irfft(spec, n))


def _band(fc: float, octaves: float) -> Callable[[np.ndarray], np.ndarray]:
    """Gaussian bump on a log-frequency axis: centre fc, standard deviation in octaves."""
    return lambda f: np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / fc) / octaves) ** 2)


def _slow(rng: np.random.Generator, n: int, rate_hz: float, rows: int | None = None, step: int = 1) -> np.ndarray:
    """Smooth random process(es) of about unit std with ~rate_hz independent values per second.

    Random control points joined by cosine interpolation (C1-smooth), evaluated at every step-th of n
    samples: shape (ceil(n / step),) or (rows, ceil(n / step)).
    """
    m = int(n / SAMPLE_RATE * rate_hz) + 2
    ctrl = rng.standard_normal(m if rows is None else (rows, m))
    pos = np.arange(0, n, step) * ((m - 1) / max(n - 1, 1))
    i = np.minimum(pos.astype(np.int64), m - 2)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
    return ctrl[..., i] * (1.0 - w) + ctrl[..., i + 1] * w


_COARSE = 32  # slow processes are computed every 32 samples (500 Hz) and interpolated linearly


def _upsample(coarse: np.ndarray, n: int) -> np.ndarray:
    return np.interp(np.arange(n), np.arange(coarse.size) * _COARSE, coarse)


def _slow_full(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    """``_slow`` at every sample, for rate_hz well below 250 Hz."""
    return _upsample(_slow(rng, n, rate_hz, step=_COARSE), n)


def _cis(phase: np.ndarray) -> np.ndarray:
    """exp(i*phase), about twice as fast as np.exp(1j * phase)."""
    z = np.empty(phase.shape, dtype=np.complex128)
    z.real = np.cos(phase)
    z.imag = np.sin(phase)
    return z


def _phase(freq_hz: np.ndarray, start: float) -> np.ndarray:
    """Instantaneous phase (rad) of a time-varying frequency (float64: exact enough unwrapped)."""
    return np.cumsum(freq_hz * (TAU / SAMPLE_RATE)) + start


def _harmonics(z: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Im(sum_k coef[k] z^(k+1)) for z = exp(i*phase); coef (K,) or (K, ...) broadcasting against z.

    Horner's rule: K complex multiply-adds instead of K sines (in single precision: the error grows
    like K * 1e-7, far below the 16-bit output).
    """
    z = z.astype(np.complex64)
    coef = np.asarray(coef).astype(np.complex64)
    acc = np.broadcast_to(coef[-1], z.shape).copy()
    for c in coef[-2::-1]:
        acc *= z
        acc += c
    return (acc * z).imag


def _lowpass(x: np.ndarray, fc: float, order: float) -> np.ndarray:
    """Zero-phase low-pass in the rfft domain: amplitude (1 + (f/fc)^2)^(-order/2), -6*order dB/octave above fc."""
    return np.fft.irfft(np.fft.rfft(x) * (1.0 + (_freqs(x.size) / fc) ** 2) ** (-0.5 * order), x.size)


def _highpass(x: np.ndarray, fc: float, order: float) -> np.ndarray:
    """Zero-phase high-pass: amplitude (1 + (fc/f)^2)^(-order/2), -6*order dB/octave below fc."""
    f = np.maximum(_freqs(x.size), 1.0)
    return np.fft.irfft(np.fft.rfft(x) * (1.0 + (fc / f) ** 2) ** (-0.5 * order), x.size)


def _gated(at: np.ndarray, gate: np.ndarray, level: float = 0.5) -> np.ndarray:
    """The event times of ``at`` (sample indices) where ``gate`` is above ``level``."""
    at = np.asarray(at, dtype=np.int64)
    return at[gate[np.clip(at, 0, gate.size - 1)] > level] if gate.size else at[:0]


def _kernel(rng: np.random.Generator, freqs: np.ndarray, decays: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """A click: sum of damped sinusoids (modes) with random phases, normalised to unit peak."""
    length = max(int(5.0 * float(np.max(decays)) * SAMPLE_RATE), 8)
    t = np.arange(length) / SAMPLE_RATE
    ph = rng.uniform(0.0, TAU, len(freqs))
    k = (amps[:, None] * np.exp(-t / decays[:, None]) * np.sin(TAU * freqs[:, None] * t + ph[:, None])).sum(0)
    k *= np.minimum(1.0, t * SAMPLE_RATE / 4.0)  # 4-sample attack: no step at the onset
    return k / max(float(np.max(np.abs(k))), 1e-12)


def _place(n: int, at: np.ndarray, amps: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Sum of amps[j] * kernel starting at sample at[j] (events are few, so a loop is cheap)."""
    out = np.zeros(n)
    for i, a in zip(np.asarray(at, dtype=np.int64), amps):
        lo, hi = max(i, 0), min(i + kernel.size, n)  # an event just before the clip still rings into it
        if lo < hi:
            out[lo:hi] += a * kernel[lo - i:hi - i]
    return out


def _crossings(u: np.ndarray, level: float) -> np.ndarray:
    """Sample indices where the cycle counter u passes level (mod 1), moving forward."""
    c = np.floor(u - level)
    return np.nonzero(np.diff(c) > 0)[0] + 1


def _poisson_times(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    k = rng.poisson(rate_hz * n / SAMPLE_RATE)
    return np.sort(rng.integers(0, max(n, 1), k))


def _late_after_rests(u: np.ndarray, rests: Sequence[tuple[float, float]], rng: np.random.Generator,
                      jitter: float) -> np.ndarray:
    """The cycle counter ``u`` (cycles, increasing) re-timed so that each part of the cycle that follows a rest
    starts late by its own random delay, uniform in [0, jitter * shortest rest), and runs as before.

    ``rests`` are (a, b) fractions of the cycle, 0 <= a < b <= 1, in order and not overlapping: the machine's
    state moves from a to b while nothing happens (a slider resting at an end stop, a pump between pressure
    pulses). The clock that schedules the cycle keeps its pace, so a late start takes its delay out of the
    next rest instead of pushing every later cycle back: each rest lasts ``b - a + delay - previous delay``
    (always > 0 for jitter < 1), and its state still moves from a to b, only faster or slower. Over a clip the
    time spent in every state is therefore as before (the delays telescope), so the frames are nearly a
    permutation of the regular machine's; what changes is when the events come.
    """
    a = np.array([r[0] for r in rests])
    b = np.array([r[1] for r in rests])
    k = np.arange(math.floor(u.min()) - 1, math.ceil(u.max()) + 2)[:, None]  # (cycles, 1), one spare each side
    delay = jitter * float(np.min(b - a)) * rng.random((k.size, a.size))  # (cycles, rests), in cycles
    before = np.concatenate([[0.0], delay.ravel()[:-1]])  # the delay of the part leading into each rest
    state = np.stack([(k + a).ravel(), (k + b).ravel()], axis=1).ravel()  # a0 b0 a1 b1 ... per cycle
    clock = np.stack([(k + a).ravel() + before, (k + b).ravel() + delay.ravel()], axis=1).ravel()
    return np.interp(u, clock, state)  # clock strictly increases (jitter < 1), so this inverts it


# ----------------------------------------------------------------------------- machine models
# Each model takes (n, sig, rng, arng, anomaly, sev, pace): sig draws the ID's signature (same for every clip
# of the ID), rng the clip's normal variability, arng only the anomaly; sev in [0.5, 1] scales the anomaly;
# pace (synth_clip's speed) scales the machine's operating rates (the target domain's shift). All draws from
# sig and rng come first and depend on neither the anomaly nor the pace, so a clip and its anomalous twin
# (same seed) share everything but the anomaly. Pace 1.0 multiplies or divides exactly: it changes no sample.

def _fan(n, sig, rng, arng, anomaly, sev, pace=1.0):
    blades = int(sig.choice([5, 6, 7, 9, 11]))
    rot = sig.uniform(14.0, 24.0) * pace  # shaft rate, Hz; blade-pass frequency = blades * rot
    K = 20
    k = np.arange(1, K + 1)
    profile = np.exp(-k * sig.uniform(0.1, 0.25)) * sig.uniform(0.4, 1.6, K)
    # harmonics that pace would push near Nyquist are dropped, not aliased (none at pace 1: 20 x 264 Hz)
    profile = profile * (k * blades * rot < 0.45 * SAMPLE_RATE)
    phase0 = sig.uniform(0.0, TAU, K)  # fixed harmonic phases: the blade-pass pulse shape of this fan
    air_shape = _band(sig.uniform(300.0, 1200.0) * pace, sig.uniform(0.8, 1.6))  # faster air, higher band
    air_tilt = sig.uniform(0.3, 0.8)
    air_level = sig.uniform(0.5, 1.0)

    f_rot = rot * (1.0 + 0.003 * rng.standard_normal()) * (1.0 + 0.001 * _slow_full(rng, n, 0.5))  # mains-locked
    theta = _phase(f_rot, rng.uniform(0.0, TAU))  # shaft angle
    coef = profile * np.exp(0.1 * rng.standard_normal(K)) * np.exp(1j * (phase0 + 0.15 * rng.standard_normal(K)))
    air = _noise(rng, n, lambda f: (f > 30) * np.maximum(f, 30.0) ** -air_tilt * (0.2 + air_shape(f)))
    chop_phase = np.exp(1j * rng.uniform(0.0, TAU))

    z = _cis(blades * theta)
    chop = 1.0 + 0.25 * (z * chop_phase).imag  # the blades chop the airflow: 1 + 0.25 sin(blade angle + c)
    if anomaly in ("blade_flutter", "pulse_drift"):
        # each harmonic's phase wanders on its own: the pulse shape keeps changing while each harmonic's
        # power, hence the average magnitude spectrum, stays the same. The wander is held for blocks of 32
        # samples (steps of a few hundredths of a radian) so Horner's rule runs on (blocks, 32) arrays
        # instead of a (K, n) one.
        nb = -(-n // _COARSE)
        if anomaly == "blade_flutter":
            wander = np.exp(1j * (1.2 + sev) * _slow(arng, n, 3.0, rows=K, step=_COARSE))  # (K, nb), ~3 Hz
        else:
            # unsteady flow over the blades (separation coming and going) reshapes the blade-pass pulse
            # slowly: each harmonic's phase against the blade angle wanders by 2.25-3 rad (1 std), about 0.5
            # changes a second. Its frequency moves by ~0.2 Hz (1 Hz at most), as little as a normal fan's
            # speed drift moves its second harmonic: no bin or mel band sees its level change
            wander = np.exp(1j * (1.5 + 1.5 * sev) * _slow(arng, n, 0.5, rows=K, step=_COARSE))  # (K, nb)
        zb = np.concatenate([z, np.ones(nb * _COARSE - n)]).reshape(nb, _COARSE)
        tonal = _harmonics(zb, (coef[:, None] * wander)[:, :, None]).ravel()[:n]
    else:
        if anomaly == "eroded_blades":
            # rounded, eroded blade edges: a smoother blade-pass pulse, each harmonic 2.6-6 dB below the last
            coef = coef * np.exp(-(k - 1) * (0.3 + 0.4 * sev))
        tonal = _harmonics(z, coef)
    if anomaly == "clogged_intake":
        air_level = air_level * (0.5 - 0.2 * sev)  # less air moves: airflow noise 6-10 dB down (muffled below)
    x = _unit(tonal) + air_level * air * chop
    if anomaly == "imbalance":
        # once-per-revolution force: shaft-rate sub-harmonics of the blade pass, and a wobble of the level
        z1 = _cis(theta)
        sub = _harmonics(z1, np.array([1.0, 0.5, 0.25]) * np.exp(1j * arng.uniform(0.0, TAU, 3)))
        wobble = (z1 * np.exp(1j * arng.uniform(0.0, TAU))).imag
        x = x * (1.0 + 0.3 * sev * wobble) + 0.8 * sev * _unit(sub)
    elif anomaly == "bearing_rattle":
        # worn bearing: random impacts ringing the housing at a few kHz
        at = _poisson_times(arng, n, arng.uniform(20.0, 60.0))
        ker = _kernel(arng, arng.uniform(2500.0, 5500.0, 2), arng.uniform(0.001, 0.003, 2), np.array([1.0, 0.6]))
        x = x + 3.0 * sev * _place(n, at, arng.uniform(0.3, 1.0, at.size), ker)
    elif anomaly == "clogged_intake":
        # ... and the clogged filter muffles everything above 400-800 Hz by 9-12 dB/octave
        x = _lowpass(x, arng.uniform(400.0, 800.0), 1.0 + sev)
    elif anomaly == "obstructed_intake":
        # a bag or sheet sucked onto the intake guard: a steep cut above 300-600 Hz; it flaps (level +-15 %)
        x = _lowpass(x, arng.uniform(300.0, 600.0), 4.0) * (1.0 + 0.15 * _slow_full(arng, n, 4.0))
    return x


def _pump(n, sig, rng, arng, anomaly, sev, pace=1.0):
    vanes = int(sig.choice([5, 6, 7]))
    rot = sig.uniform(24.0, 40.0) * pace  # motor shaft rate, Hz (30 harmonics: below 2.4 kHz at pace 2)
    K = 30
    k = np.arange(1, K + 1)
    profile = np.exp(-k * sig.uniform(0.05, 0.12)) * (0.3 + (k % vanes == 0) * sig.uniform(1.0, 2.0))
    profile *= sig.uniform(0.5, 1.5, K)  # vane-pass harmonics stand out
    phase0 = sig.uniform(0.0, TAU, K)
    puls = sig.uniform(0.8, 2.0) * pace  # pulsation rate, Hz
    depth = sig.uniform(0.3, 0.6)
    sharp = sig.uniform(1.0, 4.0)  # how peaky each pressure pulse is
    flow_shape = _band(sig.uniform(150.0, 600.0) * pace, sig.uniform(0.7, 1.3))  # faster flow, higher band
    pipe_shape = _band(sig.uniform(900.0, 2500.0), 0.08)  # pipe resonance
    pipe_level = sig.uniform(0.3, 1.0)
    flow_level = sig.uniform(0.4, 0.9)

    # the pulsation is slow: computed on the coarse (500 Hz) grid
    f_puls = puls * (1.0 + 0.01 * rng.standard_normal()) * (1.0 + 0.02 * _slow(rng, n, 0.5, step=_COARSE))
    psi0 = rng.uniform(0.0, TAU)
    rot_clip = rot * (1.0 + 0.008 * rng.standard_normal())
    theta0 = rng.uniform(0.0, TAU)
    coef = profile * np.exp(0.1 * rng.standard_normal(K)) * np.exp(1j * (phase0 + 0.15 * rng.standard_normal(K)))
    flow = _noise(rng, n, lambda f: (f > 20) * (flow_shape(f) + pipe_level * pipe_shape(f) + 0.05))

    if anomaly == "irregular_pulsation":
        # pulses keep their shape and mean rate but arrive irregularly (rate wanders by ~+-50%)
        f_puls = f_puls * np.maximum(1.0 + (0.3 + 0.3 * sev) * _slow(arng, n, 2.0 * puls, step=_COARSE), 0.2)
    psi = np.cumsum(f_puls) * (TAU * _COARSE / SAMPLE_RATE) + psi0
    if anomaly == "late_pulses":
        # a sticking check valve: each pressure pulse comes late, by its own 0 to 0.38-0.48 of a cycle, while
        # the drive keeps its pace, so the wait before the next pulse (the pressure trough, the half cycle
        # around psi = pi) is that much shorter: the same pulses, as many, irregularly spaced
        psi = TAU * _late_after_rests(psi / TAU, [(0.25, 0.75)], arng, 0.55 + 0.4 * sev)
    g = _upsample((0.5 + 0.5 * np.cos(psi)) ** sharp, n)  # pressure pulse, 0..1
    env = 1.0 + depth * (2.0 * g - 1.0)
    theta = _phase(rot_clip * (1.0 - 0.005 * (2.0 * g - 1.0)), theta0)  # the motor slows under load
    if anomaly == "dry_running":
        # no liquid to move: the pressure pulsation all but stops and the flow noise drops by 10 dB
        env = 1.0 + 0.1 * depth * (2.0 * g - 1.0)
        flow_level = 0.3 * flow_level
    elif anomaly == "air_entrainment":
        # air drawn in with the liquid cushions the pressure pulses (a fifth of their depth is left)
        env = 1.0 + 0.2 * depth * (2.0 * g - 1.0)
    elif anomaly == "worn_impeller":
        # worn, chipped vanes: the harmonic envelope tilts up, the 30th shaft harmonic gains 18-24 dB
        coef = coef * 10.0 ** ((12.0 + 12.0 * sev) / 20.0 * (k - 1) / (K - 1))
    x = _unit(_harmonics(_cis(theta), coef) * env) + flow_level * flow * env ** 1.5
    if anomaly == "leak":
        # steady high-frequency hiss from a leaking seal or fitting
        hiss = _noise(arng, n, _band(arng.uniform(3000.0, 6000.0), 0.3))
        x = x + (0.25 + 0.3 * sev) * hiss
    elif anomaly == "cavitation":
        # vapour bubbles collapsing: short broadband crackle bursts, mostly at low pressure (small g)
        at = _poisson_times(arng, n, arng.uniform(6.0, 14.0))
        at = at[arng.random(at.size) < (1.2 - g[at])]
        ker = np.exp(-np.arange(int(0.02 * SAMPLE_RATE)) / (arng.uniform(0.003, 0.008) * SAMPLE_RATE))
        crackle = _noise(arng, n, lambda f: np.clip((f - 1000.0) / 2000.0, 0.0, 1.0))
        x = x + 2.5 * sev * crackle * _place(n, at, arng.uniform(0.3, 1.0, at.size), ker)
    elif anomaly == "dry_running":
        # ... and the hydraulic low end (shaft and low vane-pass tones, flow rumble) below 250-400 Hz fades
        x = _highpass(x, arng.uniform(250.0, 400.0), 4.0)
    elif anomaly == "air_entrainment":
        # ... and the compressible mixture softens the low end below 150-250 Hz by 12 dB/octave
        x = _highpass(x, arng.uniform(150.0, 250.0), 2.0)
    return x


def _slider(n, sig, rng, arng, anomaly, sev, pace=1.0):
    period = sig.uniform(0.9, 1.6) / pace  # one back-and-forth cycle, s
    dwell = sig.uniform(0.05, 0.15)  # fraction of the cycle resting at each end
    fwd = (1.0 - 2.0 * dwell) * sig.uniform(0.35, 0.65)  # fraction of the cycle moving forward
    back = 1.0 - 2.0 * dwell - fwd
    fric_shape = _band(sig.uniform(1500.0, 4500.0), sig.uniform(0.4, 0.9))
    whine_hz = sig.uniform(250.0, 700.0) * pace  # motor whine at full travel speed
    whine_level = sig.uniform(0.2, 0.5)
    whine_harm = np.array([1.0, sig.uniform(0.2, 0.6), sig.uniform(0.1, 0.3)])
    modes = sig.uniform(700.0, 3500.0, 3)
    decays = sig.uniform(0.004, 0.015, 3)
    click_level = sig.uniform(1.0, 2.5)

    rate = (1.0 / period) * (1.0 + 0.01 * rng.standard_normal()) * (1.0 + 0.005 * _slow_full(rng, n, 0.3))
    u0 = rng.uniform(0.0, 1.0)
    fric = _noise(rng, n, lambda f: (f > 50) * (fric_shape(f) + 0.03))
    whine_ph = rng.uniform(0.0, TAU, 3)
    ker = _kernel(rng, modes * (1.0 + 0.01 * rng.standard_normal(3)), decays, np.array([1.0, 0.7, 0.5]))
    click_amp = 1.0 + 0.1 * rng.standard_normal(4 * int(n / SAMPLE_RATE / period + 2))

    if anomaly == "stutter":
        # the carriage hesitates mid-travel (stalls of 60-200 ms) and the cycle runs at another pace
        rate = rate * (1.0 + arng.choice([-1.0, 1.0]) * (0.08 + 0.1 * sev))
        stall = np.zeros(n)
        for i in _poisson_times(arng, n, 1.0 + 1.5 * sev):
            w = int(arng.uniform(0.06, 0.2) * SAMPLE_RATE)
            stall[i:i + w] = np.maximum(stall[i:i + w], np.hanning(w)[: n - i])
        rate = rate * (1.0 - 0.97 * stall)
    u = np.cumsum(rate) / SAMPLE_RATE + u0  # cycles travelled
    if anomaly == "stroke_jitter":
        # a sticking carriage breaks away from each end stop late, by its own 0 to 0.75-0.95 of a rest, while
        # the controller's clock keeps its pace (the next rest is that much shorter): the same strokes and
        # end-stop clicks, as many, in an irregular rhythm
        u = _late_after_rests(u, [(0.0, dwell), (dwell + fwd, 2.0 * dwell + fwd)], arng, 0.55 + 0.4 * sev)
    c = np.mod(u[::_COARSE], 1.0)  # position is smooth: computed on the coarse grid
    s_f = np.clip((c - dwell) / fwd, 0.0, 1.0)
    s_b = np.clip((c - 2.0 * dwell - fwd) / back, 0.0, 1.0)
    # position 0 .. 1 along the rail: rest, cosine ramp forward, rest, cosine ramp back (smooth stops)
    pos = _upsample(np.where(c < 2.0 * dwell + fwd, 0.5 - 0.5 * np.cos(np.pi * s_f), 0.5 + 0.5 * np.cos(np.pi * s_b)), n)
    speed = np.abs(np.diff(pos, prepend=pos[:1]))
    speed = speed / max(float(speed.max()), 1e-12)

    whine = _harmonics(_cis(_phase(whine_hz * speed, 0.0)), whine_harm * np.exp(1j * whine_ph)) * speed
    if anomaly == "no_lubrication":
        # dry rail: louder, rougher friction (stick-slip modulates it at tens of Hz)
        fric = fric * (1.0 + sev * arng.uniform(1.0, 2.0)) * (1.0 + 0.8 * np.abs(_slow_full(arng, n, 60.0)))
    arrivals = np.sort(np.concatenate([_crossings(u, dwell + fwd), _crossings(u, 0.0)]))  # end stops
    clicks = _place(n, arrivals, click_amp[: arrivals.size], ker)
    x = fric * speed ** 1.2 + whine_level * whine + click_level * clicks
    if anomaly == "rail_damage":
        # a dent at one point of the rail clicks each time the carriage passes over it
        d = arng.uniform(0.25, 0.75)
        at = np.nonzero(np.diff(np.sign(pos - d)) != 0)[0] + 1
        dker = _kernel(arng, arng.uniform(4000.0, 6500.0, 2), np.array([0.003, 0.006]), np.array([1.0, 0.5]))
        x = x + 2.5 * click_level * sev * _place(n, at, arng.uniform(0.6, 1.0, at.size), dker)
    elif anomaly == "belt_squeal":
        # a glazed drive belt squeals while the carriage moves: a tone at 1.5-4 kHz with a slight vibrato
        f_sq = arng.uniform(1500.0, 4000.0) * (1.0 + 0.01 * _slow_full(arng, n, 5.0))
        moving = np.clip((speed - 0.2) / 0.3, 0.0, 1.0)
        x = x + (0.4 + 0.4 * sev) * np.sin(_phase(f_sq, arng.uniform(0.0, TAU))) * moving
    elif anomaly == "rail_grinding":
        # a scored rail: grinding in a band at 5.5-7.5 kHz, above every ID's friction band, as loud as the
        # carriage is fast
        grind = _noise(arng, n, _band(arng.uniform(5500.0, 7500.0), 0.15))
        x = x + (0.15 + 0.15 * sev) * grind * speed
    elif anomaly == "carriage_rattle":
        # a loose carriage knocks on the rail while it moves: low knocks, 15-40 per second
        at = _gated(_poisson_times(arng, n, arng.uniform(15.0, 40.0)), speed, 0.3)
        rker = _kernel(arng, arng.uniform(250.0, 700.0, 3), arng.uniform(0.005, 0.012, 3), np.array([1.0, 0.6, 0.4]))
        x = x + 1.5 * click_level * sev * _place(n, at, arng.uniform(0.4, 1.0, at.size), rker)
    return x


def _valve(n, sig, rng, arng, anomaly, sev, pace=1.0):
    period = sig.uniform(0.6, 1.3) / pace  # one open/close pattern, s
    pulses = int(sig.choice([1, 2]))
    if pulses == 1:
        opens, durs = np.array([0.0]), np.array([sig.uniform(0.25, 0.6)])
    else:
        d1, gap = sig.uniform(0.1, 0.25), sig.uniform(0.08, 0.2)
        opens, durs = np.array([0.0, d1 + gap]), np.array([d1, sig.uniform(0.1, 0.25)])
    open_modes = (sig.uniform(800.0, 5000.0, 3), sig.uniform(0.003, 0.012, 3), sig.uniform(0.3, 1.0, 3))
    close_modes = (sig.uniform(800.0, 5000.0, 3), sig.uniform(0.003, 0.012, 3), sig.uniform(0.3, 1.0, 3))
    close_gain = sig.uniform(1.0, 2.0)
    hiss_shape = _band(sig.uniform(1000.0, 3000.0), 0.6)
    hiss_level = sig.uniform(0.01, 0.03)

    per = period * (1.0 + 0.01 * rng.standard_normal())
    start = -rng.uniform(0.0, per)
    cycles = np.arange(int(n / SAMPLE_RATE / per) + 2)
    t_open = (start + cycles[:, None] * per + opens * per).ravel()
    durs_s = np.broadcast_to(durs * per, (cycles.size, durs.size)).ravel()
    jit_o, jit_c = 0.002 * rng.standard_normal((2, t_open.size))  # actuator timing jitter, s
    amp_o, amp_c = 1.0 + 0.1 * rng.standard_normal((2, t_open.size))
    mode_jit = 1.0 + 0.01 * rng.standard_normal(2)
    kseed = rng.integers(2 ** 32)
    hiss = _noise(rng, n, lambda f: (f > 100) * hiss_shape(f))

    if anomaly == "shifted_timing":
        # a sticking valve closes late: the same clicks in another rhythm
        durs_s = durs_s * (1.0 + 0.25 + 0.2 * sev)
    if anomaly == "damped_resonance":
        # deposits or a cracked body: resonances move by 10-25 % and ring out much faster
        shift = 1.0 + arng.choice([-1.0, 1.0]) * arng.uniform(0.1, 0.15 + 0.1 * sev)
        open_modes = (open_modes[0] * shift, open_modes[1] * (0.6 - 0.3 * sev), open_modes[2])
        close_modes = (close_modes[0] * shift, close_modes[1] * (0.6 - 0.3 * sev), close_modes[2])
    krng = np.random.default_rng(kseed)
    k_open = _kernel(krng, open_modes[0] * mode_jit[0], open_modes[1], open_modes[2])
    k_close = _kernel(krng, close_modes[0] * mode_jit[1], close_modes[1], close_modes[2])
    t_open = t_open + jit_o
    if anomaly == "actuation_jitter":
        # a sticking pilot stage: each actuation cycle starts late, by its own 0 to 0.75-0.95 of the closed
        # time that ends the cycle, and then opens and closes as usual; the controller's clock keeps its
        # pace. The same clicks and open times, as many, no two cycles overlapping, in an irregular rhythm
        closed = per * (1.0 - float(opens[-1] + durs[-1]))
        t_open = t_open + np.repeat((0.55 + 0.4 * sev) * closed * arng.random(cycles.size), opens.size)
    t_close = t_open + durs_s + jit_c
    keep, t_extra, a_extra = np.ones(t_open.size, dtype=bool), np.zeros(0), np.zeros(0)
    if anomaly == "extra_missing_clicks":
        # sticking valve: some actuations are missed, some closes bounce (a second click 15-40 ms later)
        keep = arng.random(t_open.size) >= 0.2 + 0.25 * sev
        bounce = keep & (arng.random(t_open.size) < 0.3 + 0.4 * sev)
        t_extra = t_close[bounce] + arng.uniform(0.015, 0.04, int(bounce.sum()))
        a_extra = arng.uniform(0.3, 0.7, t_extra.size)
    i_open, i_close = np.round(t_open[keep] * SAMPLE_RATE), np.round(t_close[keep] * SAMPLE_RATE)
    x = (_place(n, i_open, amp_o[keep], k_open)
         + close_gain * _place(n, np.concatenate([i_close, np.round(t_extra * SAMPLE_RATE)]),
                               np.concatenate([amp_c[keep], a_extra]), k_close))
    # flow hiss while open: +1 at each open, -1 at its close, integrated
    gate = np.zeros(n + 1)
    np.add.at(gate, np.clip(i_open, 0, n).astype(np.int64), 1.0)
    np.add.at(gate, np.clip(i_close, 0, n).astype(np.int64), -1.0)
    gate = np.clip(np.cumsum(gate)[:n], 0.0, 1.0)
    level = float(np.sqrt(np.mean(x * x)))  # the new sounds are set against the clicks' RMS
    if anomaly == "seat_whistle":
        # a leaking seat whistles while the valve is closed: a narrow band at 3-7 kHz
        whistle = _noise(arng, n, _band(arng.uniform(3000.0, 7000.0), 0.015))
        x = x + (0.3 + 0.3 * sev) * level * whistle * (1.0 - gate)
    elif anomaly == "chatter":
        # the disc chatters on its seat while open: 40-90 small, high clicks a second
        at = _gated(_poisson_times(arng, n, arng.uniform(40.0, 90.0)), gate)
        cker = _kernel(arng, arng.uniform(3000.0, 7000.0, 2), arng.uniform(0.0005, 0.0015, 2), np.array([1.0, 0.5]))
        x = x + (0.2 + 0.2 * sev) * _place(n, at, arng.uniform(0.5, 1.0, at.size), cker)
    elif anomaly == "solenoid_buzz":
        # a failing solenoid buzzes while energised (open): 100 Hz with many harmonics
        hz = np.arange(1, 26)
        buzz = _harmonics(_cis(TAU * 100.0 * np.arange(n) / SAMPLE_RATE + arng.uniform(0.0, TAU)),
                          hz ** -0.7 * np.exp(1j * arng.uniform(0.0, TAU, hz.size)))
        x = x + (1.0 + 1.0 * sev) * level * _unit(buzz) * gate
    return x + hiss_level * hiss * gate


_MODELS = {"fan": _fan, "pump": _pump, "slider": _slider, "valve": _valve}


@lru_cache(maxsize=8)
def _background_bases(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pink and brown amplitude responses (each scaled to unit RMS output) and the 50 Hz phasor."""
    f = _freqs(n)
    fs = np.maximum(f, 15.0)
    pink, brown = (f > 15) / np.sqrt(fs), (f > 15) / fs
    scale = lambda g: g / max(float(np.sqrt(np.sum(g * g))), 1e-12)
    return scale(pink), scale(brown), _cis(TAU * 50.0 * np.arange(n) / SAMPLE_RATE)


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Factory background, the same process for every type and ID: unit RMS."""
    pink, brown, hum50 = _background_bases(n)
    a, b = rng.uniform(0.6, 1.0), rng.uniform(0.3, 0.8)
    # one noise with the power spectrum of a*pink + b*brown, both unit RMS and independent
    x = _noise(rng, n, lambda f: np.sqrt((a * pink) ** 2 + (b * brown) ** 2))
    # distant mains-driven machinery: 50 Hz hum and a few harmonics
    hum = _harmonics(hum50, np.array([1.0, 0.5, 0.3, 0.15]) * np.exp(1j * rng.uniform(0.0, TAU, 4)))
    x = x + rng.uniform(0.05, 0.3) * hum
    # occasional distant impacts (tools, doors): low-passed noise bursts that die away
    for i in _poisson_times(rng, n, 0.3):
        m = int(rng.uniform(0.05, 0.4) * SAMPLE_RATE)
        fc = rng.uniform(300.0, 2000.0)
        burst = _noise(rng, m, lambda f: 1.0 / (1.0 + (f / fc) ** 2)) * np.exp(-np.arange(m) / (0.25 * m))
        seg = burst[: n - i]
        x[i:i + seg.size] += rng.uniform(0.5, 2.0) * seg
    return _unit(x * (1.0 + 0.15 * _slow_full(rng, n, 0.5)))  # level drifts as distant machines come and go


# ----------------------------------------------------------------------------- one clip, many clips
def synth_clip(machine_type: str, machine_id: str, seed: int | np.random.SeedSequence = 0, *,
               seconds: float = 10.0, snr_db: float = 6.0, anomaly: str | None = None,
               speed: float = 1.0) -> np.ndarray:
    """One clip as float32 in (-1, 1), shape (round(seconds * 16000),).

    seed: an int or a ``clip_seed(...)``; the same seed with and without ``anomaly`` gives the same
    machine, background and gain, differing only by the anomaly. ``anomaly`` is None (normal) or a kind
    of ``machine_type`` in any of ``ANOMALY_SETS`` (``ANOMALY_KINDS``, ``OFF_MANIFOLD_KINDS``,
    ``TEMPORAL_KINDS``). ``snr_db`` is machine vs background power; ``inf`` gives the machine alone.
    ``speed`` (within ``SPEED_RANGE``) is the operating speed relative to the machine's nominal one: its rates
    and harmonics scale by it (the target domain's shift, see ``operating_speed``); 1.0 is the machine as the
    dcase2020 layout has it.
    """
    check_type(machine_type)
    check_id(machine_id)
    kinds = tuple(dict.fromkeys(k for table in ANOMALY_SETS.values() for k in table[machine_type]))
    if anomaly is not None and anomaly not in kinds:
        raise ValueError(f"unknown {machine_type} anomaly {anomaly!r}; choose from {kinds}")
    n = _n_samples(seconds)
    if math.isnan(snr_db) or snr_db == -math.inf:
        raise ValueError(f"snr_db must be a number or +inf, got {snr_db}")
    if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:  # also rejects nan
        raise ValueError(f"speed must be within {SPEED_RANGE[0]}..{SPEED_RANGE[1]}, got {speed}")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    sig = np.random.default_rng(np.random.SeedSequence([_SIGNATURE_TAG, _tag(machine_type), int(machine_id)]))
    arng = _child(ss, 1)
    sev = arng.uniform(0.5, 1.0)
    x = _unit(_MODELS[machine_type](n, sig, _child(ss, 0), arng, anomaly, sev, float(speed)))
    if snr_db != math.inf:
        x = x + 10.0 ** (-snr_db / 20.0) * _background(_child(ss, 2), n)  # both unit RMS: ratio = SNR
    gain = 10.0 ** ((RMS_DBFS + _child(ss, 3).uniform(-RMS_JITTER_DB, RMS_JITTER_DB)) / 20.0)
    x = gain * _unit(x)
    peak = float(np.max(np.abs(x)))
    if peak > PEAK_LIMIT:
        x *= PEAK_LIMIT / peak  # rare (impulsive valves at the top of the gain range)
    return x.astype(np.float32)


def _n_samples(seconds: float) -> int:
    n = round(float(seconds) * SAMPLE_RATE) if math.isfinite(seconds) else 0
    if n < 1:
        raise ValueError(f"seconds must be positive (at least one sample), got {seconds}")
    return n


def generate(out: str | Path, machine_types: Sequence[str] = MACHINE_TYPES, ids: Sequence[str] | None = None,
             n_train: int = 40, n_test_normal: int = 10, n_test_anomaly: int = 10, seconds: float = 10.0,
             seed: int = 0, snr_db: float = 6.0, workers: int = 1, *,
             train_counts: Mapping[str, int] | None = None, anomalies: str = "default", layout: str = "dcase2020",
             sections: Sequence[str] | None = None, n_target_train: int | None = None,
             domain_shift: float | None = None) -> list[Path]:
    """Write a synthetic DCASE-layout tree under ``out``; returns the written clip paths in order.

    ``layout`` is one of ``LAYOUTS`` (module docstring). ``ids`` are the classes: machine IDs (default
    ``DEFAULT_IDS``) for "dcase2020", sections for "dcase2021" (default 00 01 02) and "dcase2022" (default
    00); ``sections`` is another name for them in the section layouts (give one of the two).
    ``train_counts`` ({id or section: clips}) overrides ``n_train`` for the classes it names (each one of
    them); in the section layouts ``n_train`` counts the source domain's training clips, ``n_target_train``
    (default 3 for dcase2021, 10 for dcase2022) the target domain's, and ``n_test_normal`` and
    ``n_test_anomaly`` the test clips of each domain. ``domain_shift`` (0..``MAX_DOMAIN_SHIFT``, default
    ``DEFAULT_DOMAIN_SHIFT``; 0 = none) sets how far the target domain's operating speed and background
    level move. "dcase2022" also writes ``<type>/attributes_XX.csv`` per section: header
    ``file_name,d1p,d1v``, the training rows and then the test rows, each in name order.
    ``anomalies`` picks the anomaly kinds: ``"default"`` (``ANOMALY_KINDS``), ``"off-manifold"``
    (``OFF_MANIFOLD_KINDS``) or ``"temporal"`` (``TEMPORAL_KINDS``). ``workers`` > 1 writes clips in that many
    processes (the files are the same for any number). Files with the same names are overwritten; other files
    under ``out`` are left alone.
    """
    layout = check_layout(layout)
    sectioned = layout in SECTION_LAYOUTS
    if sections is not None:
        if not sectioned:
            raise ValueError(f"sections are the classes of the {_SECTIONED} layouts; {layout} has ids")
        if ids is not None:
            raise ValueError("give the sections once: as ids or as sections, not both")
        ids = sections
    default_ids, default_target = layout_defaults(layout)
    if not sectioned:
        for name, v in (("n_target_train", n_target_train), ("domain_shift", domain_shift)):
            if v is not None:
                raise ValueError(f"{name} applies to the {_SECTIONED} layouts (which have a target domain), "
                                 f"not to {layout}")
    machine_types = list(dict.fromkeys(check_type(t) for t in machine_types))
    ids = list(dict.fromkeys(check_id(i) for i in (default_ids if ids is None else ids)))
    if not machine_types or not ids:
        raise ValueError(f"need at least one machine type and one {'section' if sectioned else 'id'}")
    n_target = default_target if n_target_train is None else n_target_train
    counts = [("n_train", n_train), ("n_test_normal", n_test_normal), ("n_test_anomaly", n_test_anomaly)]
    counts += [("n_target_train", n_target)] if sectioned else []
    for name, v in counts + [("workers", workers)]:
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    per_id = {mid: n_train for mid in ids}
    for mid, v in (train_counts or {}).items():
        if mid not in per_id:
            raise ValueError(f"train_counts names {'section' if sectioned else 'id'} {mid!r}, which is not one "
                             f"of the {'sections' if sectioned else 'ids'} {', '.join(ids)}")
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"train_counts[{mid!r}] must be a positive integer, got {v!r}")
        per_id[mid] = int(v)
    if sectioned:
        counts += [(f"train_counts[{mid!r}]", v) for mid, v in per_id.items()]
        for name, v in counts:
            if v > _MAX_SECTION_CLIPS:
                raise ValueError(f"{name} is {v}, but {layout} numbers clips with four digits (at most "
                                 f"{_MAX_SECTION_CLIPS} per section, domain and label)")
        shift = DEFAULT_DOMAIN_SHIFT if domain_shift is None else domain_shift
        if isinstance(shift, bool) or not isinstance(shift, (int, float, np.integer, np.floating)) \
                or not 0.0 <= shift <= MAX_DOMAIN_SHIFT:
            raise ValueError(f"domain_shift must be a number within 0..{MAX_DOMAIN_SHIFT}, got {domain_shift!r}")
        shift = float(shift)
    _check_anomalies(anomalies)
    _n_samples(seconds)
    if math.isnan(snr_db) or snr_db == -math.inf:
        raise ValueError(f"snr_db must be a number or +inf, got {snr_db}")
    clip_seed(seed, machine_types[0], ids[0], "train", "normal", 0)  # validates the seed
    out = Path(out)
    if sectioned:
        return _generate_sections(out, layout, machine_types, ids, per_id, n_target, n_test_normal, n_test_anomaly,
                                  seconds, seed, snr_db, workers, anomalies, shift)
    jobs = []
    for mt in machine_types:
        for split, label, count in (("train", "normal", per_id), ("test", "normal", n_test_normal),
                                    ("test", "anomaly", n_test_anomaly)):
            (out / mt / split).mkdir(parents=True, exist_ok=True)
            jobs += [(out / mt / split / clip_name(label, mid, i), mt, mid, split, label, i, seconds, seed, snr_db,
                      anomalies, None, 1.0)  # no domain, nominal speed: the seeds and clips dcase2020 always had
                     for mid in ids for i in range(count[mid] if isinstance(count, dict) else count)]
    return _run_jobs(jobs, workers)


def _generate_sections(out: Path, layout: str, machine_types: list[str], sections: list[str],
                       per_section: dict[str, int], n_target: int, n_test_normal: int, n_test_anomaly: int,
                       seconds: float, seed: int, snr_db: float, workers: int, anomalies: str,
                       shift: float) -> list[Path]:
    """``generate`` for the dcase2021 and dcase2022 layouts (arguments checked): per type and section, the
    source domain's training and test clips, then the target domain's; then dcase2022's attributes_XX.csv."""
    jobs, rows = [], {}
    for mt in machine_types:
        for sec in sections:
            for domain in DOMAINS:
                speed = operating_speed(domain, shift)
                snr = snr_db if domain == "source" else snr_db - TARGET_SNR_DROP_DB * shift
                attr = attribute(domain, shift)
                n_tr = per_section[sec] if domain == "source" else n_target
                for split, label, count in (("train", "normal", n_tr), ("test", "normal", n_test_normal),
                                            ("test", "anomaly", n_test_anomaly)):
                    for i in range(count):
                        rel = section_clip_path(layout, mt, sec, domain, split, label, i, attr)
                        jobs.append((out / rel, mt, sec, split, label, i, seconds, seed, snr, anomalies, domain,
                                     speed))
                        rows.setdefault((mt, sec), []).append((split, rel, attr.split("_", 1)[1]))
    for folder in dict.fromkeys(job[0].parent for job in jobs):
        folder.mkdir(parents=True, exist_ok=True)
    paths = _run_jobs(jobs, workers)
    if layout == "dcase2022":  # written after the clips, so a table never names a clip that is not there
        for (mt, sec), clips in rows.items():
            lines = ["file_name,d1p,d1v"]
            for split in _SPLITS:  # train rows, then test rows
                lines += [f"{rel},{ATTRIBUTE_PARAMETER},{value}" for _, rel, value in sorted(c for c in clips
                                                                                          if c[0] == split)]
            (out / mt / f"attributes_{sec}.csv").write_text("\n".join(lines) + "\n")
    return paths


def _run_jobs(jobs: list[tuple], workers: int) -> list[Path]:
    if workers == 1:
        return [_write_clip(job) for job in jobs]
    # spawn, not fork: the caller may hold threads (torch, Ray) that a forked child would inherit broken
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as ex:
        return list(ex.map(_write_clip, jobs, chunksize=8))


def _write_clip(job: tuple) -> Path:
    path, mt, mid, split, label, i, seconds, seed, snr_db, anomalies, domain, speed = job
    x = synth_clip(mt, mid, clip_seed(seed, mt, mid, split, label, i, domain), seconds=seconds, snr_db=snr_db,
                   anomaly=anomaly_kind(mt, i, anomalies) if label == "anomaly" else None, speed=speed)
    sf.write(path, x, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return path
