"""The synthetic generator's DCASE layouts: dcase2020 unchanged, the dcase2021 and dcase2022 names, folders and
attribute tables, source/target domains and their shift, determinism, argument errors, the CLI's --layout.

File names and audio are checked directly (not through mimimi.data.index), so these tests pin the layout itself.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import soundfile as sf

from mimimi import synth as command
from mimimi.data import synth as S


def digests(root, n_hex: int = 64) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:n_hex]
            for p in sorted(root.rglob("*.wav"))}


def files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def read(path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32")
    assert sr == S.SAMPLE_RATE
    return x


# ----------------------------------------------------------------------------- dcase2020: byte for byte as before
# sha256 (first 16 hex digits) of every file, computed by running the generator as it was BEFORE the dcase2021 and
# dcase2022 layouts were added (same arguments as below), and hard-coded here: layout="dcase2020" (the default)
# must keep writing exactly these files with exactly these bytes.
BEFORE_A = {  # generate(root, MACHINE_TYPES, ("00", "06"), 1, 1, 1, seconds=0.25, seed=3, snr_db=3.0)
    "fan/test/anomaly_id_00_00000000.wav": "f9cf0bdb00c085a4",
    "fan/test/anomaly_id_06_00000000.wav": "1de5974faf7231f5",
    "fan/test/normal_id_00_00000000.wav": "733b4a503a9dbdd8",
    "fan/test/normal_id_06_00000000.wav": "a1975705dd3099af",
    "fan/train/normal_id_00_00000000.wav": "23bc937411e4a466",
    "fan/train/normal_id_06_00000000.wav": "4b0d9b0b48ab50a5",
    "pump/test/anomaly_id_00_00000000.wav": "dcc75f9f4e91d61b",
    "pump/test/anomaly_id_06_00000000.wav": "2fcc58ef0c4ff332",
    "pump/test/normal_id_00_00000000.wav": "5229c840c8e34dda",
    "pump/test/normal_id_06_00000000.wav": "fa5d23bc38538ab0",
    "pump/train/normal_id_00_00000000.wav": "37bd72b8934f1184",
    "pump/train/normal_id_06_00000000.wav": "70bb3e2d8f23b643",
    "slider/test/anomaly_id_00_00000000.wav": "345a3911ae10d6e1",
    "slider/test/anomaly_id_06_00000000.wav": "8e087de10e31407b",
    "slider/test/normal_id_00_00000000.wav": "b16596f54b401104",
    "slider/test/normal_id_06_00000000.wav": "4d06e9ab6dad85ae",
    "slider/train/normal_id_00_00000000.wav": "1c4cbc28c5678248",
    "slider/train/normal_id_06_00000000.wav": "fb6801591f7e06e4",
    "valve/test/anomaly_id_00_00000000.wav": "d9c69c9473c7d8f5",
    "valve/test/anomaly_id_06_00000000.wav": "fcc285284311b5f8",
    "valve/test/normal_id_00_00000000.wav": "dc97cde052c426d5",
    "valve/test/normal_id_06_00000000.wav": "719a316d1f8d07a0",
    "valve/train/normal_id_00_00000000.wav": "9a2e2638f2b24a5f",
    "valve/train/normal_id_06_00000000.wav": "6ed3870e01b781d1",
}
BEFORE_B = {  # generate(root, ("fan", "valve"), ("02", "04"), 1, 1, 2, seconds=0.25, seed=0,
    #          train_counts={"04": 2}, anomalies="off-manifold")
    "fan/test/anomaly_id_02_00000000.wav": "70dc4d77456a123c",
    "fan/test/anomaly_id_02_00000001.wav": "6a5415c053444921",
    "fan/test/anomaly_id_04_00000000.wav": "6074c8094b7bf264",
    "fan/test/anomaly_id_04_00000001.wav": "d8464a01dc8753cb",
    "fan/test/normal_id_02_00000000.wav": "066c4c3597e2e56f",
    "fan/test/normal_id_04_00000000.wav": "5cfadc902f93cde0",
    "fan/train/normal_id_02_00000000.wav": "c6efd537d6bc6fcf",
    "fan/train/normal_id_04_00000000.wav": "f69e87d4dfe97a59",
    "fan/train/normal_id_04_00000001.wav": "970d34d04378de10",
    "valve/test/anomaly_id_02_00000000.wav": "85ae6d1bc35f030e",
    "valve/test/anomaly_id_02_00000001.wav": "ba80dca1d8b6ecee",
    "valve/test/anomaly_id_04_00000000.wav": "6a2d56010fe9cefb",
    "valve/test/anomaly_id_04_00000001.wav": "7f65bf6b7ea7e880",
    "valve/test/normal_id_02_00000000.wav": "0b768640dbed246c",
    "valve/test/normal_id_04_00000000.wav": "f178becffdbe19d1",
    "valve/train/normal_id_02_00000000.wav": "ee6aa82d83264bcf",
    "valve/train/normal_id_04_00000000.wav": "8358e45c9364424a",
    "valve/train/normal_id_04_00000001.wav": "087ea75875693911",
}


def test_dcase2020_writes_the_same_files_and_bytes_as_before(tmp_path):
    S.generate(tmp_path / "a", S.MACHINE_TYPES, ("00", "06"), 1, 1, 1, seconds=0.25, seed=3, snr_db=3.0)
    S.generate(tmp_path / "a2", S.MACHINE_TYPES, ("00", "06"), 1, 1, 1, seconds=0.25, seed=3, snr_db=3.0,
               layout="dcase2020", workers=2)
    S.generate(tmp_path / "b", ("fan", "valve"), ("02", "04"), 1, 1, 2, seconds=0.25, seed=0, train_counts={"04": 2},
               anomalies="off-manifold", layout="dcase2020")
    assert files(tmp_path / "a") == set(BEFORE_A) and files(tmp_path / "b") == set(BEFORE_B)  # nothing else, no csv
    assert digests(tmp_path / "a", 16) == BEFORE_A
    assert digests(tmp_path / "a2", 16) == BEFORE_A
    assert digests(tmp_path / "b", 16) == BEFORE_B


def test_dcase2020_default_ids_and_speed_one_are_the_old_clip():
    assert S.generate.__kwdefaults__["layout"] == "dcase2020"
    sd = S.clip_seed(0, "fan", "00", "train", "normal", 0)
    assert np.array_equal(S.synth_clip("fan", "00", sd, seconds=0.3),
                          S.synth_clip("fan", "00", sd, seconds=0.3, speed=1.0))
    # a domain is a different stream; no domain is the dcase2020 stream
    assert S.clip_seed(0, "fan", "00", "train", "normal", 0).entropy != \
        S.clip_seed(0, "fan", "00", "train", "normal", 0, "source").entropy


# ----------------------------------------------------------------------------- dcase2022
def test_dcase2022_exact_files_and_attribute_table(tmp_path):
    paths = S.generate(tmp_path, ["fan", "valve"], n_train=3, n_test_normal=2, n_test_anomaly=1, seconds=0.2,
                       layout="dcase2022", n_target_train=2, domain_shift=0.3)
    expected_rows = {}
    for mt in ("fan", "valve"):
        train = [f"{mt}/train/section_00_source_train_normal_{i:04d}_vel_100.wav" for i in range(3)]
        train += [f"{mt}/train/section_00_target_train_normal_{i:04d}_vel_130.wav" for i in range(2)]
        test = [f"{mt}/test/section_00_{d}_test_{lab}_{i:04d}_vel_{v}.wav"
                for d, v in (("source", 100), ("target", 130)) for lab, n in (("normal", 2), ("anomaly", 1))
                for i in range(n)]
        expected_rows[mt] = (train, sorted(test))
    expected = {n for tr, te in expected_rows.values() for n in tr + te} | {"fan/attributes_00.csv",
                                                                             "valve/attributes_00.csv"}
    assert files(tmp_path) == expected
    assert {str(p.relative_to(tmp_path)) for p in paths} == expected - {"fan/attributes_00.csv",
                                                                         "valve/attributes_00.csv"}
    assert len(paths) == 2 * (3 + 2 + 2 * 3)
    for mt, (train, test) in expected_rows.items():
        text = (tmp_path / mt / "attributes_00.csv").read_text()
        rows = [f"{n},vel,{n.rsplit('_', 1)[1][:-4]}" for n in train + test]
        assert text == "\n".join(["file_name,d1p,d1v", *rows]) + "\n"
    info = sf.info(tmp_path / "fan/test/section_00_target_test_anomaly_0000_vel_130.wav")
    assert (info.samplerate, info.channels, info.subtype, info.format, info.frames) == (16000, 1, "PCM_16", "WAV",
                                                                                       3200)


def test_dcase2022_defaults_and_sections(tmp_path):
    S.generate(tmp_path / "d", ["pump"], n_train=1, n_test_normal=1, n_test_anomaly=1, seconds=0.05,
               layout="dcase2022")
    train = sorted(p.name for p in (tmp_path / "d" / "pump" / "train").iterdir())
    # one section 00, 10 target training clips (as in DCASE 2022+), the default shift 0.25: vel_125
    assert train == ["section_00_source_train_normal_0000_vel_100.wav"] + \
        [f"section_00_target_train_normal_{i:04d}_vel_125.wav" for i in range(10)]
    assert files(tmp_path / "d") >= {"pump/attributes_00.csv"} and not (tmp_path / "d/pump/source_test").exists()

    S.generate(tmp_path / "s", ["slider"], n_train=1, n_test_normal=1, n_test_anomaly=1, seconds=0.05,
               layout="dcase2022", sections=("01", "03"), n_target_train=1, domain_shift=0.0,
               train_counts={"03": 2})
    names = files(tmp_path / "s")
    assert {n for n in names if n.endswith(".csv")} == {"slider/attributes_01.csv", "slider/attributes_03.csv"}
    assert "slider/train/section_03_source_train_normal_0001_vel_100.wav" in names
    assert "slider/train/section_01_source_train_normal_0001_vel_100.wav" not in names
    assert "slider/test/section_01_target_test_normal_0000_vel_100.wav" in names  # no shift: the same attribute
    table = (tmp_path / "s" / "slider" / "attributes_03.csv").read_text().splitlines()
    assert len(table) == 1 + 2 + 1 + 4 and all(r.startswith("slider/") and "section_03_" in r for r in table[1:])


# ----------------------------------------------------------------------------- dcase2021
def test_dcase2021_exact_files(tmp_path):
    mt = "slider"
    paths = S.generate(tmp_path, [mt], n_train=2, n_test_normal=2, n_test_anomaly=1, seconds=0.1, layout="dcase2021")
    expected = set()
    for s in ("00", "01", "02"):  # the default sections; 3 target training clips as in 2021
        expected |= {f"{mt}/train/section_{s}_source_train_normal_{i:04d}_vel_100.wav" for i in range(2)}
        expected |= {f"{mt}/train/section_{s}_target_train_normal_{i:04d}_vel_125.wav" for i in range(3)}
        for d in ("source", "target"):  # one folder per domain, no attribute in test names
            expected |= {f"{mt}/{d}_test/section_{s}_{d}_test_normal_{i:04d}.wav" for i in range(2)}
            expected |= {f"{mt}/{d}_test/section_{s}_{d}_test_anomaly_0000.wav"}
    assert files(tmp_path) == expected  # no attributes_XX.csv in 2021
    assert len(paths) == len(expected) == 3 * (2 + 3 + 2 * 3)

    S.generate(tmp_path / "ids", [mt], ["04", "05"], n_train=1, n_test_normal=1, n_test_anomaly=1, seconds=0.1,
               layout="dcase2021", n_target_train=1, domain_shift=0.5)
    assert files(tmp_path / "ids") == {
        f"{mt}/train/section_{s}_{d}_train_normal_0000_vel_{v}.wav" for s in ("04", "05")
        for d, v in (("source", 100), ("target", 150))} | {
        f"{mt}/{d}_test/section_{s}_{d}_test_{lab}_0000.wav" for s in ("04", "05") for d in ("source", "target")
        for lab in ("normal", "anomaly")}


def test_dcase2021_and_dcase2022_hold_the_same_clips(tmp_path):
    kw = dict(machine_types=["valve"], n_train=1, n_test_normal=1, n_test_anomaly=2, seconds=0.2, seed=2,
              n_target_train=1, sections=("00",))
    S.generate(tmp_path / "21", layout="dcase2021", **kw)
    S.generate(tmp_path / "23", layout="dcase2022", **kw)
    a = read(tmp_path / "21/valve/target_test/section_00_target_test_anomaly_0001.wav")
    b = read(tmp_path / "23/valve/test/section_00_target_test_anomaly_0001_vel_125.wav")
    assert np.array_equal(a, b)


# ----------------------------------------------------------------------------- determinism and content
def test_section_layouts_are_deterministic_for_any_workers(tmp_path):
    kw = dict(machine_types=["fan", "pump"], n_train=2, n_test_normal=1, n_test_anomaly=1, seconds=0.2,
              n_target_train=1, layout="dcase2022", sections=("00", "01"))
    S.generate(tmp_path / "a", seed=7, workers=1, **kw)
    S.generate(tmp_path / "b", seed=7, workers=2, **kw)
    S.generate(tmp_path / "c", seed=8, workers=1, **kw)
    a, b, c = (digests(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 2 * 2 * (2 + 1 + 4)
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    for mt in ("fan", "pump"):
        assert (tmp_path / "a" / mt / "attributes_01.csv").read_bytes() == \
            (tmp_path / "b" / mt / "attributes_01.csv").read_bytes()
    # source and target, and the two sections, are different clips
    assert a["fan/train/section_00_source_train_normal_0000_vel_100.wav"] != \
        a["fan/train/section_00_target_train_normal_0000_vel_125.wav"]
    assert a["fan/train/section_00_source_train_normal_0000_vel_100.wav"] != \
        a["fan/train/section_01_source_train_normal_0000_vel_100.wav"]


def test_files_hold_synth_clip_at_the_domain_speed_and_snr(tmp_path):
    S.generate(tmp_path, ["slider"], n_train=1, n_test_normal=1, n_test_anomaly=2, seconds=0.3, seed=4, snr_db=3.0,
               layout="dcase2022", sections=("02",), n_target_train=1, domain_shift=0.4, anomalies="off-manifold")
    x = read(tmp_path / "slider/test/section_02_target_test_anomaly_0001_vel_140.wav")
    ref = S.synth_clip("slider", "02", S.clip_seed(4, "slider", "02", "test", "anomaly", 1, "target"), seconds=0.3,
                       snr_db=3.0 - S.TARGET_SNR_DROP_DB * 0.4, anomaly=S.anomaly_kind("slider", 1, "off-manifold"),
                       speed=1.4)
    assert np.max(np.abs(x - ref)) <= 1.0 / 32768 + 1e-7
    x = read(tmp_path / "slider/train/section_02_source_train_normal_0000_vel_100.wav")
    ref = S.synth_clip("slider", "02", S.clip_seed(4, "slider", "02", "train", "normal", 0, "source"), seconds=0.3,
                       snr_db=3.0)
    assert np.max(np.abs(x - ref)) <= 1.0 / 32768 + 1e-7


def test_source_clips_do_not_depend_on_the_shift(tmp_path):
    kw = dict(machine_types=["pump"], n_train=2, n_test_normal=1, n_test_anomaly=1, seconds=0.2, layout="dcase2021",
              sections=("00",), n_target_train=1)
    S.generate(tmp_path / "a", domain_shift=0.0, **kw)
    S.generate(tmp_path / "b", domain_shift=0.8, **kw)
    a, b = digests(tmp_path / "a"), digests(tmp_path / "b")
    src = [k for k in a if "_source_" in k]
    assert len(src) == 4 and all(a[k] == b[k] for k in src)
    assert "pump/train/section_00_target_train_normal_0000_vel_100.wav" in a
    assert "pump/train/section_00_target_train_normal_0000_vel_180.wav" in b


# third-octave bands from 50 Hz to 8 kHz on a 1024-point FFT
_F = np.fft.rfftfreq(1024, 1.0 / S.SAMPLE_RATE)
_EDGES = 50.0 * 2.0 ** np.arange(0.0, math.log2(8000.0 / 50.0) + 1e-9, 1.0 / 3.0)
_BAND = np.digitize(_F, _EDGES)


def band_levels(x: np.ndarray) -> np.ndarray:
    """Third-octave band powers in dB relative to the clip's total (loudness removed): mean over Hann frames."""
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), 1024)[::512] * np.hanning(1024)
    p = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(0)
    b = np.array([p[_BAND == i].sum() for i in range(1, _EDGES.size)])
    return 10.0 * np.log10(b / b.sum())


