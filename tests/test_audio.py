import numpy as np
import pytest
import soundfile as sf

from helpers import noise, write_wav
from mimimi.data.audio import AudioError, load_audio


def test_mono_roundtrip(tmp_path):
    x = noise(1.0)
    p = write_wav(tmp_path / "a.wav", x)
    y = load_audio(p)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1 / 2**15)  # 16-bit quantisation


def test_channel_selection(tmp_path):
    x = noise(0.5, channels=4)
    p = write_wav(tmp_path / "multi.wav", x)
    np.testing.assert_allclose(load_audio(p), x[:, 0], atol=1 / 2**15)
    np.testing.assert_allclose(load_audio(p, channel=3), x[:, 3], atol=1 / 2**15)
    np.testing.assert_allclose(load_audio(p, channel="mean"), x.mean(axis=1), atol=1 / 2**15)
    with pytest.raises(AudioError, match=r"multi\.wav: channel 4 requested but the file has 4 channel"):
        load_audio(p, channel=4)


def test_real_eight_channel_mimii_file(real_samples):
    p = real_samples / "mimii/valve/id_00/normal/00000000.wav"
    assert sf.info(p).channels == 8
    ch0, ch1 = load_audio(p), load_audio(p, channel=1)
    assert ch0.shape == (160000,) and np.abs(ch0).max() <= 1.0
    assert not np.allclose(ch0, ch1)  # different microphones of the array


def test_real_dcase_file(real_samples):
    y = load_audio(real_samples / "dcase2020/dev_data/ToyCar/test/normal_id_01_00000000.wav")
    assert y.shape == (176000,) and y.std() > 0


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampling_keeps_duration_and_pitch(tmp_path, sr):
    t = np.arange(int(0.5 * sr)) / sr
    p = write_wav(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), sr=sr)
    y = load_audio(p)
    assert abs(len(y) - 8000) <= 1
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spectrum) * 16000 / len(y) - 1000) < 5


def test_short_clip_is_padded_by_repetition(tmp_path):
    x = noise(0.1)  # 1600 samples
    p = write_wav(tmp_path / "short.wav", x)
    y = load_audio(p, min_samples=3200)
    assert len(y) == 3200
    np.testing.assert_allclose(y[1600:3200], y[:1600])
    assert len(load_audio(p, min_samples=100)) == 1600  # long enough: untouched
    # repeated at most to double its length: shorter than half a segment is refused, not invented
    with pytest.raises(AudioError, match=r"short\.wav: 1600 samples \(0\.1 s at 16000 Hz\) is too short: a clip "
                                         r"needs at least 1601 samples"):
        load_audio(p, min_samples=3202)


def test_float_wav_with_nan_is_rejected(tmp_path):
    x = noise(0.1)
    x[10] = np.nan
    p = write_wav(tmp_path / "nan.wav", x, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: audio contains NaN"):
        load_audio(p)


def _bytes_of_valid_wav(tmp_path):
    return write_wav(tmp_path / "ok.wav", noise(1.0)).read_bytes()


@pytest.mark.parametrize("name, make, message", [
    ("missing.wav", None, "no such file"),
    ("empty.wav", lambda b: b"", "cannot decode audio"),
    ("junk.wav", lambda b: b"not a wav file " * 50, "cannot decode audio"),
    ("header_only.wav", lambda b: b[:30], "cannot decode audio"),
    ("truncated.wav", lambda b: b[: len(b) // 2], "truncated wav"),
])
def test_broken_files_name_the_file(tmp_path, name, make, message):
    p = tmp_path / name
    if make is not None:
        p.write_bytes(make(_bytes_of_valid_wav(tmp_path)))
    with pytest.raises(AudioError) as e:
        load_audio(p)
    assert str(p) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_zero_sample_wav(tmp_path):
    p = write_wav(tmp_path / "zero.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="zero.wav: empty audio"):
        load_audio(p)
