"""The temporal anomaly set (``anomalies="temporal"``, ``python -m mimimi.synth --preset temporal``): faults that
change when things happen or how the phase runs, and nothing a clip's log-mel statistics can show.

(a) The statistics stay: the training-free ``stats-knn`` baseline (cosine kNN, k = 1, on the per-band log-mel mean
and standard deviation, ``mimimi.kinds.LogMelStats`` of ``mimimi.features.log_mel`` on the decoded wav files,
against the ID's normal training clips) is at chance on every type, and every anomalous clip's statistics stay
next to those of its normal twin (the same seed without the anomaly: the same machine, background and gain).
(b) The anomalies are real: an oracle that knows only what kind of structure to look at finds them. Timing
(pump, slider, valve): how well the clip's energy envelope repeats, the highest autocorrelation at a lag of
0.25-2.5 s (the machines' cycles). Phase (fan): whether the harmonics' phases, unwrapped from the complex STFT's
frame-to-frame phase advance at their bins, stay locked to each other.
(c) The set is deterministic, leaves the normal clips alone and reaches the files, both layouts and the command.

Measured here (seed 0, IDs 00 02 04 06, 4 training clips per ID, 6 normal and 6 anomalous test clips, 4 s, 6 dB;
mean per-ID AUC): stats-knn fan 0.49, pump 0.60, slider 0.61, valve 0.65, and 0.46, 0.58, 0.61, 0.63 with the
normal twins in the anomalies' place (an anomaly's statistics lie 2-21 % as far from its twin's, median per ID,
as two normal clips' from each other); oracle fan 1.00, pump 1.00, slider 1.00, valve 0.99. At the preset's
scale (10 s, 6 dB, 20 training clips per ID, 20 + 20 test clips) stats-knn gave 0.59, 0.48, 0.47, 0.55 against
0.59, 0.49, 0.46, 0.54 with twins, and every oracle 1.00.
"""
from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf
import torch

from mimimi import synth as command
from mimimi.config import FeatureConfig
from mimimi.data import synth as S
from mimimi.features import complex_stft, decode, log_mel
from mimimi.kinds import LogMelStats
from mimimi.metrics import auc
from mimimi.scoring.backends import IDScorers

SECONDS, SNR, SEED = 4.0, 6.0, 0
N_TRAIN, N_TEST = 4, 6
CFG = FeatureConfig()  # n_fft 1024, hop 512, 128 Slaney mels, 16 kHz: the baseline's log-mel
RAW = FeatureConfig(normalize="none")  # the complex STFT as it is, phases untouched
# the band whose energy envelope shows each machine's rhythm: the pump's pulses swell the whole sound, the
# slider's and valve's end-stop and actuation clicks ring above 1 kHz
RHYTHM_BAND_HZ = {"pump": 0.0, "slider": 1000.0, "valve": 1000.0}


# ----------------------------------------------------------------------------- the kinds table
def test_temporal_kinds_table():
    assert S.ANOMALY_SETS["temporal"] is S.TEMPORAL_KINDS and set(S.TEMPORAL_KINDS) == set(S.MACHINE_TYPES)
    other = {k for name, table in S.ANOMALY_SETS.items() if name != "temporal" for ks in table.values() for k in ks}
    for mt, kinds in S.TEMPORAL_KINDS.items():
        assert kinds and len(set(kinds)) == len(kinds) and not set(kinds) & other
        assert [S.anomaly_kind(mt, i, "temporal") for i in range(2 * len(kinds))] == [*kinds, *kinds]
        for k in kinds:
            assert S.__doc__.count(f"``{k}``") == 1, k  # documented once
            for speed in S.SPEED_RANGE + (1.0,):  # implemented, at every operating speed a domain can have
                x = S.synth_clip(mt, "00", 1, seconds=0.3, anomaly=k, speed=speed)
                assert x.shape == (4800,) and x.dtype == np.float32 and np.isfinite(x).all()
    with pytest.raises(ValueError, match="anomaly"):
        S.synth_clip("fan", "00", 0, seconds=0.1, anomaly="stroke_jitter")  # a slider kind


