"""Property-based tests of the audio loader: arbitrary bytes (raw, or behind a real WAV/FLAC
header, or real files with fuzzed header fields) either load as finite float32 mono audio
at the requested rate with the duration the file holds, or raise AudioError naming the
file. Never another exception, never a silently wrong result."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from speechlens import audio
from speechlens.audio import SAMPLE_RATE_RANGE, SILENT_PEAK, AudioError

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TARGET = 16000


def wav_bytes(payload: bytes, rate: int, channels: int, bits: int, tag: int, size: int | None):
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * align) % 2**32, align, bits)
    declared = len(payload) if size is None else size
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    body += b"data" + struct.pack("<I", declared) + payload
    return b"RIFF" + struct.pack("<I", len(body) % 2**32) + body


def load_or_error(path: Path):
    """The loader's result with its info, or the AudioError; anything else fails the test."""
    try:
        return audio.load_with_info(path, sample_rate=TARGET)
    except AudioError as err:
        assert err.path == str(path) and str(err).startswith(f"{path}: ")
        assert err.reason.strip()
        return err


def check_result(result, path: Path) -> None:
    """A successful load is finite float32 mono at TARGET Hz with the right duration."""
    if isinstance(result, AudioError):
        return
    samples, rate, info = result
    assert rate == TARGET and info.sample_rate == TARGET and info.path == str(path)
    assert samples.dtype == np.float32 and samples.ndim == 1 and len(samples) > 0
    assert np.isfinite(samples).all()
    assert info.frames == len(samples)
    low, high = SAMPLE_RATE_RANGE
    assert low <= info.native_rate <= high
    expected = info.native_frames * TARGET / info.native_rate
    assert abs(len(samples) - expected) <= 1
    assert info.resampled == (info.native_rate != TARGET)
    assert info.mixed_to_mono == (info.channels > 1)


def tmp_file(suffix: str, content: bytes) -> tuple[tempfile.TemporaryDirectory, Path]:
    folder = tempfile.TemporaryDirectory()
    path = Path(folder.name) / f"fuzz{suffix}"
    path.write_bytes(content)
    return folder, path


@FUZZ
@given(
    suffix=st.sampled_from([".wav", ".flac", ".ogg", ".WAV", ".aiff"]),
    prefix=st.sampled_from([b"", b"RIFF\xff\xff\x00\x00WAVEfmt ", b"fLaC", b"OggS", b"FORM"]),
    data=st.binary(max_size=2048),
)
def test_arbitrary_bytes(suffix, prefix, data):
    folder, path = tmp_file(suffix, prefix + data)
    with folder:
        check_result(load_or_error(path), path)


@FUZZ
@given(
    rate=st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([8000, 16000, 44100, 999, 768001])),
    channels=st.integers(0, 9),
    bits=st.sampled_from([0, 8, 12, 16, 24, 32, 64]),
    tag=st.sampled_from([1, 3, 6, 7, 0xFFFE, 0x0055, 0]),
    size=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    payload=st.binary(max_size=4096),
)
def test_fuzzed_wav_header_fields(rate, channels, bits, tag, size, payload):
    folder, path = tmp_file(".wav", wav_bytes(payload, rate, channels, bits, tag, size))
    with folder:
        result = load_or_error(path)
        check_result(result, path)
        if not isinstance(result, AudioError) and tag == 1 and bits == 16 and size is None:
            # a well-formed PCM-16 file: every whole frame of the payload is audio
            assert result[2].native_frames == len(payload) // (2 * channels)
            assert result[2].channels == channels and result[2].native_rate == rate


@FUZZ
@given(
    pcm=arrays(
        np.int16,
        st.tuples(st.integers(0, 3000), st.integers(1, 4)),
        elements=st.integers(-32768, 32767),
    ),
    rate=st.one_of(st.sampled_from([8000, 16000, 22050, 44100, 48000]), st.integers(1000, 96000)),
    fmt=st.sampled_from([("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "FLOAT")]),
)
def test_real_files_load_exactly(pcm, rate, fmt):
    """Valid files give exactly the mono mix of what was written (resampled), or the one
    error that describes them: empty or silent."""
    folder = tempfile.TemporaryDirectory()
    with folder:
        path = Path(folder.name) / ("x.flac" if fmt[0] == "FLAC" else "x.wav")
        written = pcm if fmt[1] == "PCM_16" else (pcm / 32768).astype(np.float32)
        try:
            sf.write(path, written, rate, format=fmt[0], subtype=fmt[1])
        except sf.LibsndfileError:  # e.g. FLAC's encoder refuses some rates: nothing to load
            reject()
        mono = pcm.astype(np.float64).mean(axis=1) / 32768
        result = load_or_error(path)
        if len(pcm) == 0:  # libsndfile cannot even reopen an empty FLAC it wrote
            assert isinstance(result, AudioError)
            assert "empty" in result.reason or "cannot read" in result.reason
            return
        if np.abs(mono).max() < SILENT_PEAK:
            assert isinstance(result, AudioError) and "silent" in result.reason
            return
        if len(pcm) * TARGET / rate < 0.5:  # resampling leaves no sample
            assert isinstance(result, AudioError) and "too short" in result.reason
            return
        assert not isinstance(result, AudioError), result
        check_result(result, path)
        native, _, info = audio.load_with_info(path)
        assert info.channels == pcm.shape[1] and info.native_frames == len(pcm)
        np.testing.assert_allclose(native, mono, atol=1e-6)
        samples = result[0]
        if rate == TARGET:
            np.testing.assert_array_equal(samples, native)


@settings(max_examples=100, deadline=None)
@given(
    x=arrays(np.float32, st.integers(0, 400), elements=st.floats(width=32)),
    rate=st.integers(1, 200_000),
)
def test_validate_agrees_with_its_definition(x, rate):
    """validate() raises exactly when the rate, length, finiteness or peak rule is broken."""
    finite = np.isfinite(x).all()
    ok = rate > 0 and len(x) > 0 and finite and float(np.abs(x).max()) >= SILENT_PEAK
    try:
        audio.validate(x, rate, "f.wav")
    except AudioError as err:
        assert not ok and err.path == "f.wav"
    else:
        assert ok
