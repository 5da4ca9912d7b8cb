import builtins
import os
import time

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

import mimimi.features as features
from helpers import noise, write_wav
from mimimi.config import FeatureConfig
from mimimi.data.audio import AudioError
from mimimi.features import (FeatureCache, complex_stft, eval_segments, log_mel, segment_starts,
                             stack_frames)

RAW = FeatureConfig(normalize="none")


def numpy_stft(x, n_fft=1024, hop=512):
    """Textbook STFT: reflect-pad n_fft/2 each side, periodic Hann, rfft of every hop-th frame."""
    xp = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = [xp[s:s + n_fft] * window for s in range(0, len(xp) - n_fft + 1, hop)]
    return np.fft.rfft(np.stack(frames), axis=1).T  # (F, T)


def test_stft_matches_numpy_reference():
    x = noise(2.0, seed=3)
    got, ref = complex_stft(x, RAW), numpy_stft(x)
    assert got.shape == ref.shape == (513, 1 + len(x) // 512) and got.dtype == np.complex64
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_stft_of_a_tone_peaks_at_its_bin():
    t = np.arange(16000) / 16000
    spec = complex_stft(np.sin(2 * np.pi * 1000 * t).astype(np.float32), RAW)
    assert np.argmax(np.abs(spec[:, 10])) == round(1000 * 1024 / 16000)


def test_clip_normalisation():
    spec = complex_stft(5.0 * noise(2.0), FeatureConfig())
    for part in (spec.real, spec.imag):
        assert abs(part.mean()) < 1e-4 and abs(part.std() - 1) < 1e-3
    # gain does not change normalised features
    np.testing.assert_allclose(complex_stft(0.1 * noise(2.0), FeatureConfig()), spec, atol=1e-4)


def test_log_mel_matches_torchaudio_transform():
    x = noise(2.0, seed=1)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, hop_length=512, n_mels=128, power=2.0,
                                               norm="slaney", mel_scale="slaney")(torch.from_numpy(x))
    ref = 10 * torch.log10(mel + torch.finfo(torch.float32).eps)
    got = log_mel(x, FeatureConfig())
    assert got.shape == (128, 63)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-3)


@pytest.mark.parametrize("n, seg, hop, expected", [
    (64, 64, 64, [0]),
    (128, 64, 64, [0, 64]),
    (130, 64, 64, [0, 64, 66]),
    (313, 64, 32, [0, 32, 64, 96, 128, 160, 192, 224, 249]),
])
def test_segment_starts_cover_every_frame(n, seg, hop, expected):
    assert segment_starts(n, seg, hop) == expected


def test_segment_starts_rejects_short_clips():
    with pytest.raises(ValueError, match="shorter than one segment"):
        segment_starts(63, 64, 64)


def test_eval_segments_are_slices_of_the_clip():
    spec = complex_stft(noise(10.0), FeatureConfig())
    segs = eval_segments(spec, FeatureConfig())
    assert segs.shape == (5, 513, 64)
    np.testing.assert_array_equal(segs[-1], spec[:, -64:])


def test_stack_frames():
    logmel = np.arange(12, dtype=np.float32).reshape(2, 6)  # 2 mels x 6 frames
    out = stack_frames(logmel, n=3)
    assert out.shape == (4, 6)
    np.testing.assert_array_equal(out[0], [0, 6, 1, 7, 2, 8])  # frames 0,1,2, each (mel0, mel1)


class CountingDecode:
    def __init__(self, monkeypatch):
        self.calls = []
        real = features.decode
        monkeypatch.setattr(features, "decode", lambda p, cfg: (self.calls.append(str(p)), real(p, cfg))[1])


def test_cache_decodes_each_file_once(tmp_path, monkeypatch):
    wav = write_wav(tmp_path / "a.wav", noise(3.0))
    decode = CountingDecode(monkeypatch)
    cache = FeatureCache(tmp_path / "cache", FeatureConfig())
    first = np.array(cache.get(wav))
    second = cache.get(wav)
    assert len(decode.calls) == 1
    np.testing.assert_array_equal(first, second)
    assert first.shape == (513, 94)
    # both kinds are filled from one decode
    assert cache.warm([wav], kinds=("stft", "logmel"), progress=False) == 1 and len(decode.calls) == 2
    assert cache.warm([wav], kinds=("stft", "logmel"), progress=False) == 0 and len(decode.calls) == 2
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_cache_key_follows_file_identity_and_settings(tmp_path, monkeypatch):
    wav = write_wav(tmp_path / "a.wav", noise(3.0))
    decode = CountingDecode(monkeypatch)
    cache = FeatureCache(tmp_path / "cache", FeatureConfig())
    before = np.array(cache.get(wav))
    write_wav(wav, noise(3.0, seed=9))  # replaced in place: new content, new mtime
    os.utime(wav, ns=(time.time_ns(), time.time_ns() + 10**9))
    after = np.array(cache.get(wav))
    assert len(decode.calls) == 2 and not np.allclose(before, after)
    # a setting that changes the STFT gets its own entries; one that only changes segmenting does not
    FeatureCache(tmp_path / "cache", FeatureConfig(n_fft=512)).get(wav)
    assert len(decode.calls) == 3
    FeatureCache(tmp_path / "cache", FeatureConfig(eval_hop_frames=16)).get(wav)
    assert len(decode.calls) == 3


