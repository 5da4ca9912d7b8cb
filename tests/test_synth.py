"""The synthetic MIMII-like generator: layout, CLI, determinism, ID signatures, anomalies, SNR."""
from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mimimi import synth as command
from mimimi.data import synth as S

REPO = Path(__file__).resolve().parents[1]


def avg_spectrum(x: np.ndarray) -> np.ndarray:
    """Mean |STFT| over frames (n_fft 1024, hop 512, Hann), scaled to unit L2 norm: loudness removed."""
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), 1024)[::512] * np.hanning(1024)
    m = np.abs(np.fft.rfft(frames, axis=1)).mean(0)
    return m / np.linalg.norm(m)


def spec_dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(avg_spectrum(a) - avg_spectrum(b)))


def clip(mt, mid, split="train", label="normal", i=0, seconds=2.0, **kw):
    return S.synth_clip(mt, mid, S.clip_seed(0, mt, mid, split, label, i), seconds=seconds, **kw)


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.wav"))}


# ----------------------------------------------------------------------------- layout, CLI
def test_layout_counts_and_format(tmp_path, capsys):
    rc = command.main(["--out", str(tmp_path), "--machine-types", "fan", "--seconds", "2", "--train", "8",
                       "--test-normal", "4", "--test-anomaly", "4", "--workers", "1"])
    assert rc == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "wrote 64 synthetic clips" in out
    expected = {f"fan/train/normal_id_{m}_{i:08d}.wav" for m in S.DEFAULT_IDS for i in range(8)}
    expected |= {f"fan/test/{lab}_id_{m}_{i:08d}.wav" for m in S.DEFAULT_IDS for lab in ("normal", "anomaly")
                 for i in range(4)}
    found = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert found == expected
    for rel in expected:
        info = sf.info(tmp_path / rel)
        assert (info.samplerate, info.channels, info.subtype, info.format, info.frames) == \
            (16000, 1, "PCM_16", "WAV", 32000), rel


def test_generate_returns_paths_and_indexes(tmp_path):
    paths = S.generate(tmp_path, machine_types=["valve", "pump"], ids=["01", "03"], n_train=2, n_test_normal=1,
                       n_test_anomaly=3, seconds=0.5)
    assert len(paths) == 2 * 2 * (2 + 1 + 3) and all(p.is_file() for p in paths)
    assert tmp_path / "pump" / "test" / "anomaly_id_03_00000002.wav" in paths
    from mimimi.data.index import index_dataset  # the project's own reader agrees with the layout
    idx = index_dataset(tmp_path)
    assert not idx.unmatched and len(idx.clips) == len(paths)
    assert sorted(idx.clips.machine_id.unique()) == ["01", "03"]


