"""Bad audio files: every case raises AudioError naming the file and the reason; usable
oddities (multichannel, any sample rate, streamed WAV headers) load correctly."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from speechlens import audio
from speechlens.audio import SAMPLE_RATE_RANGE, AudioError


def tone(rate: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * freq * t + c) for c in range(channels)], axis=1)
    return x.astype(np.float32)[:, 0] if channels == 1 else x.astype(np.float32)


def wav_bytes(
    data: bytes,
    *,
    rate: int = 16000,
    channels: int = 1,
    bits: int = 16,
    tag: int = 1,
    data_size: int | None = None,
) -> bytes:
    """A canonical 44-byte RIFF/WAVE header (format ``tag``, 1 = PCM) followed by ``data``;
    ``data_size`` overrides the size the ``data`` chunk declares."""
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * align) % 2**32, align, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", min(len(body), 0xFFFFFFFF)) + body


def pcm16(x: np.ndarray) -> bytes:
    return audio.to_pcm16(x).tobytes()


def error_for(path, **kw) -> AudioError:
    with pytest.raises(AudioError) as err:
        audio.load(path, sample_rate=16000, **kw)
    assert err.value.path == str(path) and str(path) in str(err.value)
    return err.value


# --- each bad case names the file and the reason --------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.wav", b"", "cannot read audio"),
        ("empty.flac", b"", "cannot read audio"),
        ("header_cut.wav", wav_bytes(pcm16(tone(16000, 0.1)))[:30], "cannot read audio"),
        ("riff_only.wav", b"RIFF\x24\x00\x00\x00WAVE", "cannot read audio"),
        ("flac_cut.flac", b"fLaC\x00\x00\x00\x22" + b"\x00" * 20, "cannot read audio"),
        ("text.wav", b"utterance_id\taudio\n" * 20, "cannot read audio"),
        ("mp4.m4a", b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + b"\x00" * 64, "cannot read"),
        # a WAV whose codec (format tag 0x1234) libsndfile does not implement
        ("codec.wav", wav_bytes(b"\x00" * 800, tag=0x1234), "cannot read audio"),
        ("no_channels.wav", wav_bytes(b"\x00" * 800, channels=0), "cannot read audio"),
        ("rate_1hz.wav", wav_bytes(pcm16(tone(16000, 0.1)), rate=1), "sample rate 1 Hz outside"),
        ("rate_2mhz.wav", wav_bytes(pcm16(tone(16000, 0.1)), rate=2_000_000), "outside"),
        ("rate_4ghz.wav", wav_bytes(pcm16(tone(16000, 0.1)), rate=2**32 - 1), "cannot read"),
        ("zero_frames.wav", wav_bytes(b""), "empty audio (zero samples)"),
        ("silent.wav", wav_bytes(b"\x00" * 3200), "silent audio"),
    ],
)
def test_bad_file_names_path_and_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    assert reason in error_for(path).reason


def test_missing_file(tmp_path):
    assert error_for(tmp_path / "nowhere.wav").reason == "no such file"
    (tmp_path / "a_folder.wav").mkdir()
    assert error_for(tmp_path / "a_folder.wav").reason == "no such file"


def test_truncated_data_is_not_read_as_shorter_audio(tmp_path):
    """libsndfile reads a WAV cut mid-data as shorter audio; the loader refuses it."""
    # 16000 samples x 2 bytes; AIFF's SSND chunk adds 8 bytes (offset, block size)
    for name, fmt, declared in (("cut.wav", "WAV", 32000), ("cut.aiff", "AIFF", 32008)):
        full = tmp_path / f"full_{name}"
        sf.write(full, tone(16000, 1.0), 16000, format=fmt, subtype="PCM_16")
        whole = full.read_bytes()
        path = tmp_path / name
        path.write_bytes(whole[: len(whole) // 3])
        err = error_for(path)
        assert "truncated file" in err.reason
        assert f"declares {declared} bytes" in err.reason
    # one byte short of the declared data is still truncated
    path = tmp_path / "one_short.wav"
    path.write_bytes(wav_bytes(pcm16(tone(16000, 0.5)))[:-1])
    assert "truncated" in error_for(path).reason


def test_streamed_wav_without_length_is_read_whole(tmp_path):
    """Writers that stream (pipes) leave 0xFFFFFFFF as the data size: not truncation."""
    x = tone(16000, 0.5)
    path = tmp_path / "stream.wav"
    path.write_bytes(wav_bytes(pcm16(x), data_size=0xFFFFFFFF))
    samples, rate = audio.load(path)
    assert rate == 16000 and len(samples) == len(x)
    np.testing.assert_allclose(samples, x, atol=1 / 32767)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([0.1, np.nan, 0.2], "1 NaN or infinite samples"),
        ([0.1, np.inf, -np.inf, 0.2], "2 NaN or infinite samples"),
    ],
)
def test_non_finite_samples(tmp_path, values, reason):
    path = tmp_path / "bad.wav"
    x = np.concatenate([tone(8000, 0.1), np.asarray(values, np.float32)])
    sf.write(path, x, 8000, subtype="FLOAT")
    err = error_for(path)
    assert reason in err.reason and "first at 0.100 s" in err.reason


def test_samples_that_overflow_when_resampled(tmp_path):
    path = tmp_path / "huge.wav"
    x = np.full(1000, 3e38, np.float32)
    x[::2] *= -1
    sf.write(path, x, 8000, subtype="FLOAT")
    assert "overflowed" in error_for(path).reason


def test_non_finite_channel_survives_mixing_as_an_error(tmp_path):
    path = tmp_path / "stereo_inf.wav"
    x = tone(8000, 0.2, channels=2)
    x[10, 0], x[10, 1] = np.inf, -np.inf  # their mean is NaN, not a finite number
    sf.write(path, x, 8000, subtype="FLOAT")
    assert "NaN or infinite" in error_for(path).reason


# --- too long for the model: checked from the header, before decoding ---------------------------


def test_max_duration_rejects_long_audio_from_the_header(tmp_path, monkeypatch):
    path = tmp_path / "long.flac"
    sf.write(path, tone(8000, 31.0), 8000)
    err = error_for(path, max_duration_s=30)
    assert "too long: 31.00 s > max_duration_s 30 s" in err.reason

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file the header already rejects")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    assert "too long" in error_for(path, max_duration_s=30).reason


def test_max_duration_keeps_audio_at_the_limit(tmp_path):
    path = tmp_path / "thirty.wav"
    sf.write(path, tone(16000, 30.0), 16000)
    samples, rate = audio.load(path, max_duration_s=30)
    assert len(samples) == 30 * 16000 and rate == 16000


# --- usable oddities: multichannel and any sample rate -------------------------------------


def test_six_channels_are_averaged_and_reported(tmp_path):
    path = tmp_path / "surround.wav"
    x = tone(48000, 0.25, channels=6)
    sf.write(path, x, 48000, subtype="FLOAT")
    samples, rate, info = audio.load_with_info(path)
    np.testing.assert_allclose(samples, x.mean(axis=1), atol=1e-6)
    assert (info.channels, info.mixed_to_mono, info.resampled) == (6, True, False)
    assert samples.shape == (len(x),) and rate == 48000


@pytest.mark.parametrize("rate", [SAMPLE_RATE_RANGE[0], 7350, 8000, 11025, 22050, 44100, 96000])
def test_any_rate_is_resampled_to_the_target(tmp_path, rate):
    path = tmp_path / f"r{rate}.wav"
    seconds, freq = 0.5, 300.0
    sf.write(path, tone(rate, seconds, freq), rate, subtype="FLOAT")
    samples, out_rate, info = audio.load_with_info(path, sample_rate=16000)
    assert out_rate == 16000 and samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - round(info.native_frames * 16000 / rate)) <= 1
    assert info.resampled and info.native_rate == rate
    assert info.duration_s == pytest.approx(seconds, abs=2 / min(rate, 16000))
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peak = np.fft.rfftfreq(len(samples), 1 / 16000)[spectrum.argmax()]
    assert peak == pytest.approx(freq, abs=4.0)
    assert np.isfinite(samples).all()