def test_domain_shift_is_real_in_the_audio_and_grows_with_it(tmp_path):
    # the statistic: RMS difference (dB) between the mean third-octave spectra of the source and the target
    # normal test clips of section 00. At shift 0 the two domains are the same process (only clip-to-clip
    # variation is left); the faster machine and louder background move it further as the shift grows.
    # Measured (8 + 8 clips of 1 s, seed 0): fan 0.25 / 4.1 / 4.5 dB at shifts 0 / 0.25 / 0.5, pump 0.3 / 3.3 / 3.8,
    # slider 0.4 / 1.7 / 3.1, valve 1.7 / 2.4 / 3.6.
    dist = {}
    for shift in (0.0, 0.25, 0.5):
        root = tmp_path / f"s{shift}"
        S.generate(root, S.MACHINE_TYPES, n_train=1, n_test_normal=8, n_test_anomaly=1, seconds=1.0,
                   layout="dcase2022", n_target_train=1, domain_shift=shift, workers=2)
        v = round(100 * (1 + shift))
        for mt in S.MACHINE_TYPES:
            lv = {d: np.mean([band_levels(read(root / mt / "test" / f"section_00_{d}_test_normal_{i:04d}_vel_{a}.wav"))
                              for i in range(8)], axis=0) for d, a in (("source", 100), ("target", v))}
            dist.setdefault(mt, []).append(float(np.sqrt(np.mean((lv["target"] - lv["source"]) ** 2))))
    for mt, (d0, d1, d2) in dist.items():
        assert d0 < d1 < d2, (mt, dist[mt])
        assert d2 > 1.5 * d0 and d2 > 2.5, (mt, dist[mt])
    assert np.mean([d[0] for d in dist.values()]) < 1.0  # no shift: the domains look alike


