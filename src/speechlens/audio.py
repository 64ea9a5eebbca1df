"""Audio input and output: load, mix to mono, resample (soxr), validate, write WAV.

Pure functions over NumPy arrays. Conventions:

- samples are ``float32`` in ``[-1, 1]`` (full scale = 1.0), shape ``(n,)`` for mono and
  ``(n, channels)`` for multichannel, ``n`` counted in samples (frames);
- sample rates are in Hz, durations in seconds.

Every problem with an input file raises :class:`AudioError`, whose message names the file
and the reason: missing, unreadable, corrupt or unsupported (anything libsndfile cannot
decode); truncated (a WAV/AIFF whose header declares more sample data than the file holds,
which libsndfile would otherwise read silently as shorter audio); a native sample rate
outside :data:`SAMPLE_RATE_RANGE`; longer than a given ``max_duration_s`` (checked from the
header, before decoding); zero samples; NaN or infinite samples; silence.

Multichannel audio is averaged to mono and any supported rate is resampled with soxr;
:class:`AudioInfo` records both, so callers can note them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speechlens.atomic import atomic_path

SILENT_PEAK = 1e-5
"""Peak amplitude (full scale = 1) below which audio counts as silent: about -100 dBFS,
a third of one 16-bit step, so only digital silence (or near it) is rejected."""

SAMPLE_RATE_RANGE = (1000, 768_000)
"""Native sample rates accepted (Hz, inclusive): telephone 8 kHz to high-resolution 768 kHz
and anything between, with margin; outside it a header is taken to be corrupt (a rate of
1 Hz would make resampling allocate thousands of samples per input sample)."""

RESAMPLE_QUALITY = "HQ"
PCM16_SCALE = 32767


class AudioError(ValueError):
    """An audio file that cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`load_with_info` read and what it did to the samples.

    ``native_rate`` (Hz), ``channels`` and ``native_frames`` (samples per channel) describe
    the file; ``sample_rate`` (Hz) and ``frames`` the returned array; ``mixed_to_mono`` and
    ``resampled`` say whether the channels were averaged and whether soxr resampled.
    """

    path: str
    format: str
    subtype: str
    channels: int
    native_rate: int
    native_frames: int
    sample_rate: int
    frames: int
    mixed_to_mono: bool
    resampled: bool

    @property
    def duration_s(self) -> float:
        """Duration of the returned samples in seconds."""
        return self.frames / self.sample_rate


_CHUNK_SIZE = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}  # placeholders of streamed WAVs: length unknown


def _read(
    path: str | os.PathLike, max_duration_s: float | None = None
) -> tuple[np.ndarray, int, str, str]:
    """Read a file with soundfile (WAV, FLAC, OGG, … as libsndfile supports).

    Returns ``(samples, rate, format, subtype)``: float32 samples of shape
    ``(n, channels)``, the file's sample rate in Hz, and libsndfile's format names.
    Raises :class:`AudioError` for a missing, unreadable, corrupt, truncated or unsupported
    file, a rate outside :data:`SAMPLE_RATE_RANGE`, or (from the header, before decoding)
    audio longer than ``max_duration_s`` seconds.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    try:
        with sf.SoundFile(str(path)) as f:
            rate = int(f.samplerate)
            _check_header(path, f, rate, max_duration_s)
            samples = f.read(dtype="float32", always_2d=True)
            return samples, rate, f.format, f.subtype
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, OSError, MemoryError) as err:
        if isinstance(err, AudioError):
            raise
        raise AudioError(path, f"cannot read audio ({_one_line(err)})") from err


def _check_header(path: Path, f: sf.SoundFile, rate: int, max_duration_s: float | None) -> None:
    """Reject a truncated file, an implausible rate or too long audio before decoding."""
    low, high = SAMPLE_RATE_RANGE
    if not low <= rate <= high:
        raise AudioError(path, f"sample rate {rate} Hz outside the supported {low}-{high} Hz")
    for chunk, declared, present in _CHUNK_SIZE.findall(f.extra_info):
        declared, present = int(declared), int(present)
        if declared > present and declared not in _UNKNOWN_SIZES:
            raise AudioError(
                path,
                f"truncated file: the header declares {declared} bytes of audio ({chunk!r} "
                f"chunk), the file holds {present}",
            )
    if max_duration_s is not None and f.frames / rate > max_duration_s:
        raise AudioError(
            path, f"too long: {f.frames / rate:.2f} s > max_duration_s {max_duration_s:g} s"
        )


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels of ``(n, channels)`` samples into ``(n,)``; ``(n,)`` passes."""
    if samples.ndim == 1:
        return samples
    if samples.shape[1] == 1:
        return samples[:, 0]
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, caught by validate
        return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample ``(n,)`` or ``(n, channels)`` samples from ``rate`` to ``target_rate`` Hz.

    Uses soxr at high quality; returns float32 with about ``n * target_rate / rate`` samples.
    Equal rates and empty input are returned unchanged.
    """
    if rate == target_rate or len(samples) == 0:
        return samples
    out = soxr.resample(np.ascontiguousarray(samples), rate, target_rate, quality=RESAMPLE_QUALITY)
    return out.astype(np.float32, copy=False)