def test_float16_stft_cache_is_half_the_size_and_close(tmp_path):
    wav = write_wav(tmp_path / "a.wav", noise(10.0))
    full = FeatureCache(tmp_path / "cache", FeatureConfig())
    half = FeatureCache(tmp_path / "cache", FeatureConfig(stft_cache_dtype="float16"))
    ref, low = np.array(full.get(wav)), half.get(wav)
    assert half.entry(wav, "stft") != full.entry(wav, "stft")  # its own entries
    assert low.dtype == np.complex64 and low.shape == ref.shape == (513, 313)
    # float16 keeps 11 significant bits: each part within 2**-11 of its magnitude (+ subnormal floor)
    for part in ("real", "imag"):
        a, b = getattr(ref, part), getattr(low, part)
        assert np.all(np.abs(a - b) <= 2.0 ** -11 * np.abs(a) + 1e-7)
    assert np.abs(ref - low).max() / np.abs(ref).std() < 1e-2
    sizes = [c.entry(wav, "stft").stat().st_size for c in (full, half)]
    assert sizes[1] < 0.51 * sizes[0]  # 1.3 MB -> 0.64 MB for a 10 s clip
    np.testing.assert_array_equal(half.get(wav, "logmel"), full.get(wav, "logmel"))  # log-mel unchanged


def test_located_frames_are_the_slices_get_gives(tmp_path):
    """``frames`` reads a segment's bytes straight from a column-major entry (the STFT: one run of bytes);
    whatever the layout, it returns what slicing ``get`` returns, and a truncated entry is an error naming it."""
    wav = write_wav(tmp_path / "a.wav", noise(3.0))
    for cfg, kind in [(FeatureConfig(), "stft"), (FeatureConfig(), "logmel"),
                      (FeatureConfig(stft_cache_dtype="float16"), "stft")]:
        cache = FeatureCache(tmp_path / "cache", cfg)
        at = cache.locate(wav, kind)  # fills the entry on first use
        whole = np.array(cache.get(wav, kind))
        assert at.shape[-1] == whole.shape[-1] == 94
        assert at.fortran == (kind == "stft" and cfg.stft_cache_dtype == "complex64")  # the STFT: one run per segment
        for start, stop in [(0, 64), (30, 94), (7, 7), (60, 124)]:  # the last runs past the end, as slicing does
            got = cache.frames(at, start, stop)
            assert got.dtype == whole.dtype and got.flags.writeable
            np.testing.assert_array_equal(got, whole[..., start:stop])
    at = FeatureCache(tmp_path / "cache", FeatureConfig()).locate(wav, "stft")
    with open(at.entry, "r+b") as f:
        f.truncate(at.offset + 50 * at.shape[0] * 8)
    with pytest.raises(OSError, match=f"{at.entry}: feature cache entry truncated"):
        FeatureCache.frames(at, 30, 94)


def test_float16_stft_cache_refuses_values_it_cannot_hold():
    loud = np.full((3, 4), 1e5 + 0j, np.complex64)
    with pytest.raises(ValueError, match="overflow float16"):
        features.to_stored(loud, FeatureConfig(stft_cache_dtype="float16"), "stft")


