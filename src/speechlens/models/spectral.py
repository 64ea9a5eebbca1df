"""Spectral baselines without weights: log-mel filterbank energies and MFCCs.

Both use ``transformers.audio_utils`` (NumPy): a 25 ms Hann window (400 samples at
16 kHz) zero-padded to a 512-point FFT, a 10 ms hop (160 samples), power spectrum,
an HTK-scale triangular mel filterbank from 20 Hz to ``sample_rate / 2`` and the natural
log (floor 1e-10). ``mfcc`` adds an orthonormal DCT-II over the mel axis and keeps the
first 13 coefficients (c0 included, no deltas).

Frames are Kaldi-style (no centring, no padding): frame ``i`` covers samples
``[i * hop, i * hop + win)``, so ``n`` samples give ``1 + (n - win) // hop`` frames (0
when ``n < win``), and frame ``i`` is centred at ``(i * hop + win / 2) / sr`` s (12.5 ms,
22.5 ms, ...). Each utterance is processed on its own, so batching is trivially exact.

The store sees one "layer" (``num_layers == 1``) and no attention heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.fft import dct

from speechlens.models.base import Adapter, AdapterError

WINDOW_S = 0.025
HOP_S = 0.010
F_MIN = 20.0
LOG_FLOOR = 1e-10


class LogMelAdapter(Adapter):
    """Log-mel filterbank energies, ``(1, frame, n_mels)`` per utterance.

    Options: ``n_mels`` (default 80), ``sample_rate`` (Hz, default 16000; the window and
    hop stay 25 ms and 10 ms), ``threads`` (ignored).
    """

    family = "logmel"
    capabilities = frozenset({"spectral"})
    option_names = ("threads", "n_mels", "sample_rate")

    def __init__(self, source: str | None = None, **kwargs: Any):
        super().__init__(source, **kwargs)
        if self.source is not None:
            raise AdapterError(f"{self.family}: takes no `source` (it has no weights)")
        if self.init != "pretrained":
            raise AdapterError(f"{self.family}: has no weights, so init must be 'pretrained'")
        self.sample_rate = int(self.options.get("sample_rate", 16000))
        self.n_mels = int(self.options.get("n_mels", 80))
        self.win_length = round(WINDOW_S * self.sample_rate)
        self.hop_length = round(HOP_S * self.sample_rate)
        self.fft_length = 1 << (self.win_length - 1).bit_length()
        self.num_layers = 1
        self.num_heads = 0
        self.hidden_size = self.n_mels
        self.frame_rate_hz = self.sample_rate / self.hop_length
        self.supports_padding = True

    def load(self) -> None:
        from transformers.audio_utils import mel_filter_bank, window_function

        self.window = window_function(self.win_length, "hann", periodic=True)
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=self.fft_length // 2 + 1,
            num_mel_filters=self.n_mels,
            min_frequency=F_MIN,
            max_frequency=self.sample_rate / 2,
            sampling_rate=self.sample_rate,
            norm=None,
            mel_scale="htk",
        )
        self._loaded = True

    def frame_count(self, n_samples: int) -> int:
        """``1 + (n - win) // hop`` frames, 0 when ``n < win``."""
        n = int(n_samples)
        return 0 if n < self.win_length else 1 + (n - self.win_length) // self.hop_length

    def frame_times(self, n_frames: int) -> np.ndarray:
        """``(i * hop + win / 2) / sr`` s."""
        i = np.arange(int(n_frames), dtype=np.float64)
        return (i * self.hop_length + self.win_length / 2) / self.sample_rate

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """Log-mel energies ``(frame, n_mels)`` of one waveform, ``float32``."""
        from transformers.audio_utils import spectrogram

        if self.frame_count(len(wave)) == 0:
            return np.zeros((0, self.n_mels), np.float32)
        spec = spectrogram(
            wave,
            self.window,
            frame_length=self.win_length,
            hop_length=self.hop_length,
            fft_length=self.fft_length,
            power=2.0,
            center=False,
            mel_filters=self.mel_filters,
            mel_floor=LOG_FLOOR,
            log_mel="log",
        )
        return np.ascontiguousarray(spec.T, dtype=np.float32)

    def features(self, wave: np.ndarray) -> np.ndarray:
        """Features ``(frame, hidden_size)`` of one waveform."""
        return self.log_mel(wave)

    def forward(
        self, batch: Sequence[np.ndarray], *, output_attentions: bool = False
    ) -> list[np.ndarray]:
        if output_attentions:
            raise AdapterError(f"{self.family}: has no attention to return")
        return [self.features(w)[None] for w in self._check_batch(batch)]

    def provenance(self) -> dict[str, Any]:
        record = self._base_provenance()
        record["weights"] = "none (fixed signal-processing transform)"
        record["parameters"] = {
            "sample_rate": self.sample_rate,
            "win_length": self.win_length,
            "hop_length": self.hop_length,
            "fft_length": self.fft_length,
            "window": "hann",
            "n_mels": self.n_mels,
            "f_min": F_MIN,
            "mel_scale": "htk",
            "log_floor": LOG_FLOOR,
            "features": self.hidden_size,
        }
        return record


class MfccAdapter(LogMelAdapter):
    """MFCCs (orthonormal DCT-II of the log-mel energies), ``(1, frame, n_mfcc)``.

    Options: ``n_mfcc`` (default 13), ``n_mels`` (default 80), ``sample_rate``.
    """

    family = "mfcc"
    option_names = ("threads", "n_mels", "sample_rate", "n_mfcc")

    def __init__(self, source: str | None = None, **kwargs: Any):
        super().__init__(source, **kwargs)
        self.n_mfcc = int(self.options.get("n_mfcc", 13))
        if not 1 <= self.n_mfcc <= self.n_mels:
            raise AdapterError(f"mfcc: n_mfcc must be in 1..n_mels ({self.n_mels})")
        self.hidden_size = self.n_mfcc

    def features(self, wave: np.ndarray) -> np.ndarray:
        coeffs = dct(self.log_mel(wave).astype(np.float64), type=2, norm="ortho", axis=-1)
        return np.ascontiguousarray(coeffs[:, : self.n_mfcc], dtype=np.float32)

    def provenance(self) -> dict[str, Any]:
        record = super().provenance()
        record["parameters"]["dct"] = "type-II, orthonormal"
        return record
