"""Model adapters and converters, one file per model family (see DESIGN.md)."""

from speechlens.models.base import Adapter
from speechlens.models.spectral import LogMelAdapter, MfccAdapter
from speechlens.models.wav2vec2 import (
    Data2VecAudioAdapter,
    HubertAdapter,
    Wav2Vec2Adapter,
    WavLMAdapter,
)
from speechlens.models.whisper import WhisperAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "whisper": WhisperAdapter,
    "wav2vec2": Wav2Vec2Adapter,
    "hubert": HubertAdapter,
    "wavlm": WavLMAdapter,
    "data2vec-audio": Data2VecAudioAdapter,
    "logmel": LogMelAdapter,
    "mfcc": MfccAdapter,
}
"""Model family name (the config's ``adapter:``) -> adapter class; the only registry."""