def test_cache_propagates_decode_errors_and_stores_nothing(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage" * 100)
    cache = FeatureCache(tmp_path / "cache", FeatureConfig())
    with pytest.raises(AudioError, match="bad.wav"):
        cache.get(bad)
    assert not list((tmp_path / "cache").rglob("*.npy"))


class CountingPool(features.ProcessPoolExecutor):
    """warm's process pool, noting the worker count of each one made."""
    made: list[int] = []

    def __init__(self, workers, **kwargs):
        CountingPool.made.append(workers)
        super().__init__(workers, **kwargs)


def _entries(cache: FeatureCache, wavs, kinds=features.KINDS) -> dict[tuple[str, str], bytes]:
    return {(w.name, k): cache.entry(w, k).read_bytes() for w in wavs for k in kinds}


def test_parallel_fill_writes_the_same_entries_as_the_serial_one(tmp_path, monkeypatch):
    # one 10 s clip: with several torch threads its normalised STFT would differ in the last bit
    wavs = [write_wav(tmp_path / "wav" / f"{i}.wav", noise(s, seed=i)) for i, s in enumerate((1.5, 2.5, 3.0, 10.0))]
    monkeypatch.setattr(features, "ProcessPoolExecutor", CountingPool)
    CountingPool.made = []
    torch.set_num_threads(2)
    serial = FeatureCache(tmp_path / "serial", FeatureConfig())
    parallel = FeatureCache(tmp_path / "parallel", FeatureConfig())
    assert serial.warm(wavs, kinds=features.KINDS, progress=False, workers=1) == 8
    assert CountingPool.made == [] and torch.get_num_threads() == 2  # in this process; threads restored
    assert parallel.warm(reversed(wavs), kinds=features.KINDS, progress=False, workers=3) == 8
    assert CountingPool.made == [3]
    assert _entries(parallel, wavs) == _entries(serial, wavs)
    assert not list((tmp_path / "parallel").rglob("*.tmp"))
    assert parallel.warm(wavs, kinds=features.KINDS, progress=False, workers=3) == 0 and CountingPool.made == [3]


def test_the_default_fill_starts_no_more_workers_than_the_work_is_worth(tmp_path, monkeypatch):
    wavs = [write_wav(tmp_path / "wav" / f"{i}.wav", noise(1.5, seed=i)) for i in range(3)]
    monkeypatch.setattr(features, "ProcessPoolExecutor", CountingPool)
    monkeypatch.setattr(features, "usable_cpus", lambda: 16)
    CountingPool.made = []
    assert FeatureCache(tmp_path / "cache", FeatureConfig()).warm(wavs, progress=False) == 3
    assert CountingPool.made == []  # 3 files: fewer than WARM_MIN_PER_WORKER per worker, so in this process
    with pytest.raises(ValueError, match="workers must be >= 1"):
        FeatureCache(tmp_path / "cache", FeatureConfig()).warm(wavs, workers=0)


def test_parallel_fill_fails_in_one_line_naming_the_file_it_cannot_decode(tmp_path):
    wavs = [write_wav(tmp_path / f"{i}.wav", noise(1.5, seed=i)) for i in range(3)]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage" * 100)
    cache = FeatureCache(tmp_path / "cache", FeatureConfig())
    with pytest.raises(AudioError, match=r"bad\.wav: cannot decode audio") as e:
        cache.warm(wavs + [bad], progress=False, workers=2)
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_cache_command_names_the_bad_file_in_one_line(tmp_path):
    from mimimi import cache as cache_command

    root = tmp_path / "root"
    for i in range(3):
        write_wav(root / "valve" / "train" / f"normal_id_00_{i:08d}.wav", noise(1.5, seed=i))
    (root / "valve" / "train" / "normal_id_00_00000009.wav").write_bytes(b"garbage" * 100)
    with pytest.raises(SystemExit) as e:
        cache_command.main(["--data-root", str(root), "--cache-dir", str(tmp_path / "c"), "--workers", "2"])
    assert str(e.value.code).startswith("error: ") and "normal_id_00_00000009.wav" in str(e.value.code)
    assert "\n" not in str(e.value.code)


def test_fill_progress_off_a_terminal_is_a_line_every_tenth(capsys):
    shown = features._Progress(20, enabled=True)  # pytest's stderr is not a terminal
    for _ in range(20):
        shown.update(1)
    shown.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("features: 20/20 clips (100 %)")
    assert all("clips/s, ETA " in line for line in lines)
    features._Progress(20, enabled=False).update(20)
    features._Progress(0, enabled=True).close()
    assert capsys.readouterr().err == ""


@pytest.fixture
def no_wav_reads(monkeypatch):
    """After this, any attempt to open or decode a wav fails the test."""
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if str(file).endswith(".wav"):
            raise AssertionError(f"opened a wav: {file}")
        return real_open(file, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("soundfile was asked to decode a wav")

    monkeypatch.setattr(builtins, "open", guarded_open)
    for name in ("read", "info", "SoundFile"):
        monkeypatch.setattr(sf, name, refuse)


def test_an_epoch_over_cached_features_never_opens_a_wav(noise_tree, tmp_path, request):
    from torch.utils.data import DataLoader

    from mimimi.data.dataset import ClipFrames, ClipSegments, TrainFrames, TrainSegments, id_map
    from mimimi.data.index import index_dataset, select

    clips = index_dataset(noise_tree).clips
    cache = FeatureCache(tmp_path / "cache", FeatureConfig())
    assert cache.warm(clips.path, kinds=("stft", "logmel"), progress=False) == 2 * len(clips)
    request.getfixturevalue("no_wav_reads")
    with pytest.raises(AssertionError, match="opened a wav"):  # the guard itself works
        open(clips.path[0], "rb")
    ids = id_map(clips)
    train = select(clips, split="train")
    batches = list(DataLoader(TrainSegments(train, cache, ids), batch_size=4))
    assert sum(len(y) for _, y in batches) == len(train)
    assert [item.x.shape[0] for item in ClipSegments(clips, cache, ids)] == [2] * len(clips)  # 3 s: 94 frames -> starts 0, 30
    assert len(TrainFrames(train, cache)) == len(train) * (94 - 4)
    assert ClipFrames(clips, cache, ids)[0].x.shape == (90, 640)