def test_late_after_rests_keeps_every_state_and_delays_only_the_events():
    # the oracle: a regular cycle counter, two rests per cycle; the re-timed counter must lag by less than the
    # largest delay, move at the clock's pace outside the rests, and spend as long in every state
    rests, jitter = [(0.1, 0.3), (0.6, 0.7)], 0.9
    u = np.linspace(0.37, 60.37, 600_001)  # 60 cycles, 10_000 clock steps each
    w = S._late_after_rests(u, rests, np.random.default_rng(0), jitter)
    assert np.all(np.diff(w) >= 0) and np.all(u - w >= -1e-12) and np.all(u - w < jitter * 0.1)
    phase = np.mod(w, 1.0)
    active = ~(((phase > 0.1) & (phase < 0.3)) | ((phase > 0.6) & (phase < 0.7)))
    step = np.diff(w)[active[1:] & active[:-1]]
    assert np.allclose(step, u[1] - u[0])  # strokes, pulses, clicks: as fast as before
    inner = (w > 2.0) & (w < 58.0)  # away from the clip's edges, where a delay is cut off
    hist, _ = np.histogram(phase[inner], bins=50, range=(0.0, 1.0))
    regular, _ = np.histogram(np.mod(u[(u > 2.0) & (u < 58.0)], 1.0), bins=50, range=(0.0, 1.0))
    assert np.max(np.abs(hist / regular - 1.0)) < 0.06, hist / regular  # as long in every state
    starts = u[1:][(np.floor(w[1:] - 0.3) > np.floor(w[:-1] - 0.3))]  # when each stroke after rest 1 starts
    late = np.mod(starts - 0.3, 1.0)
    assert late.min() >= 0.0 and late.max() < jitter * 0.1 and late.std() > 0.02  # late, each by its own delay


# ----------------------------------------------------------------------------- (a) and (b): the measured sets
@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Iterator[dict[str, dict]]:
    """Per type: decoded waves of each ID's training clips, test normals, test anomalies and their normal twins.

    The tests that use it run on one torch thread: the transforms are tiny, and on a shared, busy CPU OpenMP's
    spin-waiting makes two threads some 50 times slower (as ``seeded_one_thread`` in conftest.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _decoded_clips(tmp_path_factory.mktemp("temporal"))
    finally:
        torch.set_num_threads(threads)


def _decoded_clips(root) -> dict[str, dict]:
    """Write the set under ``root``, each anomaly's twin beside it (``twin_id_XX_NNNNNNNN.wav``), and decode it."""
    S.generate(root, S.MACHINE_TYPES, S.DEFAULT_IDS, N_TRAIN, N_TEST, N_TEST, SECONDS, SEED, SNR,
               anomalies="temporal")
    out: dict[str, dict] = {}
    for mt in S.MACHINE_TYPES:
        for mid in S.DEFAULT_IDS:
            for i in range(N_TEST):  # the anomalies' twins, written as wav files like every clip
                x = S.synth_clip(mt, mid, S.clip_seed(SEED, mt, mid, "test", "anomaly", i), seconds=SECONDS,
                                 snr_db=SNR)
                sf.write(root / mt / "test" / S.clip_name("twin", mid, i), x, S.SAMPLE_RATE, subtype="PCM_16")
        read = lambda split, label, mid, n: [decode(root / mt / split / S.clip_name(label, mid, i), CFG)
                                             for i in range(n)]
        out[mt] = {mid: {"train": read("train", "normal", mid, N_TRAIN), "normal": read("test", "normal", mid, N_TEST),
                         "anomaly": read("test", "anomaly", mid, N_TEST), "twin": read("test", "twin", mid, N_TEST)}
                   for mid in S.DEFAULT_IDS}
    return out


def stats(waves: list[np.ndarray]) -> np.ndarray:
    """(n, 256): each clip's per-band log-mel mean and standard deviation over time, as stats-knn has them."""
    return np.concatenate([LogMelStats()(torch.from_numpy(log_mel(x, CFG))[None]).numpy() for x in waves])