def validate(samples: np.ndarray, sample_rate: int, path: str | os.PathLike) -> None:
    """Raise :class:`AudioError` naming ``path`` if the samples cannot be used.

    Rejects: a non-positive ``sample_rate`` (Hz); zero-length audio; NaN or infinite
    samples; silence (peak ``|x|`` below :data:`SILENT_PEAK`, full scale = 1).
    """
    if sample_rate <= 0:
        raise AudioError(path, f"invalid sample rate {sample_rate} Hz")
    if samples.size == 0:
        raise AudioError(path, "empty audio (zero samples)")
    bad = ~np.isfinite(samples)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise AudioError(
            path,
            f"{int(bad.sum())} NaN or infinite samples (first at {first / sample_rate:.3f} s)",
        )
    peak = float(np.abs(samples).max())
    if peak < SILENT_PEAK:
        raise AudioError(path, f"silent audio (peak {peak:.2e} < {SILENT_PEAK:.0e} full scale)")


def load_with_info(
    path: str | os.PathLike,
    *,
    sample_rate: int | None = None,
    mono: bool = True,
    check: bool = True,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, int, AudioInfo]:
    """Load an audio file; returns ``(samples, sample_rate, info)``.

    ``samples`` are float32, ``(n,)`` when ``mono`` (channels averaged) else
    ``(n, channels)``; ``sample_rate`` is the file's rate unless ``sample_rate`` (Hz) asks
    for another, in which case soxr resamples (high quality). With ``check`` the samples are
    :func:`validate`-d after mixing and before resampling, and again (finite, non-empty)
    after it. Audio longer than ``max_duration_s`` seconds (None: no limit) is rejected from
    its header, before decoding. Raises :class:`AudioError`.
    """
    data, native_rate, fmt, subtype = _read(path, max_duration_s)
    channels = data.shape[1]
    if mono:
        data = to_mono(data)
    if check:
        validate(data, native_rate, path)
    target = native_rate if sample_rate is None else int(sample_rate)
    out = resample(data, native_rate, target)
    if check and len(out) == 0:
        raise AudioError(path, f"too short: {len(data)} samples at {native_rate} Hz")
    if check and out is not data and not np.isfinite(out).all():
        raise AudioError(
            path, f"resampling {native_rate} -> {target} Hz overflowed (samples far beyond 1.0)"
        )
    info = AudioInfo(
        path=str(path),
        format=fmt,
        subtype=subtype,
        channels=channels,
        native_rate=native_rate,
        native_frames=len(data),
        sample_rate=target,
        frames=len(out),
        mixed_to_mono=mono and channels > 1,
        resampled=target != native_rate,
    )
    return out, target, info


def load(
    path: str | os.PathLike,
    *,
    sample_rate: int | None = None,
    mono: bool = True,
    check: bool = True,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Load an audio file; returns ``(samples, sample_rate)``.

    Float32 samples of shape ``(n,)`` (``mono``, channels averaged) or ``(n, channels)``,
    resampled with soxr to ``sample_rate`` Hz when given. See :func:`load_with_info` for
    what was done to the file (mixing, resampling).
    """
    samples, rate, _ = load_with_info(
        path, sample_rate=sample_rate, mono=mono, check=check, max_duration_s=max_duration_s
    )
    return samples, rate


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples (full scale = 1) to int16: clipped to ``[-1, 1]``, scaled by 32767.

    NaN (which cannot be represented) raises ``ValueError``.
    """
    samples = np.asarray(samples)
    if np.isnan(samples).any():
        raise ValueError("cannot write NaN samples")
    clipped = np.clip(samples, -1.0, 1.0)
    return np.rint(clipped * PCM16_SCALE).astype(np.int16)


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Write ``(n,)`` or ``(n, channels)`` samples as a 16-bit PCM WAV at ``sample_rate`` Hz.

    Samples outside ``[-1, 1]`` are clipped. The file is written under a temporary name
    and renamed into place (:func:`speechlens.atomic.atomic_path`).
    """
    pcm = to_pcm16(samples)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), pcm, int(sample_rate), format="WAV", subtype="PCM_16")


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__
