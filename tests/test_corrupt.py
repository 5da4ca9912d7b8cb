import numpy as np
import pytest
from scipy import signal, stats

from mimimi.data.corrupt import KINDS, CorruptionError, corrupt, corruption_params, proxy_outliers

SR = 16000
SEEDS = range(5)


def noise(n=SR, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(n).astype(dtype)


def machine_like(n=SR, seed=0):
    """Harmonics of 97 Hz with a falling profile over low-passed noise: a structured spectrum."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * 97 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 41))
    x = x + 0.3 * signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    return x.astype(np.float32)


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def power(x):
    return np.abs(np.fft.rfft(x.astype(np.float64))) ** 2


FREQS = np.fft.rfftfreq(SR, 1 / SR)  # 1 Hz bins for 1 s clips


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_and_seed_dependent(kind):
    x = machine_like()
    a = corrupt(x, kind, seed=3)
    assert np.array_equal(a, corrupt(x.copy(), kind, seed=3))
    assert not np.array_equal(a, corrupt(x, kind, seed=4))
    assert not np.array_equal(a, x)


def test_kinds_differ_and_proxy_outliers_match_corrupt():
    x = machine_like()
    out = proxy_outliers(x, seed=5, severity=0.7)
    assert tuple(out) == KINDS
    for kind, y in out.items():
        assert np.array_equal(y, corrupt(x, kind, seed=5, severity=0.7))
    values = list(out.values())
    assert all(not np.array_equal(values[i], values[j]) for i in range(4) for j in range(i + 1, 4))
    assert list(proxy_outliers(x, seed=5, kinds=("tilt", "tone"))) == ["tilt", "tone"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n, dtype", [(SR, np.float32), (12345, np.float64), (101, np.float32)])
def test_length_dtype_rms_preserved_and_input_untouched(kind, n, dtype):
    x = (0.05 * machine_like(n)).astype(dtype)
    before = x.copy()
    for severity in (0.1, 1.0):
        y = corrupt(x, kind, seed=1, severity=severity)
        assert y.shape == x.shape and y.dtype == np.float32
        assert np.all(np.isfinite(y))
        assert rms(y) == pytest.approx(rms(x), rel=1e-3)
    assert np.array_equal(x, before)


@pytest.mark.parametrize("kind", KINDS)
def test_silent_clip_stays_silent(kind):
    y = corrupt(np.zeros(1000, np.float32), kind, seed=0)
    assert y.dtype == np.float32 and not np.any(y)


@pytest.mark.parametrize("seed", SEEDS)
def test_tone_adds_a_peak_where_white_noise_has_none(seed):
    x = noise(seed=seed)
    p = corruption_params("tone", seed=seed, severity=1.0)
    assert 1 <= len(p["freqs_hz"]) <= 3 and all(100 <= f <= 0.45 * SR for f in p["freqs_hz"])
    y = corrupt(x, "tone", seed=seed, severity=1.0)
    px, py = power(x), power(y)
    px, py = px / px.sum(), py / py.sum()
    k = int(np.argmax(p["weights"]))
    f0 = p["freqs_hz"][k]
    band = np.abs(FREQS - f0) <= f0 * p["wobble_depth"][k] + 3  # the wobble's reach, plus leakage
    assert py[band].sum() > 5 * px[band].sum()
    # the strongest smoothed bin of the output is one of the tones; the input has no such peak
    smooth = np.ones(9) / 9
    sx, sy = np.convolve(px, smooth, "same"), np.convolve(py, smooth, "same")
    peak = FREQS[np.argmax(sy)]
    assert min(abs(peak - f) for f in p["freqs_hz"]) < 0.003 * peak + 5
    assert sy.max() > 10 * np.median(sy) and sx.max() < 4 * np.median(sx)


@pytest.mark.parametrize("seed", SEEDS)
def test_impulses_make_stationary_noise_impulsive(seed):
    x = noise(seed=seed)
    y = corrupt(x, "impulses", seed=seed, severity=1.0)
    p = corruption_params("impulses", seed=seed, severity=1.0)
    assert 2 <= p["rate_hz"] <= 20
    assert stats.kurtosis(y) > stats.kurtosis(x) + 0.2  # excess kurtosis: 0 for Gaussian noise
    crest = lambda v: np.abs(v).max() / rms(v)
    assert crest(y) > 1.2 * crest(x)


@pytest.mark.parametrize("seed", SEEDS)
def test_tilt_is_a_power_law_in_the_direction_of_its_slope(seed):
    x = noise(seed=seed)
    y = corrupt(x, "tilt", seed=seed, severity=1.0)
    slope = corruption_params("tilt", seed=seed, severity=1.0)["slope_db_per_octave"]
    assert 0.5 <= abs(slope) <= 2.0
    hi_lo = lambda v: power(v)[FREQS > 4000].sum() / power(v)[(FREQS > 100) & (FREQS < 1000)].sum()
    change_db = 10 * np.log10(hi_lo(y) / hi_lo(x))
    assert np.sign(change_db) == np.sign(slope) and abs(change_db) > 2 * abs(slope)
    # oracle: the gain |Y| / |X| is a straight line of the given slope in dB over octaves
    use = FREQS >= 100
    gain_db = 10 * np.log10(power(y)[use] / power(x)[use])
    fitted = np.polyfit(np.log2(FREQS[use]), gain_db, 1)[0]
    assert fitted == pytest.approx(slope, abs=0.02)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("severity", [0.3, 1.0])
def test_stretch_moves_a_pure_tone_by_its_factor(seed, severity):
    x = np.sin(2 * np.pi * 1000 * np.arange(SR) / SR).astype(np.float32)
    factor = corruption_params("stretch", seed=seed, severity=severity)["factor"]
    assert 0.01 * severity <= abs(factor - 1) <= 0.05 * severity + 1e-12
    y = corrupt(x, "stretch", seed=seed, severity=severity)
    spec = np.abs(np.fft.rfft(y.astype(np.float64) * np.hanning(SR), n=8 * SR))  # 0.125 Hz bins
    measured = np.fft.rfftfreq(8 * SR, 1 / SR)[np.argmax(spec)]
    assert measured == pytest.approx(1000 * factor, rel=0.005)
    assert abs(measured - 1000) > 0.005 * severity * 1000  # it did move (at least 1 % x severity)


def log_psd_change(x, y):
    _, px = signal.welch(x.astype(np.float64), SR, nperseg=512)
    _, py = signal.welch(y.astype(np.float64), SR, nperseg=512)
    return float(np.mean(np.abs(10 * np.log10(py / px))))


@pytest.mark.parametrize("kind", KINDS)
def test_larger_severity_changes_the_spectrum_more(kind):
    for seed in range(3):
        x = machine_like(seed=seed)
        changes = [log_psd_change(x, corrupt(x, kind, seed=seed, severity=s)) for s in (0.1, 0.4, 1.0)]
        assert changes[0] < changes[1] < changes[2], (seed, changes)


def test_errors():
    x = noise(1000)
    with pytest.raises(CorruptionError, match=r"unknown kind 'hum'; kinds are tone, impulses, tilt, stretch"):
        corrupt(x, "hum", seed=0)
    with pytest.raises(CorruptionError, match=r"unknown kind 'hum'"):
        proxy_outliers(x, seed=0, kinds=("tone", "hum"))
    with pytest.raises(CorruptionError, match=r"kinds must be a sequence"):
        proxy_outliers(x, seed=0, kinds="tone")
    for bad in (0, 0.0, -0.2, 1.01, float("nan"), "0.5"):
        with pytest.raises(CorruptionError, match=r"severity must be in \(0, 1\]"):
            corrupt(x, "tone", seed=0, severity=bad)
    with pytest.raises(CorruptionError, match=r"severity must be in \(0, 1\]"):
        proxy_outliers(x, seed=0, severity=2)
    with pytest.raises(CorruptionError, match=r"must be 1-D \(n,\) mono, got shape \(2, 500\)"):
        corrupt(x.reshape(2, 500), "tilt", seed=0)
    with pytest.raises(CorruptionError, match=r"float array, got dtype int16"):
        corrupt(np.zeros(100, np.int16), "tilt", seed=0)
    with pytest.raises(CorruptionError, match=r"wave is empty"):
        corrupt(np.zeros(0, np.float32), "tilt", seed=0)
    with pytest.raises(CorruptionError, match=r"NaN or infinite"):
        corrupt(np.array([0.0, np.inf]), "tilt", seed=0)
    with pytest.raises(CorruptionError, match=r"seed must be a non-negative integer"):
        corrupt(x, "tilt", seed=-1)
    with pytest.raises(CorruptionError, match=r"sample_rate must be an integer >= 1000"):
        corrupt(x, "tone", seed=0, sample_rate=100)
    assert issubclass(CorruptionError, ValueError)
