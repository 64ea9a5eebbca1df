"""GE2E speaker encoder (Resemblyzer's ``VoiceEncoder``): mel input, LSTM layers, d-vector.

Model: Wan, Wang, Papir & Lopez Moreno 2018, "Generalized end-to-end loss for speaker
verification" (ICASSP), as trained and published by Resemblyzer 0.1.4
(``resemblyzer/voice_encoder.py``, ``hparams.py``, ``audio.py``): a 3-layer LSTM (40 mel
bins -> 256), then on the last layer's final state a linear layer 256 -> 256, ReLU and L2
normalisation. Weights: ``resemblyzer/pretrained.pt``, converted into a checkpoint folder
by :mod:`speechlens.models.convert.ge2e` (``source: pypi:resemblyzer``).

Input, as ``resemblyzer.preprocess_wav`` then ``wav_to_mel_spectrogram``:

- volume: scaled up (never down) to -30 dBFS RMS (``normalize_volume(..., increase_only=True)``;
  a silent waveform is left as is). Resemblyzer's VAD trimming of long silences is *not*
  applied: it would cut the time axis, and the analyses need frames aligned with the
  corpus' segments;
- mel: ``librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160,
  n_mels=40)`` with librosa >= 0.10's defaults, reimplemented in NumPy (:func:`mel_spectrogram`):
  periodic Hann window of 400 samples (25 ms), hop 160 (10 ms), ``center=True`` with zero
  padding of 200 samples on each side, power spectrum ``|X|^2`` of a 400-point FFT, Slaney
  mel filterbank (0 - 8000 Hz, Slaney area normalisation). Not a log-mel: the LSTM reads
  power values.

Frames: ``n`` samples give ``1 + n // 160`` frames (0 for ``n == 0``); frame ``i`` is the
window over samples ``[160 i - 200, 160 i + 200)``, centred at ``i * 0.01`` s.

Layers (``layer_names``): ``mel`` (layer 0, the model's input, 40 features) and ``lstm.1`` ..
``lstm.3`` (each LSTM layer's output, 256 features), run once over the whole utterance.
Widths differ, so every layer is zero-padded to 256 (``layer_widths``, see
:mod:`speechlens.models.layers`). No attention: ``capabilities`` has ``utterance_level`` only.

Utterance level (``embedding_names``): ``d_vector``, Resemblyzer's ``embed_utterance``
(the GE2E paper's inference): the waveform is cut into partial utterances of 160 frames
(1.6 s) at 1.3 per second (:func:`partial_slices`, zero-padded at the end), each one's
embedding ``relu(linear(h_T)) / ||.||`` is computed, and their mean is L2-normalised.

Random-init control (``init: random``): ``nn.LSTM`` and ``nn.Linear`` of the same sizes with
PyTorch's default initialisation after ``torch.manual_seed(seed)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechlens.models.base import Adapter, AdapterError, ModelSourceError
from speechlens.models.layers import pad_width

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms (mel_window_length)
HOP = 160  # 10 ms (mel_window_step)
PARTIAL_FRAMES = 160  # partials_n_frames: 1.6 s
PARTIAL_RATE = 1.3  # embed_utterance(rate=1.3): partial utterances per second
MIN_COVERAGE = 0.75  # embed_utterance(min_coverage=0.75)
TARGET_DBFS = -30.0  # audio_norm_target_dBFS
INT16_MAX = 2**15 - 1


# ------------------------------------------------------------------------------ input


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Resemblyzer's ``normalize_volume(wav, target_dbfs, increase_only=True)``; silence kept."""
    rms = np.sqrt(np.mean((wav.astype(np.float64) * INT16_MAX) ** 2)) if wav.size else 0.0
    if rms == 0:
        return wav
    change = target_dbfs - 20 * np.log10(rms / INT16_MAX)
    if change < 0:
        return wav
    return (wav * (10 ** (change / 20))).astype(np.float32)


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa ``hz_to_mel(htk=False)``): linear below 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mel = f / f_sp
    above = f >= min_log_hz
    return np.where(
        above, min_log_hz / f_sp + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, mel
    )


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filters(n_mels: int = 40, n_fft: int = N_FFT, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney-normalised triangular filters ``(n_mels, n_fft // 2 + 1)`` from 0 Hz to ``sr / 2``
    (librosa ``filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)``)."""
    fft_hz = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def frame_count(n_samples: int) -> int:
    """``1 + n // 160`` frames (``center=True``), 0 for an empty waveform."""
    n = int(n_samples)
    return 0 if n <= 0 else 1 + n // HOP


def mel_spectrogram(wav: np.ndarray, n_mels: int = 40) -> np.ndarray:
    """Resemblyzer's ``wav_to_mel_spectrogram``: ``(frame, n_mels)`` ``float32`` mel power."""
    wav = np.asarray(wav, dtype=np.float64)
    n = frame_count(len(wav))
    padded = np.pad(wav, N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    return (power @ mel_filters(n_mels).T).astype(np.float32)


def partial_slices(n_samples: int) -> list[slice]:
    """Mel-frame slices of the partial utterances (``VoiceEncoder.compute_partial_slices`` with
    ``rate=1.3``, ``min_coverage=0.75``); the last may reach past the waveform's end."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((SAMPLE_RATE / PARTIAL_RATE) / HOP))
    starts = range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)
    slices = [slice(i, i + PARTIAL_FRAMES) for i in starts]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices = slices[:-1]
    return slices


# ------------------------------------------------------------------------------ adapter


class GE2EAdapter(Adapter):
    """Mel input, LSTM layers and the d-vector of a GE2E encoder; see the module docstring.

    ``source``: a folder written by :mod:`speechlens.models.convert.ge2e` (``config.json``,
    ``model.safetensors``). Options: ``threads``.
    """

    family = "ge2e"
    capabilities = frozenset({"utterance_level"})
    embedding_names = ("d_vector",)

    def __init__(self, source: str | None = None, **kwargs: Any):
        super().__init__(source, **kwargs)
        if self.source is None:
            raise AdapterError(
                "ge2e: a `source` (pypi:resemblyzer or a converted folder) is needed"
            )
        self.sample_rate = SAMPLE_RATE
        self.frame_rate_hz = SAMPLE_RATE / HOP
        self.num_heads = 0
        self.supports_padding = True

    def load(self) -> None:
        if self._loaded:
            return
        from speechlens.models.hf import resolve_device

        folder = Path(self.source).expanduser()
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ModelSourceError(f"ge2e: cannot read {folder / 'config.json'}: {err}") from err
        if config.get("model_type") != self.family:
            raise AdapterError(f"ge2e: {folder} holds a {config.get('model_type')!r} model")
        self.config = config
        self.torch_device = resolve_device(self.device)
        if self.compute_dtype != "float32":
            raise AdapterError("ge2e: compute_dtype must be float32 (a small LSTM)")
        if (threads := self.options.get("threads")) and self.torch_device.type == "cpu":
            torch.set_num_threads(int(threads))
        n_mels, hidden, layers = config["n_mels"], config["hidden_size"], config["num_layers"]
        with torch.random.fork_rng(devices=[]):  # the global generator is left alone
            torch.manual_seed(self.seed)  # the random init; built in VoiceEncoder's order
            lstm = torch.nn.LSTM(n_mels, hidden, layers, batch_first=True)
            linear = torch.nn.Linear(hidden, config["embedding_size"])
            if self.init == "pretrained":
                self._load_weights(folder, lstm, linear)
            # nn.LSTM returns only the last layer's outputs: one module per layer
            self.layers = torch.nn.ModuleList([self._single_layer(lstm, k) for k in range(layers)])
        self.linear = linear
        for module in (self.layers, self.linear):
            module.to(self.torch_device).eval().requires_grad_(False)
        self.layer_names = ("mel", *(f"lstm.{k + 1}" for k in range(layers)))
        self.layer_widths = (n_mels, *([hidden] * layers))
        self.num_layers = len(self.layer_names)
        self.hidden_size = max(self.layer_widths)
        self.embedding_size = int(config["embedding_size"])
        self.n_mels = int(n_mels)
        self._loaded = True

    def _load_weights(self, folder: Path, lstm, linear) -> None:
        from safetensors.torch import load_file

        try:
            state = load_file(folder / "model.safetensors")
        except (OSError, ValueError) as err:
            raise ModelSourceError(
                f"ge2e: cannot read {folder / 'model.safetensors'}: {err}"
            ) from err
        model = torch.nn.ModuleDict({"lstm": lstm, "linear": linear})
        model.load_state_dict(state, strict=True)

    @staticmethod
    def _single_layer(lstm: torch.nn.LSTM, k: int) -> torch.nn.LSTM:
        """Layer ``k`` of a stacked ``nn.LSTM`` as a one-layer ``nn.LSTM`` (same weights)."""
        layer = torch.nn.LSTM(lstm.input_size if k == 0 else lstm.hidden_size, lstm.hidden_size, 1)
        layer.batch_first = True
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(layer, f"{name}_l0").copy_(getattr(lstm, f"{name}_l{k}"))
        return layer

    # ------------------------------------------------------------------ geometry

    def frame_count(self, n_samples: int) -> int:
        return frame_count(n_samples)

    def frame_times(self, n_frames: int) -> np.ndarray:
        """``i * 0.01`` s: frame ``i``'s window is centred on sample ``160 i``."""
        return np.arange(int(n_frames), dtype=np.float64) * HOP / SAMPLE_RATE

    # ------------------------------------------------------------------ forward

    def _run_lstm(self, mels: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Each LSTM layer's outputs ``(frame, hidden)`` per mel ``(frame, n_mels)``."""
        lengths = [len(m) for m in mels]
        keep = [i for i, n in enumerate(lengths) if n > 0]
        out: list[list[np.ndarray]] = [
            [np.zeros((0, self.config["hidden_size"]), np.float32)] * len(self.layers) for _ in mels
        ]
        if not keep:
            return out
        pack = torch.nn.utils.rnn.pack_padded_sequence
        unpack = torch.nn.utils.rnn.pad_packed_sequence
        x = torch.nn.utils.rnn.pad_sequence(
            [torch.from_numpy(mels[i]) for i in keep], batch_first=True
        ).to(self.torch_device)
        counts = torch.tensor([lengths[i] for i in keep])
        with torch.inference_mode():
            for k, layer in enumerate(self.layers):
                packed, _ = layer(pack(x, counts, batch_first=True, enforce_sorted=False))
                x, _ = unpack(packed, batch_first=True)
                y = x.detach().cpu().numpy()
                for b, i in enumerate(keep):
                    out[i][k] = y[b, : lengths[i]].copy()
        return out

    def _embed(self, mels: np.ndarray) -> np.ndarray:
        """``VoiceEncoder.forward``: ``(partial, frame, n_mels)`` -> L2-normed ``(partial, d)``."""
        x = torch.from_numpy(mels).to(self.torch_device)
        with torch.inference_mode():
            for layer in self.layers:
                x, _ = layer(x)
            raw = torch.relu(self.linear(x[:, -1]))
            return (raw / torch.norm(raw, dim=1, keepdim=True)).cpu().numpy()

    def forward_with_embeddings(
        self, batch: Sequence[np.ndarray], *, embeddings: bool = True
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Frame-level layers ``(num_layers, frame, hidden_size)`` and d-vectors ``(1, dim)``."""
        waves = [normalize_volume(w) for w in self._check_batch(batch)]
        counts = [frame_count(len(w)) for w in waves]
        plans = [partial_slices(len(w)) for w in waves]
        # Resemblyzer pads the waveform to the last partial's end before its mel; frames
        # inside the waveform are unchanged by that (center padding is zeros too).
        mels = []
        for w, plan in zip(waves, plans, strict=True):
            total = max(len(w), plan[-1].stop * HOP)
            mels.append(mel_spectrogram(np.pad(w, (0, total - len(w))), self.n_mels))
        lstm = self._run_lstm([m[:n] for m, n in zip(mels, counts, strict=True)])
        hidden = [
            pad_width([m[:n], *layers], self.hidden_size)
            for m, n, layers in zip(mels, counts, lstm, strict=True)
        ]
        if not embeddings:
            return hidden, None
        partials = np.stack([m[s] for m, plan in zip(mels, plans, strict=True) for s in plan])
        embedded = self._embed(partials)
        vectors, start = [], 0
        for plan in plans:
            mean = embedded[start : start + len(plan)].mean(axis=0)
            vectors.append((mean / np.linalg.norm(mean, 2))[None].astype(np.float32))
            start += len(plan)
        return hidden, vectors

    def forward(
        self, batch: Sequence[np.ndarray], *, output_attentions: bool = False
    ) -> list[np.ndarray]:
        if output_attentions:
            raise AdapterError("ge2e: the model has no attention (it is an LSTM)")
        return self.forward_with_embeddings(batch, embeddings=False)[0]

    def embeddings(self, batch: Sequence[np.ndarray]) -> list[np.ndarray]:
        """d-vectors per utterance, ``(1, embedding_size)`` ``float32``."""
        return self.forward_with_embeddings(batch)[1]

    def provenance(self) -> dict[str, Any]:
        self._require_loaded()
        from speechlens.models.hf import weight_checksums

        record = self._base_provenance()
        if self.init == "random":
            record["weights"] = f"random-init seed {self.seed}"
        else:
            record["weights"] = weight_checksums(self.source, None)
        record["torch_version"] = torch.__version__
        return record
