"""speechlens.audio: load, mono-mix, resample, validate, write 16-bit WAV."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from speechlens import audio
from speechlens.audio import AudioError


def tone(rate: int, seconds: float, freq: float = 440.0, channels: int = 1, seed: int = 0):
    """A sine (amplitude 0.3) plus a little noise; ``(n,)`` or ``(n, channels)`` float32."""
    t = np.arange(int(round(rate * seconds))) / rate
    rng = np.random.default_rng(seed)
    chans = [
        0.3 * np.sin(2 * np.pi * freq * t + c) + 0.01 * rng.standard_normal(len(t))
        for c in range(channels)
    ]
    x = np.stack(chans, axis=1) if channels > 1 else chans[0]
    return x.astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


def test_load_mono_wav_native_rate(tmp_path):
    path = tmp_path / "a.wav"
    x = tone(8000, 0.5)
    sf.write(path, x, 8000, subtype="FLOAT")
    samples, rate = audio.load(path)
    assert rate == 8000 and samples.dtype == np.float32 and samples.shape == (4000,)
    np.testing.assert_allclose(samples, x, atol=1e-7)


def test_load_stereo_flac_is_mixed_and_reported(tmp_path):
    path = tmp_path / "b.flac"
    x = tone(44100, 0.25, channels=2)
    sf.write(path, x, 44100)
    samples, rate, info = audio.load_with_info(path)
    assert samples.shape == (len(x),) and rate == 44100
    np.testing.assert_allclose(samples, x.mean(axis=1), atol=2 / 32768)
    assert info.channels == 2 and info.mixed_to_mono and not info.resampled
    assert info.format == "FLAC" and info.native_rate == 44100

    both, _ = audio.load(path, mono=False)
    assert both.shape == (len(x), 2)


def test_resample_keeps_length_and_pitch(tmp_path):
    path = tmp_path / "c.flac"
    sf.write(path, tone(44100, 1.0, freq=1000.0), 44100)
    samples, rate, info = audio.load_with_info(path, sample_rate=16000)
    assert rate == 16000 and abs(len(samples) - 16000) <= 1
    assert info.resampled and info.native_frames == 44100 and info.frames == len(samples)
    assert info.duration_s == pytest.approx(1.0, abs=1e-4)
    assert peak_hz(samples, rate) == pytest.approx(1000.0, abs=2.0)
    assert samples.dtype == np.float32


def test_load_ogg_upsamples(tmp_path):
    path = tmp_path / "d.ogg"
    sf.write(path, tone(8000, 0.5, freq=300.0), 8000, format="OGG", subtype="VORBIS")
    samples, rate = audio.load(path, sample_rate=16000)
    assert rate == 16000 and abs(len(samples) - 8000) <= 2
    assert peak_hz(samples, rate) == pytest.approx(300.0, abs=5.0)


@pytest.mark.parametrize(
    ("samples", "reason"),
    [
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.1, np.nan, 0.2], np.float32), "NaN"),
        (np.array([0.1, np.inf, 0.2], np.float32), "infinite"),
        (np.zeros(800, np.float32), "silent"),
        (np.full(800, 1e-6, np.float32), "silent"),
    ],
)
def test_validate_rejects(samples, reason):
    with pytest.raises(AudioError, match=reason) as err:
        audio.validate(samples, 8000, "some/file.wav")
    assert "some/file.wav" in str(err.value) and err.value.path == "some/file.wav"
    assert isinstance(err.value, ValueError)


def test_validate_rejects_bad_rate_and_accepts_quiet_audio():
    with pytest.raises(AudioError, match="sample rate"):
        audio.validate(np.ones(10, np.float32), 0, "x.wav")
    audio.validate(np.full(10, 1 / 32768, np.float32), 16000, "x.wav")  # one 16-bit step


def _write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("missing.wav", lambda p: p, "no such file"),
        ("garbage.wav", lambda p: _write_bytes(p, b"RIFF not really a wav file"), "cannot read"),
        ("zero.flac", lambda p: _write_bytes(p, b""), "cannot read"),
        ("notes.txt", lambda p: _write_bytes(p, b"hello\n" * 100), "cannot read"),
        ("empty.wav", lambda p: sf.write(p, np.zeros(0), 8000), "empty"),
        ("silent.wav", lambda p: sf.write(p, np.zeros(8000), 8000), "silent"),
        ("nan.wav", lambda p: sf.write(p, np.full(10, np.nan), 8000, subtype="FLOAT"), "NaN"),
    ],
)
def test_load_errors_name_the_file(tmp_path, name, make, reason):
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioError, match=reason) as err:
        audio.load(path, sample_rate=16000)
    assert name in str(err.value)


def test_load_too_short_to_resample(tmp_path):
    path = tmp_path / "one.wav"
    sf.write(path, np.array([0.5]), 44100)
    with pytest.raises(AudioError, match="too short"):
        audio.load(path, sample_rate=8000)


def test_load_without_check_returns_silence(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(100), 8000)
    samples, _ = audio.load(path, check=False)
    assert not samples.any()


def test_write_wav_is_16_bit_pcm_and_round_trips(tmp_path):
    path = tmp_path / "out" / "x.wav"
    x = tone(16000, 0.5)
    audio.write_wav(path, x, 16000)
    info = sf.info(path)
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        "WAV",
        "PCM_16",
        16000,
        1,
    )
    assert info.frames == len(x)
    back, rate = audio.load(path)
    np.testing.assert_allclose(back, x, atol=2 / 32768)
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.wav"]  # no temporaries left


def test_write_wav_clips_and_writes_channels(tmp_path):
    path = tmp_path / "loud.wav"
    x = np.stack([np.linspace(-3, 3, 101), np.zeros(101)], axis=1).astype(np.float32)
    audio.write_wav(path, x, 8000)
    back, _ = sf.read(path, dtype="int16")
    assert back.shape == (101, 2)
    assert back[:, 0].max() == 32767 and back[:, 0].min() == -32767
    assert (back[:34, 0] == -32767).all() and (back[-34:, 0] == 32767).all()


def test_write_wav_rejects_nan(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        audio.write_wav(tmp_path / "n.wav", np.array([0.0, np.nan]), 8000)
    assert not list(tmp_path.iterdir())