def avg_spectrum(x: np.ndarray) -> np.ndarray:
    """Mean |STFT| over frames (n_fft 1024, hop 512, Hann), scaled to unit L2 norm (as tests/test_synth.py)."""
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), 1024)[::512] * np.hanning(1024)
    m = np.abs(np.fft.rfft(frames, axis=1)).mean(0)
    return m / np.linalg.norm(m)


def test_sections_are_told_apart_like_ids(tmp_path):
    # nearest-centroid on the average spectrum finds the section: each section is its own machine
    S.generate(tmp_path, ["fan", "valve"], n_train=4, n_test_normal=3, n_test_anomaly=1, seconds=1.0,
               layout="dcase2021", n_target_train=1, workers=2)
    for mt in ("fan", "valve"):
        train = tmp_path / mt / "train"
        centroid = {s: np.mean([avg_spectrum(read(train / f"section_{s}_source_train_normal_{i:04d}_vel_100.wav"))
                                for i in range(4)], axis=0) for s in ("00", "01", "02")}
        hits = []
        for s in centroid:
            for i in range(3):
                x = avg_spectrum(read(tmp_path / mt / "source_test" / f"section_{s}_source_test_normal_{i:04d}.wav"))
                hits.append(min(centroid, key=lambda k: np.linalg.norm(centroid[k] - x)) == s)
        assert np.mean(hits) >= 0.85, (mt, hits)


