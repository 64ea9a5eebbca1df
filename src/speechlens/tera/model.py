"""The TERA network and its folder format.

Input: log-mel frames (the ``logmel`` baseline's 80 bins: 25 ms Hann window, 10 ms hop,
natural log), normalised per channel by the training corpus' mean and standard deviation
(stored in the folder), shape ``(batch, frame, n_mels)``. No deltas, no downsampling: one
output frame per log-mel frame (100 Hz).

Network: ``input_proj`` (Linear ``n_mels -> hidden``) feeds ``inputs_embeds`` of a
``transformers.BertModel`` (whose position embedding is frozen to the sinusoidal encoding,
``max_frames`` positions, as TERA's; a constant token-type embedding, LayerNorm, dropout,
then post-LN transformer blocks), as in TERA's Mockingjay-style encoder. The
reconstruction ``head`` (Linear, GELU, LayerNorm, Linear ``hidden -> n_mels``) maps the
last block's output back to the (normalised) log-mel frame; it is used in training only.

Hidden states: layer 0 is the embedding output (the input to the first block), layer ``l``
the output of block ``l`` (post-LN BERT has no final norm). Self-attention block ``l``'s
output projection is ``encoder.encoder.layer[l-1].attention.output.dense``; its input is
the head outputs concatenated head-major (``num_heads * head_dim``).

Folder: ``config.json`` (``{"model_type": "tera", "tera": {...}}`` with the
:class:`TeraConfig` fields) and ``model.safetensors`` (all weights, head included).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from speechlens.schema import defaults as schema_defaults

MODEL_TYPE = "tera"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_ARCHITECTURE = schema_defaults("training.model")  # defaults of the configurable fields


@dataclass
class TeraConfig:
    """Architecture and input normalisation of a TERA model.

    ``mean`` and ``std`` (``n_mels`` floats each) normalise the log-mel input per channel;
    empty lists mean none (mean 0, std 1). ``max_frames`` is the number of positions of the
    (fixed, sinusoidal) position table (3000 = 30 s at 100 frames/s): longer inputs are rejected.
    """

    n_mels: int = 80
    hidden_size: int = _ARCHITECTURE["hidden_size"]
    num_layers: int = _ARCHITECTURE["num_layers"]
    num_heads: int = _ARCHITECTURE["num_heads"]
    intermediate_size: int = _ARCHITECTURE["intermediate_size"]
    dropout: float = _ARCHITECTURE["dropout"]
    max_frames: int = _ARCHITECTURE["max_frames"]
    sample_rate: int = 16000
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"tera: hidden_size {self.hidden_size} is not a multiple of num_heads "
                f"{self.num_heads}"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values and len(values) != self.n_mels:
                raise ValueError(f"tera: {name} has {len(values)} values, n_mels is {self.n_mels}")

    def bert_config(self):
        """The ``transformers.BertConfig`` of the encoder."""
        from transformers import BertConfig

        return BertConfig(
            vocab_size=1,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_act="gelu",
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            max_position_embeddings=self.max_frames,
            type_vocab_size=1,
        )


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """The Transformer's sinusoidal positional encoding ``(length, channels)``: sin on even,
    cos on odd channels, wavelengths from 2 pi to 10000 * 2 pi."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    rate = torch.exp(
        -torch.arange(0, channels, 2, dtype=torch.float64) * (9.210340371976184 / channels)
    )
    table = torch.zeros(length, channels, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: channels // 2])
    return table.float()


class TeraModel(nn.Module):
    """Input projection + BERT encoder + reconstruction head (see the module docstring)."""

    def __init__(self, config: TeraConfig):
        super().__init__()
        from transformers import BertModel

        self.config = config
        h = config.hidden_size
        self.input_proj = nn.Linear(config.n_mels, h)
        self.encoder = BertModel(config.bert_config(), add_pooling_layer=False)
        positions = self.encoder.embeddings.position_embeddings
        positions.weight.data.copy_(sinusoids(config.max_frames, h))
        positions.weight.requires_grad_(False)  # fixed, as TERA's positional encoding
        self.head = nn.Sequential(
            nn.Linear(h, h), nn.GELU(), nn.LayerNorm(h, eps=1e-12), nn.Linear(h, config.n_mels)
        )
        mean = torch.tensor(config.mean or [0.0] * config.n_mels, dtype=torch.float32)
        std = torch.tensor(config.std or [1.0] * config.n_mels, dtype=torch.float32)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def normalise(self, log_mel: torch.Tensor) -> torch.Tensor:
        """``(log_mel - mean) / std`` per channel; ``(..., n_mels)``."""
        return (log_mel - self.mean) / self.std

    def encode(
        self,
        features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        """Run the encoder on normalised features ``(batch, frame, n_mels)``.

        ``attention_mask`` ``(batch, frame)``: 1 for real frames, 0 for padding. Returns the
        ``transformers`` output (``last_hidden_state`` ``(batch, frame, hidden)``, and
        ``hidden_states`` / ``attentions`` when asked).
        """
        if features.shape[1] > self.config.max_frames:
            raise ValueError(
                f"tera: {features.shape[1]} frames; the model has {self.config.max_frames} "
                "positions"
            )
        return self.encoder(
            inputs_embeds=self.input_proj(features),
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Reconstructed normalised log-mel frames ``(batch, frame, n_mels)``."""
        return self.head(self.encode(features, attention_mask).last_hidden_state)

    def attention_projections(self) -> list[nn.Linear]:
        """Output projection of each block's self-attention (block 1 first); the input of
        each is the ``num_heads`` head outputs concatenated head-major."""
        return [layer.attention.output.dense for layer in self.encoder.encoder.layer]


def save(model: TeraModel, folder: str | Path, extra: dict | None = None) -> Path:
    """Write ``config.json`` (+ ``extra`` keys, e.g. training provenance) and
    ``model.safetensors`` into ``folder`` (created); returns ``folder``."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"model_type": MODEL_TYPE, "tera": dataclasses.asdict(model.config), **(extra or {})}
    (folder / CONFIG_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    save_model(model, str(folder / WEIGHTS_NAME))
    return folder


def read_config(folder: str | Path) -> tuple[TeraConfig, dict]:
    """The :class:`TeraConfig` of a saved folder and the whole ``config.json`` record."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"tera: no {CONFIG_NAME} in {folder} (not a TERA model folder)")
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("model_type") != MODEL_TYPE:
        raise ValueError(f"tera: {path} holds a {record.get('model_type')!r} model, not 'tera'")
    return TeraConfig(**record["tera"]), record


def load(folder: str | Path, *, init: str = "pretrained", seed: int = 0) -> TeraModel:
    """The model saved in ``folder``: trained weights, or (``init="random"``) the same
    architecture and normalisation with weights drawn after ``torch.manual_seed(seed)``."""
    from safetensors.torch import load_model

    config, _ = read_config(folder)
    if init == "random":
        torch.manual_seed(seed)
        return TeraModel(config)
    model = TeraModel(config)
    load_model(model, str(Path(folder) / WEIGHTS_NAME))
    return model