def rhythm(x: np.ndarray, band_hz: float) -> float:
    """How well the energy envelope above ``band_hz`` repeats: the highest normalised autocorrelation of its log
    (8 ms blocks) at a lag of 0.25-2.5 s (at most half the clip); about 1 for a machine that keeps time."""
    if band_hz > 0:
        spec = np.fft.rfft(x.astype(np.float64))
        x = np.fft.irfft(spec * (np.fft.rfftfreq(x.size, 1.0 / S.SAMPLE_RATE) > band_hz), x.size)
    block = 128
    e = np.log(np.mean(x[: x.size // block * block].reshape(-1, block) ** 2, axis=1) + 1e-12)
    e -= e.mean()
    per_s = S.SAMPLE_RATE / block
    return max(float(e[:-lag] @ e[lag:] / np.sqrt((e[:-lag] @ e[:-lag]) * (e[lag:] @ e[lag:])))
               for lag in range(int(0.25 * per_s), min(int(2.5 * per_s), e.size // 2)))


def phase_lock(x: np.ndarray, peaks: int = 8) -> float:
    """How far the strongest spectral peaks' phases stray from lockstep: the median, over pairs of the ``peaks``
    strongest peak bins (47 Hz - 4.7 kHz), of the residual (rad) of fitting one's unwrapped phase by the other's,
    time and a constant. Harmonics of one rotating part satisfy phase_j = (k_j / k_i) phase_i + c exactly: only
    noise remains.

    Each bin's phase is unwrapped with the phase vocoder's rule: at hop N/2 a tone in bin b advances by pi * b,
    plus a deviation within (-pi, pi] for a tone within a bin of the centre.
    """
    X = complex_stft(x, RAW).astype(np.complex128)  # (513, frames)
    mag = np.abs(X).mean(axis=1)
    bins = [b for b in range(3, 300) if mag[b] > mag[b - 1] and mag[b] >= mag[b + 1]]
    bins = sorted(bins, key=lambda b: -mag[b])[:peaks]
    phases = []
    for b in bins:
        dev = np.angle(X[b, 1:] * np.conj(X[b, :-1]) * np.exp(-1j * np.pi * b))
        phases.append(np.cumsum(np.pi * b + dev))  # (frames - 1,) unwrapped
    t = np.arange(phases[0].size, dtype=np.float64)
    residuals = []
    for i, phase_i in enumerate(phases):
        A = np.stack([phase_i, t, np.ones_like(t)], axis=1)
        for phase_j in phases[i + 1:]:
            coef, *_ = np.linalg.lstsq(A, phase_j, rcond=None)
            residuals.append(float(np.std(phase_j - A @ coef)))
    return float(np.median(residuals))


def anomaly_score(mt: str, x: np.ndarray) -> float:
    """The oracle's score, higher = more anomalous: phase (fan) or timing (the others)."""
    return phase_lock(x) if mt == "fan" else -rhythm(x, RHYTHM_BAND_HZ[mt])


@pytest.mark.parametrize("mt", S.MACHINE_TYPES)
def test_log_mel_statistics_cannot_see_the_anomalies(clips, mt):
    sets = clips[mt]
    feats = {mid: {part: stats(waves) for part, waves in parts.items()} for mid, parts in sets.items()}
    knn = IDScorers("knn", k=1).fit({mid: f["train"] for mid, f in feats.items()})
    y = [0] * N_TEST + [1] * N_TEST
    aucs = {part: np.mean([auc(y, knn.score(mid, np.concatenate([f["normal"], f[part]]))) for mid, f in feats.items()])
            for part in ("anomaly", "twin")}
    assert abs(aucs["anomaly"] - 0.5) <= 0.2, aucs  # stats-knn at chance ...
    # ... and no further from it than with the normal twins in the anomalies' place: what is left of 0.5 comes
    # from the few clips drawn, not from the faults
    assert abs(aucs["anomaly"] - aucs["twin"]) <= 0.1, aucs
    cos = lambda a, b: 1.0 - np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    for mid, f in feats.items():
        normal = np.concatenate([f["train"], f["normal"]])
        between = np.median([cos(a, b) for i, a in enumerate(normal) for b in normal[i + 1:]])
        twins = cos(f["anomaly"], f["twin"])  # an anomaly and its normal twin: the same clip but for the fault
        assert np.median(twins) < 0.3 * between and twins.max() < 0.6 * between, (mid, twins, between)


@pytest.mark.parametrize("mt", S.MACHINE_TYPES)
def test_a_timing_or_phase_oracle_finds_the_anomalies(clips, mt):
    scores = {mid: {part: np.array([anomaly_score(mt, x) for x in parts[part]])
                    for part in ("normal", "anomaly", "twin")} for mid, parts in clips[mt].items()}
    y = [0] * N_TEST + [1] * N_TEST
    aucs = {mid: auc(y, np.concatenate([s["normal"], s["anomaly"]])) for mid, s in scores.items()}
    assert min(aucs.values()) >= 0.8 and np.mean(list(aucs.values())) >= 0.9, aucs
    # the twins are normal clips: the oracle sees no more in them than in the other normals
    for mid, s in scores.items():
        normal, anomalous, twin = (s[part].mean() for part in ("normal", "anomaly", "twin"))
        assert abs(twin - normal) < 0.5 * abs(anomalous - normal), (mid, normal, anomalous, twin)


# ----------------------------------------------------------------------------- (c) determinism, layouts, command
def digests(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.wav"))}


def test_temporal_set_is_deterministic_and_leaves_the_normal_clips_alone(tmp_path):
    kw = dict(machine_types=S.MACHINE_TYPES, ids=["02"], n_train=1, n_test_normal=1, n_test_anomaly=2, seconds=0.5,
              snr_db=SNR)
    for name, seed, anomalies in (("a", 4, "temporal"), ("b", 4, "temporal"), ("c", 5, "temporal"),
                                  ("d", 4, "default")):
        S.generate(tmp_path / name, seed=seed, anomalies=anomalies, **kw)
    a, b, c, d = (digests(tmp_path / n) for n in "abcd")
    assert a == b and len(a) == 4 * 4
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    assert {k: v for k, v in a.items() if "normal" in k} == {k: v for k, v in d.items() if "normal" in k}
    assert all(a[k] != d[k] for k in a if "anomaly" in k)
    # a clip's seed does not depend on how many clips are asked for
    S.generate(tmp_path / "e", seed=4, anomalies="temporal", **{**kw, "n_test_anomaly": 1})
    e = digests(tmp_path / "e")
    assert e == {k: v for k, v in a.items() if not k.endswith("anomaly_id_02_00000001.wav")}
    # each file holds the temporal kind of its index
    x, _ = sf.read(tmp_path / "a" / "slider" / "test" / "anomaly_id_02_00000001.wav", dtype="float32")
    ref = S.synth_clip("slider", "02", S.clip_seed(4, "slider", "02", "test", "anomaly", 1), seconds=0.5,
                       snr_db=SNR, anomaly=S.anomaly_kind("slider", 1, "temporal"))
    assert np.max(np.abs(x - ref)) <= 1.0 / 32768 + 1e-7


def test_temporal_set_in_the_section_layouts(tmp_path):
    S.generate(tmp_path, ["pump", "valve"], n_train=1, n_test_normal=1, n_test_anomaly=1, seconds=0.5, seed=2,
               snr_db=SNR, layout="dcase2022", n_target_train=1, anomalies="temporal")
    for mt in ("pump", "valve"):
        x, _ = sf.read(tmp_path / mt / "test" / "section_00_target_test_anomaly_0000_vel_125.wav", dtype="float32")
        ref = S.synth_clip(mt, "00", S.clip_seed(2, mt, "00", "test", "anomaly", 0, "target"), seconds=0.5,
                           snr_db=SNR - S.TARGET_SNR_DROP_DB * S.DEFAULT_DOMAIN_SHIFT, speed=1.25,
                           anomaly=S.TEMPORAL_KINDS[mt][0])
        assert np.max(np.abs(x - ref)) <= 1.0 / 32768 + 1e-7


def test_cli_preset_temporal(tmp_path, capsys):
    assert S.TEMPORAL_SET["n_train"] >= 100 and S.TEMPORAL_SET["anomalies"] == "temporal"
    base = ["--machine-types", "valve", "--ids", "04", "--seconds", "0.05", "--workers", "1"]
    assert command.main(["--out", str(tmp_path / "a"), "--preset", "temporal", *base]) == 0
    out = capsys.readouterr().out
    n = S.TEMPORAL_SET
    assert f"({n['n_train']} train + {n['n_test_normal']} normal + {n['n_test_anomaly']} anomaly test)" in out
    assert f"SNR {n['snr_db']:g} dB" in out and "temporal anomalies" in out
    assert len(list((tmp_path / "a" / "valve" / "train").iterdir())) == n["n_train"]
    # explicit options override the preset, whatever their order
    assert command.main(["--out", str(tmp_path / "b"), "--train", "2", "--test-anomaly", "1", "--snr", "0",
                         "--preset", "temporal", *base]) == 0
    out = capsys.readouterr().out
    assert f"(2 train + {n['n_test_normal']} normal + 1 anomaly test)" in out and "SNR 0 dB" in out
    assert "temporal anomalies" in out
    x, _ = sf.read(tmp_path / "b" / "valve" / "test" / "anomaly_id_04_00000000.wav", dtype="float32")
    ref = S.synth_clip("valve", "04", S.clip_seed(0, "valve", "04", "test", "anomaly", 0), seconds=0.05, snr_db=0.0,
                       anomaly="actuation_jitter")
    assert np.max(np.abs(x - ref)) <= 1.0 / 32768 + 1e-7
