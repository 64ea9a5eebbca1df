"""ECAPA-TDNN speaker encoders in SpeechBrain's checkpoint format (no SpeechBrain at run time).

ECAPA-TDNN: Desplanques, Thienpondt & Demuynck 2020, "ECAPA-TDNN: Emphasized Channel
Attention, Propagation and Aggregation in TDNN Based Speaker Verification"; the code that
defines it here is SpeechBrain's (``speechbrain.lobes.models.ECAPA_TDNN``, v1.1.2), re-written
with the same parameter names, so that a checkpoint such as ``speechbrain/spkrec-ecapa-voxceleb``
(``hyperparams.yaml`` + ``embedding_model.ckpt``) loads with strict key matching. SpeechBrain
itself needs torchaudio, which this project does not install; a test compares this module and
its features with SpeechBrain's own (random init, same state dict, same outputs). The network
itself is :mod:`speechlens.models.ecapa_net`.

Input features, SpeechBrain's ``Fbank`` + ``InputNormalization(norm_type="sentence")`` as the
checkpoint's ``hyperparams.yaml`` configures them: STFT with a 25 ms periodic Hamming window,
10 ms hop, ``center=True`` with zero padding (``1 + n // 160`` frames, frame ``m`` centred on
sample ``160 m``: ``0.01 m`` s), power spectrum, SpeechBrain's triangular mel filters (centres
evenly spaced in mel; each filter's half-width in Hz is the gap to the previous centre),
``10 log10(max(x, 1e-10))`` floored at 80 dB below the utterance's maximum, then minus the
utterance's mean over frames (``std_norm: False``; divided by its std when true).

Layers (``layer_names``), all on the 10 ms grid: ``fbank`` (the normalised filterbank the
network sees), ``tdnn`` (the first TDNN block), ``se_res2.1 ..`` (each SE-Res2Net block's
output), ``mfa`` (multi-layer feature aggregation: the blocks' outputs concatenated and
mixed by a 1x1 TDNN block). Widths differ (80, 1024, ..., 3072) and are zero-padded to the
widest (:mod:`speechlens.models.layers`). Utterance level: ``embedding`` (attentive
statistics pooling, batch norm, linear: the speaker embedding, 192 for spkrec-ecapa).

Convolutions pad "same" by *reflection* (SpeechBrain's default), so a zero-padded batch would
change the last frames: utterances run alone or with others of the same length. An
utterance needs more frames than the widest padding (5 for dilation 4, kernel 3: 640 samples).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from speechlens.models.base import Adapter, AdapterError, ModelSourceError
from speechlens.models.ecapa_net import ECAPA_TDNN
from speechlens.models.hf import resolve_device, resolve_dtype, sha256_file

FILES = ("hyperparams.yaml", "embedding_model.ckpt")
ECAPA_CLASS = "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN"
FBANK_CLASS = "speechbrain.lobes.features.Fbank"
NORM_CLASS = "speechbrain.processing.features.InputNormalization"
ECAPA_ARGS = (
    "input_size",
    "lin_neurons",
    "channels",
    "kernel_sizes",
    "dilations",
    "attention_channels",
    "res2net_scale",
    "se_channels",
    "global_context",
)

# ---------------------------------------------------------------------- hyperparams.yaml


class _New(dict):
    """A ``!new:<class>`` node: its keyword arguments, and the class in ``cls``."""

    cls = ""


class _Ref(str):
    """A ``!ref <name>`` node."""


class _HyperLoader(yaml.SafeLoader):
    """Reads HyperPyYAML without executing it: ``!new:`` nodes become :class:`_New`,
    ``!ref`` nodes :class:`_Ref`, other tags their plain value."""


def _construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    if suffix.startswith("new:"):
        new = _New(value if isinstance(value, dict) else {})
        new.cls = suffix[4:]
        return new
    if suffix == "ref":
        return _Ref(value)
    return value


_HyperLoader.add_multi_constructor("!", lambda ld, suffix, node: _construct(ld, suffix, node))


def read_hyperparams(path: Path) -> dict[str, Any]:
    """The ECAPA, Fbank and normalisation settings of a SpeechBrain ``hyperparams.yaml``."""
    with open(path, encoding="utf-8") as fh:
        top = yaml.load(fh, Loader=_HyperLoader)  # noqa: S506 (a SafeLoader subclass)

    def resolve(value: Any, where: str) -> Any:
        if isinstance(value, _Ref):
            match = re.fullmatch(r"\s*<([\w.]+)>\s*", value)
            if not match or match.group(1) not in top:
                raise AdapterError(f"{path}: {where}: cannot resolve !ref {value!r}")
            return resolve(top[match.group(1)], where)
        if isinstance(value, list):
            return [resolve(v, where) for v in value]
        return value

    def section(key: str, cls: str, required: bool = True) -> dict[str, Any]:
        node = top.get(key)
        if node is None and not required:
            return {}
        if not isinstance(node, _New) or node.cls != cls:
            raise AdapterError(f"{path}: `{key}` must be `!new:{cls}` (found {node!r:.80})")
        return {k: resolve(v, f"{key}.{k}") for k, v in node.items()}

    return {
        "embedding_model": section("embedding_model", ECAPA_CLASS),
        "compute_features": section("compute_features", FBANK_CLASS),
        "mean_var_norm": section("mean_var_norm", NORM_CLASS, required=False),
        "sample_rate": int(resolve(top.get("sample_rate", 16000), "sample_rate")),
    }


# ---------------------------------------------------------------------- features


def mel_filters(sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """SpeechBrain's triangular filters ``(n_fft // 2 + 1, n_mels)``, float32 as it builds them."""
    to_mel = lambda hz: 2595 * math.log10(1 + hz / 700)  # noqa: E731
    mel = torch.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    band = (hz[1:] - hz[:-1])[:-1]
    central = hz[1:-1]
    freqs = torch.linspace(0, sr // 2, n_fft // 2 + 1)
    slope = (freqs[None, :] - central[:, None]) / band[:, None]
    return torch.clamp(torch.minimum(slope + 1.0, 1.0 - slope), min=0.0).T


class Fbank:
    """SpeechBrain's ``Fbank`` (log mel, no deltas or context) and sentence normalisation."""

    def __init__(self, settings: dict[str, Any], norm: dict[str, Any], sample_rate: int):
        unsupported = {"deltas", "context", "requires_grad"} & {k for k, v in settings.items() if v}
        if unsupported or settings.get("filter_shape", "triangular") != "triangular":
            raise AdapterError(f"ecapa: unsupported Fbank settings {settings}")
        if norm and (norm.get("norm_type", "global") != "sentence"):
            raise AdapterError(f"ecapa: mean_var_norm must be norm_type: sentence, got {norm}")
        self.sample_rate = int(settings.get("sample_rate", sample_rate))
        self.n_fft = int(settings.get("n_fft", 400))
        self.win = int(round(self.sample_rate / 1000 * settings.get("win_length", 25)))
        self.hop = int(round(self.sample_rate / 1000 * settings.get("hop_length", 10)))
        self.n_mels = int(settings.get("n_mels", 40))
        f_max = settings.get("f_max") or self.sample_rate // 2
        self.filters = mel_filters(
            self.sample_rate, self.n_fft, self.n_mels, settings.get("f_min", 0), f_max
        )
        self.window = torch.hamming_window(self.win)
        self.normalize = bool(norm)
        self.std_norm = bool(norm.get("std_norm", True)) if norm else False

    def frames(self, n_samples: int) -> int:
        """STFT frames with ``center=True``: ``1 + n // hop``."""
        return 1 + int(n_samples) // self.hop

    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        """``(batch, sample)`` equal-length waveforms -> ``(batch, frame, n_mels)``."""
        spec = torch.stft(
            waves,
            self.n_fft,
            self.hop,
            self.win,
            self.window.to(waves.device),
            center=True,
            pad_mode="constant",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        power = torch.view_as_real(spec).pow(2).sum(-1).transpose(1, 2)
        db = 10 * torch.log10(torch.clamp(power @ self.filters.to(power.device), min=1e-10))
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - 80.0)
        if not self.normalize:
            return db
        mean = db.mean(dim=1, keepdim=True)
        if self.std_norm:
            std = (db - mean).square().mean(dim=1, keepdim=True).sqrt()
            return (db - mean) / std.clamp(min=1e-10)
        return db - mean


# ---------------------------------------------------------------------- adapter


class EcapaAdapter(Adapter):
    """ECAPA-TDNN frame-level layers and speaker embeddings; see the module docstring.

    ``source``: a folder holding ``hyperparams.yaml`` and ``embedding_model.ckpt``, or a hub id
    (``speechbrain/spkrec-ecapa-voxceleb``; pin ``revision``) read through the huggingface_hub
    cache. Options: ``threads``.
    """

    family = "ecapa"
    capabilities = frozenset({"utterance_level"})
    embedding_names = ("embedding",)

    def __init__(self, source: str | None = None, **kwargs: Any):
        super().__init__(source, **kwargs)
        if self.source is None:
            raise AdapterError("ecapa: a model `source` (folder or hub id) is required")
        self._files: dict[str, Path] = {}

    def _file(self, name: str) -> Path:
        """``name`` from the local folder or the huggingface_hub cache (or the hub)."""
        folder = Path(self.source).expanduser()
        if folder.is_dir():
            if not (folder / name).is_file():
                raise ModelSourceError(
                    f"ecapa: {folder} has no {name}; a SpeechBrain ECAPA checkpoint folder "
                    f"holds {' and '.join(FILES)}"
                )
            return folder / name
        if self.source.startswith(("/", ".", "~")):
            raise ModelSourceError(f"ecapa: the local model folder {self.source!r} does not exist")
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(self.source, name, revision=self.revision))
        except Exception as err:  # offline, unknown repo, missing file: one clear message
            rev = f" --revision {self.revision}" if self.revision else ""
            raise ModelSourceError(
                f"cannot load {name} of SpeechBrain model {self.source!r} (revision "
                f"{self.revision or 'unpinned'}): not a local folder and not in the Hugging Face "
                f"hub or cache ({type(err).__name__}: {err}). Point `source:` at a folder "
                f"holding {' and '.join(FILES)}, or populate the cache where there is network: "
                f"`hf download {self.source}{rev} {' '.join(FILES)}`, then run with "
                "HF_HUB_OFFLINE=1."
            ) from err

    def load(self) -> None:
        if self._loaded:
            return
        self.torch_device = resolve_device(self.device)
        self.torch_dtype = resolve_dtype(self.compute_dtype, self.torch_device)
        threads = self.options.get("threads")
        if threads and self.torch_device.type == "cpu":
            torch.set_num_threads(int(threads))
        self._files = {"hyperparams.yaml": self._file("hyperparams.yaml")}
        hp = read_hyperparams(self._files["hyperparams.yaml"])
        kwargs = dict(hp["embedding_model"])
        for key, default in (("device", None), ("dropout", 0.0), ("groups", None)):
            value = kwargs.pop(key, default)
            if key == "groups" and value is not None and set(value) != {1}:
                raise AdapterError(f"ecapa: embedding_model.groups {value} unsupported (1 only)")
        unknown = set(kwargs) - set(ECAPA_ARGS)
        if unknown:
            raise AdapterError(f"ecapa: unsupported embedding_model settings {sorted(unknown)}")
        self.fbank = Fbank(hp["compute_features"], hp["mean_var_norm"], hp["sample_rate"])
        if kwargs.get("input_size") != self.fbank.n_mels:
            raise AdapterError(
                f"ecapa: embedding_model.input_size {kwargs.get('input_size')} != "
                f"compute_features.n_mels {self.fbank.n_mels}"
            )
        torch.manual_seed(self.seed)
        model = ECAPA_TDNN(**kwargs)
        if self.init == "pretrained":
            self._files["embedding_model.ckpt"] = self._file("embedding_model.ckpt")
            state = torch.load(
                self._files["embedding_model.ckpt"], map_location="cpu", weights_only=True
            )
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise AdapterError(
                    f"ecapa: {self._files['embedding_model.ckpt']} does not match the "
                    f"hyperparams' ECAPA_TDNN: {err}"
                ) from err
        self.model = model.to(self.torch_device, self.torch_dtype).eval().requires_grad_(False)
        channels = list(kwargs.get("channels", (512, 512, 512, 512, 1536)))
        blocks = len(channels) - 2
        self.layer_names = ("fbank", "tdnn", *(f"se_res2.{i + 1}" for i in range(blocks)), "mfa")
        self.layer_widths = (self.fbank.n_mels, *channels[:-1], channels[-1])
        self.num_layers = len(self.layer_names)
        self.hidden_size = max(self.layer_widths)
        self.embedding_size = int(kwargs.get("lin_neurons", 192))
        self.num_heads = 0
        self.sample_rate = self.fbank.sample_rate
        self.frame_rate_hz = self.sample_rate / self.fbank.hop
        self.supports_padding = False
        self._loaded = True

    # ------------------------------------------------------------------ geometry

    def frame_count(self, n_samples: int) -> int:
        """``1 + n // hop`` frames; 0 when too few for the widest reflection padding."""
        frames = self.fbank.frames(n_samples)
        return frames if frames > self.model.max_pad else 0

    def frame_times(self, n_frames: int) -> np.ndarray:
        """``m * hop / sr`` s: STFT frame ``m`` is centred on sample ``m * hop``."""
        return np.arange(int(n_frames), dtype=np.float64) * self.fbank.hop / self.sample_rate

    # ------------------------------------------------------------------ forward

    def features(self, waves: list[np.ndarray]) -> torch.Tensor:
        """Normalised filterbanks ``(batch, frame, n_mels)`` of equal-length waveforms."""
        batch = torch.from_numpy(np.stack(waves)).to(self.torch_device)
        return self.fbank(batch.float()).to(self.torch_dtype)

    def forward(
        self, batch: Sequence[np.ndarray], *, output_attentions: bool = False
    ) -> list[np.ndarray]:
        if output_attentions:
            raise AdapterError("ecapa: this model family has no attention")
        return self.forward_with_embeddings(batch, embeddings=False)[0]

    def embeddings(self, batch: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Speaker embeddings per utterance, ``(1, lin_neurons)`` ``float32``."""
        return self.forward_with_embeddings(batch)[1]

    def forward_with_embeddings(
        self, batch: Sequence[np.ndarray], *, embeddings: bool = True
    ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Frame-level layers and embeddings in one pass (utterances of equal length batched)."""
        waves = self._check_batch(batch)
        counts = [self.frame_count(len(w)) for w in waves]
        if embeddings and 0 in counts:
            i = counts.index(0)
            raise AdapterError(f"ecapa: utterance {i} ({len(waves[i])} samples) is too short")
        hidden: list[Any] = [
            np.zeros((self.num_layers, 0, self.hidden_size), np.float32) for _ in waves
        ]
        vectors: list[Any] = [None] * len(waves)
        by_length: dict[int, list[int]] = {}
        for i, c in enumerate(counts):
            if c:
                by_length.setdefault(len(waves[i]), []).append(i)
        for group in by_length.values():
            with torch.inference_mode():
                feats = self.features([waves[i] for i in group])
                layers, embedded = self.model.layers(feats)
            for b, i in enumerate(group):
                stacked = np.zeros((self.num_layers, counts[i], self.hidden_size), np.float32)
                for layer, x in enumerate([feats, *layers]):
                    stacked[layer, :, : x.shape[-1]] = x[b].float().cpu().numpy()
                hidden[i] = stacked
                if embeddings:
                    vectors[i] = embedded[b : b + 1].float().cpu().numpy()
        return hidden, vectors

    def provenance(self) -> dict[str, Any]:
        self._require_loaded()
        record = self._base_provenance()
        record["weights"] = (
            f"random-init seed {self.seed}"
            if self.init == "random"
            else {name: sha256_file(path) for name, path in self._files.items()}
        )
        record["torch_version"] = torch.__version__
        return record