def test_speed_scales_the_pitch():
    # a fan's blade-pass peak moves up by the speed factor (same seed: only the speed differs)
    sd = S.clip_seed(0, "fan", "02", "test", "normal", 0, "target")
    f = np.fft.rfftfreq(16000, 1.0 / S.SAMPLE_RATE)
    peak = {}
    for v in (1.0, 1.5):
        x = S.synth_clip("fan", "02", sd, seconds=1.0, snr_db=math.inf, speed=v).astype(np.float64)
        spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        peak[v] = f[np.argmax(spec * (f > 50))]
    assert abs(peak[1.5] / peak[1.0] - 1.5) < 0.03, peak


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, match", [
    ({"layout": "dcase2019"}, "unknown layout"),
    ({"layout": "dcase2022", "n_target_train": 0}, "n_target_train must be a positive integer"),
    ({"layout": "dcase2021", "n_target_train": -2}, "n_target_train must be a positive integer"),
    ({"layout": "dcase2022", "n_target_train": 1.5}, "n_target_train must be a positive integer"),
    ({"layout": "dcase2022", "domain_shift": -0.1}, "domain_shift must be a number within"),
    ({"layout": "dcase2022", "domain_shift": 1.5}, "domain_shift must be a number within"),
    ({"layout": "dcase2022", "domain_shift": float("nan")}, "domain_shift must be a number within"),
    ({"layout": "dcase2021", "domain_shift": "big"}, "domain_shift must be a number within"),
    ({"layout": "dcase2020", "n_target_train": 3}, "n_target_train applies to the dcase2021 and dcase2022"),
    ({"domain_shift": 0.2}, "domain_shift applies to the dcase2021 and dcase2022"),
    ({"sections": ("00",)}, "dcase2020 has ids"),
    ({"layout": "dcase2022", "sections": ("00",), "ids": ("00",)}, "not both"),
    ({"layout": "dcase2022", "sections": ("0",)}, "two digits"),
    ({"layout": "dcase2022", "sections": ()}, "one section"),
    ({"layout": "dcase2021", "train_counts": {"05": 2}}, "names section '05'"),
    ({"layout": "dcase2022", "n_train": 10_001}, "four digits"),
    ({"layout": "dcase2022", "n_test_anomaly": 0}, "n_test_anomaly must be a positive integer"),
])
def test_generate_rejects_bad_layout_arguments(tmp_path, kw, match):
    base = {"machine_types": ["fan"], "n_train": 1, "n_test_normal": 1, "n_test_anomaly": 1, "seconds": 0.05}
    with pytest.raises(ValueError, match=match) as e:
        S.generate(tmp_path, **{**base, **kw})
    assert "\n" not in str(e.value)
    assert not list(tmp_path.rglob("*"))  # checked before anything is written