def test_module_cli_via_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mimimi.synth", "--out", str(tmp_path), "--machine-types", "slider",
                        "--ids", "02", "--train", "2", "--test-normal", "1", "--test-anomaly", "1",
                        "--seconds", "0.5", "--workers", "1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and "wrote 4 synthetic clips" in r.stdout
    assert sorted(p.name for p in tmp_path.rglob("*.wav")) == [
        "anomaly_id_02_00000000.wav", "normal_id_02_00000000.wav", "normal_id_02_00000000.wav",
        "normal_id_02_00000001.wav"]
    bad = subprocess.run([sys.executable, "-m", "mimimi.synth", "--out", str(tmp_path), "--machine-types", "toaster"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "toaster" in bad.stderr


@pytest.mark.parametrize("args", [
    ["--machine-types", "fan,toaster"], ["--machine-types", ""], ["--ids", "0"], ["--ids", "00,2a"],
    ["--ids", "000"], ["--train", "0"], ["--test-normal", "-1"], ["--test-anomaly", "1.5"], ["--seconds", "0"],
    ["--seconds", "-2"], ["--seconds", "nan"], ["--seed", "-1"], ["--snr", "nan"], ["--snr", "-inf"],
    ["--snr", "loud"], ["--workers", "0"],
])
def test_bad_arguments_exit_nonzero(tmp_path, args, capsys):
    ok = ["--out", str(tmp_path), "--machine-types", "fan", "--ids", "00", "--train", "1", "--test-normal", "1",
          "--test-anomaly", "1", "--seconds", "0.1", "--workers", "1"]
    assert command.main(ok) == 0  # the base command line is fine ...
    capsys.readouterr()
    for f in tmp_path.rglob("*.wav"):
        f.unlink()
    with pytest.raises(SystemExit) as e:
        command.main(ok + args)  # ... and the bad value (the later option wins) makes it fail
    assert e.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "error" in err and args[0] in err
    assert not list(tmp_path.rglob("*.wav"))


def test_missing_out_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as e:
        command.main(["--seconds", "1"])
    assert e.value.code not in (0, None) and "--out" in capsys.readouterr().err


def test_unwritable_out_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    rc = command.main(["--out", str(blocker), "--machine-types", "fan", "--ids", "00", "--train", "1",
                       "--test-normal", "1", "--test-anomaly", "1", "--seconds", "0.1", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error:") and err.count("\n") == 1


def test_api_rejects_bad_arguments(tmp_path):
    for kw in ({"machine_types": ["fan", "lathe"]}, {"ids": ["6"]}, {"n_train": 0}, {"seconds": 0.0},
               {"seed": -3}, {"snr_db": float("nan")}, {"workers": 0}):
        with pytest.raises(ValueError):
            S.generate(tmp_path, **{"n_train": 1, "n_test_normal": 1, "n_test_anomaly": 1, "seconds": 0.1, **kw})
    with pytest.raises(ValueError, match="anomaly"):
        S.synth_clip("fan", "00", 0, seconds=0.1, anomaly="leak")  # a pump anomaly
    assert not list(tmp_path.rglob("*.wav"))


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    args = ["--machine-types", "fan,valve", "--ids", "00,04", "--train", "2", "--test-normal", "1",
            "--test-anomaly", "3", "--seconds", "1", "--workers", "1"]
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert command.main(["--out", str(tmp_path / name), "--seed", seed] + args) == 0
    a, b, c = (digests(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 2 * 2 * 6
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_clip_seeds_are_independent_of_counts_and_workers(tmp_path):
    small = S.generate(tmp_path / "small", ["pump"], ["02"], n_train=2, n_test_normal=1, n_test_anomaly=1, seconds=0.5)
    big = S.generate(tmp_path / "big", ["pump"], ["00", "02"], n_train=3, n_test_normal=2, n_test_anomaly=2,
                     seconds=0.5, workers=2)
    ds, db = digests(tmp_path / "small"), digests(tmp_path / "big")
    assert len(small) == 4 and len(big) == 14
    assert all(ds[k] == db[k] for k in ds)  # fewer clips, one ID fewer, one process: same files
    assert db["pump/train/normal_id_02_00000000.wav"] != db["pump/train/normal_id_00_00000000.wav"]


def test_file_holds_synth_clip(tmp_path):
    S.generate(tmp_path, ["slider"], ["06"], n_train=1, n_test_normal=1, n_test_anomaly=2, seconds=0.5, seed=3,
               snr_db=-3.0)
    x, sr = sf.read(tmp_path / "slider" / "test" / "anomaly_id_06_00000001.wav", dtype="float32")
    ref = S.synth_clip("slider", "06", S.clip_seed(3, "slider", "06", "test", "anomaly", 1), seconds=0.5,
                       snr_db=-3.0, anomaly=S.anomaly_kind("slider", 1))
    assert sr == 16000 and np.max(np.abs(x - ref)) <= 1.0 / 32768 + 1e-7


# ----------------------------------------------------------------------------- the clips themselves
@pytest.mark.parametrize("mt", S.MACHINE_TYPES)
def test_clip_basic_properties(mt):
    for mid in S.DEFAULT_IDS:
        x = clip(mt, mid, seconds=1.5)
        assert x.dtype == np.float32 and x.shape == (24000,) and np.isfinite(x).all()
        assert np.max(np.abs(x)) <= S.PEAK_LIMIT
        rms_db = 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        assert abs(rms_db - S.RMS_DBFS) <= S.RMS_JITTER_DB + 0.01
    assert clip(mt, "00", seconds=1 / 16000).shape == (1,)  # degenerate lengths still work
    assert clip(mt, "00", seconds=0.01, anomaly=S.ANOMALY_KINDS[mt][-1]).shape == (160,)


@pytest.mark.parametrize("mt", S.MACHINE_TYPES)
def test_ids_differ_by_spectrum_not_by_loudness(mt):
    n_fit, n_eval = 5, 4
    fit = {m: [clip(mt, m, "train", "normal", i) for i in range(n_fit)] for m in S.DEFAULT_IDS}
    ev = {m: [clip(mt, m, "test", "normal", i) for i in range(n_eval)] for m in S.DEFAULT_IDS}
    rms = {m: [20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))) for x in fit[m] + ev[m]] for m in fit}

    # loudness: every pair of IDs' RMS ranges overlap, and nearest-mean-RMS guessing is near chance
    for a in rms:
        for b in rms:
            assert min(rms[a]) < max(rms[b]), (a, b)
    mean_rms = {m: np.mean(rms[m][:n_fit]) for m in fit}
    hits = [min(mean_rms, key=lambda k: abs(mean_rms[k] - r)) == m for m in ev for r in rms[m][n_fit:]]
    assert np.mean(hits) <= 0.5

    # spectrum: IDs are further apart than clips of one ID, and nearest-centroid spectra find the ID
    spec = {m: [avg_spectrum(x) for x in fit[m]] for m in fit}
    within = [np.linalg.norm(a - b) for m in spec for i, a in enumerate(spec[m]) for b in spec[m][i + 1:]]
    between = [np.linalg.norm(a - b) for m1 in spec for m2 in spec if m1 < m2 for a in spec[m1] for b in spec[m2]]
    assert np.mean(between) > 1.8 * np.mean(within)
    centroid = {m: np.mean(spec[m], axis=0) for m in spec}
    hits = [min(centroid, key=lambda k: np.linalg.norm(centroid[k] - avg_spectrum(x))) == m
            for m in ev for x in ev[m]]
    assert np.mean(hits) >= 0.9


def test_signature_depends_on_type_and_id_only():
    a = S.synth_clip("fan", "04", 11, seconds=1.0, snr_db=math.inf)
    b = S.synth_clip("fan", "04", 12, seconds=1.0, snr_db=math.inf)
    c = S.synth_clip("fan", "06", 11, seconds=1.0, snr_db=math.inf)
    assert not np.array_equal(a, b)  # another clip of the same fan ...
    assert spec_dist(a, b) < 0.5 * spec_dist(a, c)  # ... sounds far more alike than another fan


def test_anomaly_kinds_table():
    for mt in S.MACHINE_TYPES:
        kinds = S.ANOMALY_KINDS[mt]
        assert len(kinds) >= 3 and len(set(kinds)) == len(kinds)
        assert {S.anomaly_kind(mt, i) for i in range(len(kinds))} == set(kinds)  # the first few cover all
        assert S.anomaly_kind(mt, 7) == S.anomaly_kind(mt, 7 + len(kinds))
        assert any(k in S.PHASE_TIMING_KINDS for k in kinds)
    assert S.PHASE_TIMING_KINDS <= {k for ks in S.ANOMALY_KINDS.values() for k in ks}
    with pytest.raises(ValueError):
        S.anomaly_kind("drill", 0)


@pytest.mark.parametrize("mt", S.MACHINE_TYPES)
def test_every_anomaly_changes_the_clip(mt):
    for mid in ("00", "06"):
        sd = S.clip_seed(0, mt, mid, "test", "anomaly", 0)
        normal = S.synth_clip(mt, mid, sd, seconds=2.0, snr_db=math.inf)
        assert np.array_equal(normal, S.synth_clip(mt, mid, sd, seconds=2.0, snr_db=math.inf))
        for kind in S.ANOMALY_KINDS[mt]:
            x = S.synth_clip(mt, mid, sd, seconds=2.0, snr_db=math.inf, anomaly=kind)
            rel = np.linalg.norm(x - normal) / np.linalg.norm(normal)
            assert rel > 0.05, (mid, kind, rel)


@pytest.mark.parametrize("mt", S.MACHINE_TYPES)
def test_phase_timing_anomalies_keep_the_magnitude_spectrum(mt):
    (kind,) = [k for k in S.ANOMALY_KINDS[mt] if k in S.PHASE_TIMING_KINDS]
    for mid in S.DEFAULT_IDS:
        normals = [clip(mt, mid, "test", "normal", i, snr_db=math.inf) for i in range(4)]
        spread = np.mean([spec_dist(a, b) for i, a in enumerate(normals) for b in normals[i + 1:]])
        d_spec, d_wave = [], []
        for i in range(3):
            sd = S.clip_seed(0, mt, mid, "test", "anomaly", i)
            x0 = S.synth_clip(mt, mid, sd, seconds=2.0, snr_db=math.inf)
            x1 = S.synth_clip(mt, mid, sd, seconds=2.0, snr_db=math.inf, anomaly=kind)
            d_spec.append(spec_dist(x0, x1))
            d_wave.append(np.linalg.norm(x1 - x0) / np.linalg.norm(x0))
        # the average magnitude spectrum moves less than it does between two normal clips of the ID ...
        assert np.mean(d_spec) < spread, (mid, kind, d_spec, spread)
        # ... while the waveform (phase, timing) is substantially different
        assert min(d_wave) > 0.4, (mid, kind, d_wave)
        if kind in ("blade_flutter", "irregular_pulsation"):  # pure phase/timing: spectrum nearly identical
            assert max(d_spec) < 0.06, (mid, kind, d_spec)


def test_magnitude_anomalies_change_the_spectrum():
    # the loud kinds are visible in the average magnitude spectrum, unlike the phase/timing kinds
    for mt, kind in (("fan", "imbalance"), ("pump", "leak"), ("slider", "no_lubrication"),
                     ("valve", "damped_resonance")):
        sd = S.clip_seed(0, mt, "02", "test", "anomaly", 0)
        x0 = S.synth_clip(mt, "02", sd, seconds=2.0, snr_db=math.inf)
        assert spec_dist(x0, S.synth_clip(mt, "02", sd, seconds=2.0, snr_db=math.inf, anomaly=kind)) > 0.08


@pytest.mark.parametrize("mt", ["fan", "valve"])
def test_background_follows_snr(mt):
    sd = S.clip_seed(0, mt, "04", "train", "normal", 1)
    clean = S.synth_clip(mt, "04", sd, seconds=2.0, snr_db=math.inf).astype(np.float64)
    shares = []
    for snr in (12.0, 6.0, 0.0, -6.0):
        x = S.synth_clip(mt, "04", sd, seconds=2.0, snr_db=snr).astype(np.float64)
        corr2 = np.dot(x, clean) ** 2 / (np.dot(x, x) * np.dot(clean, clean))
        shares.append(1.0 - corr2)  # the part of the clip's power the machine does not explain
        assert abs(shares[-1] - 1.0 / (1.0 + 10 ** (snr / 10))) < 0.05, (snr, shares[-1])
    assert np.all(np.diff(shares) > 0)


def test_background_is_the_same_process_for_every_id():
    # the background alone (machine weight -> 0) has the same average spectrum whatever the ID
    bg = {m: np.mean([avg_spectrum(clip("pump", m, "train", "normal", i, snr_db=-60.0)) for i in range(3)], axis=0)
          for m in ("00", "06")}
    assert np.linalg.norm(bg["00"] - bg["06"]) < 0.1


# ----------------------------------------------------------------------------- imbalanced IDs, off-manifold anomalies
def test_off_manifold_kinds_table():
    assert set(S.ANOMALY_SETS) == {"default", "off-manifold", "temporal"}
    assert S.ANOMALY_SETS["off-manifold"] is S.OFF_MANIFOLD_KINDS and S.ANOMALY_SETS["default"] is S.ANOMALY_KINDS
    doc = S.__doc__
    for mt in S.MACHINE_TYPES:
        kinds = S.OFF_MANIFOLD_KINDS[mt]
        assert len(kinds) == 3 and len(set(kinds)) == 3 and not set(kinds) & set(S.ANOMALY_KINDS[mt])
        assert [S.anomaly_kind(mt, i, "off-manifold") for i in range(4)] == [*kinds, kinds[0]]
        for k in kinds:
            assert doc.count(f"``{k}``") == 1, k  # documented once
            x = S.synth_clip(mt, "00", 1, seconds=0.2, anomaly=k)  # implemented
            assert x.shape == (3200,) and np.isfinite(x).all()
    with pytest.raises(ValueError, match="anomaly set"):
        S.anomaly_kind("fan", 0, "weird")
    with pytest.raises(ValueError, match="anomaly"):
        S.synth_clip("fan", "00", 0, seconds=0.1, anomaly="belt_squeal")  # a slider kind


@pytest.mark.parametrize("mt", S.MACHINE_TYPES)
def test_every_off_manifold_kind_changes_the_clip(mt):
    sd = S.clip_seed(0, mt, "02", "test", "anomaly", 0)
    normal = S.synth_clip(mt, "02", sd, seconds=2.0, snr_db=math.inf)
    for kind in S.OFF_MANIFOLD_KINDS[mt]:
        x = S.synth_clip(mt, "02", sd, seconds=2.0, snr_db=math.inf, anomaly=kind)
        assert spec_dist(x, normal) > 0.05, kind


def test_train_counts_are_honoured(tmp_path):
    paths = S.generate(tmp_path, ["pump"], ["00", "02", "04"], n_train=2, n_test_normal=1, n_test_anomaly=2,
                       seconds=0.2, train_counts={"00": 5, "04": 1}, anomalies="off-manifold")
    train = [p.name for p in (tmp_path / "pump" / "train").iterdir()]
    assert {m: sum(f"_id_{m}_" in n for n in train) for m in ("00", "02", "04")} == {"00": 5, "02": 2, "04": 1}
    assert len(paths) == 8 + 3 * 3 and len(list((tmp_path / "pump" / "test").iterdir())) == 9
    x, _ = sf.read(tmp_path / "pump" / "test" / "anomaly_id_04_00000001.wav", dtype="float32")
    ref = S.synth_clip("pump", "04", S.clip_seed(0, "pump", "04", "test", "anomaly", 1), seconds=0.2,
                       anomaly=S.OFF_MANIFOLD_KINDS["pump"][1])
    assert np.max(np.abs(x - ref)) <= 1.0 / 32768 + 1e-7  # the file holds the off-manifold kind of its index


@pytest.mark.parametrize("kw, match", [
    ({"train_counts": {"08": 3}}, "not one of the ids"), ({"train_counts": {"00": 0}}, "positive"),
    ({"train_counts": {"00": 2.5}}, "positive"), ({"train_counts": {"00": -1}}, "positive"),
    ({"anomalies": "loud"}, "anomaly set"),
])
def test_generate_rejects_bad_counts_and_sets(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        S.generate(tmp_path, ["fan"], ["00", "02"], n_train=1, n_test_normal=1, n_test_anomaly=1, seconds=0.1, **kw)
    assert not list(tmp_path.rglob("*.wav"))


def train_counts_of(root: Path, mt: str) -> dict[str, int]:
    names = [p.name for p in (root / mt / "train").iterdir()]
    return {m: c for m in sorted({n.split("_")[2] for n in names}) if (c := sum(f"_id_{m}_" in n for n in names))}


def test_cli_train_counts_anomalies_and_preset(tmp_path, capsys):
    base = ["--machine-types", "valve", "--seconds", "0.1", "--workers", "1", "--test-normal", "1", "--test-anomaly", "2"]
    assert command.main(["--out", str(tmp_path / "a"), *base, "--ids", "00,02,04", "--train", "2",
                         "--train-counts", "00=4, 04=1", "--anomalies", "off-manifold"]) == 0
    out = capsys.readouterr().out
    assert "00=4,02=2,04=1 train" in out and "off-manifold anomalies" in out
    assert train_counts_of(tmp_path / "a", "valve") == {"00": 4, "02": 2, "04": 1}
    x, _ = sf.read(tmp_path / "a" / "valve" / "test" / "anomaly_id_02_00000001.wav", dtype="float32")
    ref = S.synth_clip("valve", "02", S.clip_seed(0, "valve", "02", "test", "anomaly", 1), seconds=0.1,
                       snr_db=6.0, anomaly="chatter")
    assert np.max(np.abs(x - ref)) <= 1.0 / 32768 + 1e-7

    # the preset sets counts, SNR and anomalies; explicit options override it, whatever their order
    assert command.main(["--out", str(tmp_path / "b"), *base, "--preset", "fails-like-real"]) == 0
    out = capsys.readouterr().out
    assert train_counts_of(tmp_path / "b", "valve") == S.FAILS_LIKE_REAL["train_counts"]
    assert f"SNR {S.FAILS_LIKE_REAL['snr_db']:g} dB" in out and "off-manifold anomalies" in out and "0.1 s" in out
    assert command.main(["--out", str(tmp_path / "c"), "--snr", "9", "--train-counts", "02=2", "--anomalies",
                         "default", "--ids", "00,02", "--preset", "fails-like-real", *base]) == 0
    out = capsys.readouterr().out
    assert train_counts_of(tmp_path / "c", "valve") == {"00": 40, "02": 2}  # 00: --train (40), as --train-counts won
    assert "SNR 9 dB" in out and "anomalies" not in out.split("SNR")[1]


@pytest.mark.parametrize("args", [["--train-counts", "00=0"], ["--train-counts", "00"], ["--train-counts", "0=3"],
                                  ["--train-counts", "00=1,00=2"], ["--train-counts", "02=x"],
                                  ["--train-counts", "08=2"], ["--anomalies", "loud"], ["--preset", "nope"]])
def test_cli_rejects_bad_counts_sets_and_presets(tmp_path, args, capsys):
    with pytest.raises(SystemExit) as e:
        command.main(["--out", str(tmp_path), "--machine-types", "fan", "--ids", "00,02", "--seconds", "0.1",
                      "--workers", "1", *args])
    assert e.value.code not in (0, None) and args[0] in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.wav"))


def test_off_manifold_set_is_deterministic(tmp_path):
    kw = dict(machine_types=["fan", "slider"], ids=["00", "06"], n_train=1, n_test_normal=1, n_test_anomaly=3,
              seconds=0.3, snr_db=0.0, train_counts={"00": 2}, anomalies="off-manifold")
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        S.generate(tmp_path / name, seed=seed, **kw)
    a, b, c = (digests(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 2 * (3 + 2 + 6)
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    # the normal clips do not depend on the anomaly set
    S.generate(tmp_path / "d", seed=4, **{**kw, "anomalies": "default"})
    d = digests(tmp_path / "d")
    assert {k: v for k, v in a.items() if "normal" in k} == {k: v for k, v in d.items() if "normal" in k}
    assert all(a[k] != d[k] for k in a if "anomaly" in k)


def slaney_mel_fbank(n_fft: int = 1024, n_mels: int = 128, sr: int = 16000) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters on the Slaney mel scale, area-normalised (librosa's default)."""
    lin, f_break, m_break, step = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    mel = lambda f: np.where(f < f_break, f / lin, m_break + np.log(np.maximum(f, 1e-9) / f_break) / step)
    hz = lambda m: np.where(m < m_break, m * lin, f_break * np.exp(step * (m - m_break)))
    edges = hz(np.linspace(0.0, mel(np.array(sr / 2.0)), n_mels + 2))
    f = np.fft.rfftfreq(n_fft, 1.0 / sr)[:, None]
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    tri = np.maximum(0.0, np.minimum((f - lo) / (mid - lo), (hi - f) / (hi - mid)))
    return tri * (2.0 / (hi - lo))


_MEL = slaney_mel_fbank()


def logmel_stats(x: np.ndarray) -> np.ndarray:
    """Mean and std over frames of the log-mel power spectrogram (128 mels, n_fft 1024, hop 512): (256,)."""
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), 1024)[::512] * np.hanning(1024)
    lm = 10.0 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) ** 2 @ _MEL + 1e-10)
    return np.concatenate([lm.mean(0), lm.std(0)])


def knn_score(x: np.ndarray, train: np.ndarray) -> float:
    """Cosine distance to the nearest training clip's statistics (training-free anomaly score)."""
    return float(np.min(1.0 - train @ x / (np.linalg.norm(train, axis=1) * np.linalg.norm(x))))


@pytest.mark.parametrize("mt", S.MACHINE_TYPES)
def test_off_manifold_anomalies_leave_every_id(mt):
    # measured (seed 0, 3 s, 0 dB, 4 train clips per ID, 6 + 6 test clips): AUC 0.94-1.00 per ID, median
    # distance 2.0-9.2 x the normal clips', 67-100 % of anomalies still nearest their own ID
    from sklearn.metrics import roc_auc_score
    snr, sec = S.FAILS_LIKE_REAL["snr_db"], 3.0

    def stats(m, split, label, i):
        sd = S.clip_seed(0, mt, m, split, label, i)
        kind = S.anomaly_kind(mt, i, "off-manifold") if label == "anomaly" else None
        return logmel_stats(S.synth_clip(mt, m, sd, seconds=sec, snr_db=snr, anomaly=kind))

    train = {m: np.array([stats(m, "train", "normal", i) for i in range(4)]) for m in S.DEFAULT_IDS}
    aucs, nearer_own = [], []
    for m in S.DEFAULT_IDS:
        normal = [knn_score(stats(m, "test", "normal", i), train[m]) for i in range(6)]
        anomal = [stats(m, "test", "anomaly", i) for i in range(6)]
        own = [knn_score(a, train[m]) for a in anomal]
        other = [min(knn_score(a, train[o]) for o in train if o != m) for a in anomal]
        aucs.append(roc_auc_score([0] * 6 + [1] * 6, normal + own))
        nearer_own += [o < t for o, t in zip(own, other)]
        assert np.median(own) > 1.5 * np.median(normal), (m, own, normal)  # far from its own ID ...
    assert min(aucs) >= 0.8 and np.mean(aucs) >= 0.9, aucs
    assert np.mean(nearer_own) >= 0.75, nearer_own  # ... and not moved towards another ID