def test_naming_helpers_reject_bad_values():
    assert S.attribute("source", 0.7) == "vel_100" and S.attribute("target", 0.7) == "vel_170"
    assert S.operating_speed("target", 0.0) == 1.0
    for args, match in ((("dcase2020", "fan", "00", "source", "train", "normal", 0, "vel_100"), "clip_name"),
                        (("dcase2022", "fan", "00", "other", "train", "normal", 0, "vel_100"), "unknown domain"),
                        (("dcase2022", "fan", "00", "source", "train", "anomaly", 0, "vel_100"), "train/normal"),
                        (("dcase2022", "fan", "00", "source", "test", "normal", 10_000, "vel_100"), "four digits")):
        with pytest.raises(ValueError, match=match):
            S.section_clip_path(*args)
    with pytest.raises(ValueError, match="speed"):
        S.synth_clip("fan", "00", 0, seconds=0.1, speed=3.0)
    with pytest.raises(ValueError, match="speed"):
        S.synth_clip("fan", "00", 0, seconds=0.1, speed=float("nan"))


# ----------------------------------------------------------------------------- CLI
def test_cli_layout(tmp_path, capsys):
    base = ["--machine-types", "valve", "--train", "2", "--test-normal", "1", "--test-anomaly", "1",
            "--seconds", "0.1", "--workers", "1"]
    assert command.main(["--out", str(tmp_path / "a"), "--layout", "dcase2022", "--target-train", "1",
                         "--domain-shift", "0.5", "--sections", "00,01", *base]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "wrote 14 synthetic clips" in out and "dcase2022 layout" in out
    assert "sections 00,01" in out and "2 source + 1 target train" in out and "domain shift 0.5" in out
    assert "valve/test/section_01_target_test_anomaly_0000_vel_150.wav" in files(tmp_path / "a")
    assert {"valve/attributes_00.csv", "valve/attributes_01.csv"} <= files(tmp_path / "a")

    assert command.main(["--out", str(tmp_path / "b"), "--layout", "dcase2021", *base]) == 0
    out = capsys.readouterr().out
    assert "wrote 27 synthetic clips" in out and "sections 00,01,02" in out and "3 target train" in out
    assert "valve/source_test/section_02_source_test_normal_0000.wav" in files(tmp_path / "b")

    # options of the section layouts are errors for dcase2020: one line, nothing written
    rc = command.main(["--out", str(tmp_path / "c"), "--target-train", "2", *base])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error:") and err.count("\n") == 1 and "n_target_train" in err
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("*.wav"))


@pytest.mark.parametrize("args", [["--layout", "dcase2019"], ["--domain-shift", "2"], ["--domain-shift", "x"],
                                  ["--target-train", "0"], ["--sections", "1"]])
def test_cli_rejects_bad_layout_options(tmp_path, args, capsys):
    with pytest.raises(SystemExit) as e:
        command.main(["--out", str(tmp_path), "--machine-types", "fan", "--layout", "dcase2022", "--seconds",
                      "0.1", "--workers", "1", *args])
    assert e.value.code not in (0, None) and args[0] in capsys.readouterr().err
    assert not list(tmp_path.rglob("*"))
