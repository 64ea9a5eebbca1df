"""Tiny random checkpoints of every Hugging Face model family, saved with ``save_pretrained``.

No hub access exists in the tests, so the adapters are exercised on these. The configs are
small (hidden 32, 2 blocks, 2 heads) but keep the real frame arithmetic: the wav2vec2-style
conv stacks have the real kernels and strides (320x downsampling, 400-sample receptive
field) and Whisper keeps 80 mel bins, 1500 source positions and its conv1/conv2 pair.

Variants cover both code paths of the wav2vec2 family: ``feat_extract_norm="group"``
(base models, no exact padding) and ``"layer"`` with ``do_stable_layer_norm`` (large
models, attention masks). Each folder also holds the family's feature-extractor config.

Usage::

    path = save_tiny("wav2vec2", tmp_dir / "wav2vec2")   # -> folder for ``source: path``
"""

from __future__ import annotations

from pathlib import Path

CONV = {
    "conv_dim": (16,) * 7,
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
}
ENCODER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}

# name -> (family, config class, model class, config kwargs, feature-extractor kwargs)
TINY = {
    "wav2vec2": (
        "wav2vec2",
        "Wav2Vec2Config",
        "Wav2Vec2Model",
        {**CONV, **ENCODER, "feat_extract_norm": "group", "do_stable_layer_norm": False},
        {"do_normalize": True, "return_attention_mask": False},
    ),
    "wav2vec2_large": (
        "wav2vec2",
        "Wav2Vec2Config",
        "Wav2Vec2Model",
        {**CONV, **ENCODER, "feat_extract_norm": "layer", "do_stable_layer_norm": True},
        {"do_normalize": True, "return_attention_mask": True},
    ),
    "hubert": (
        "hubert",
        "HubertConfig",
        "HubertModel",
        {**CONV, **ENCODER, "feat_extract_norm": "group", "do_stable_layer_norm": False},
        {"do_normalize": False, "return_attention_mask": False},
    ),
    "wavlm": (
        "wavlm",
        "WavLMConfig",
        "WavLMModel",
        {
            **CONV,
            **ENCODER,
            "feat_extract_norm": "layer",
            "do_stable_layer_norm": True,
            "num_buckets": 32,
            "max_bucket_distance": 80,
        },
        {"do_normalize": True, "return_attention_mask": True},
    ),
    "data2vec_audio": (
        "data2vec-audio",
        "Data2VecAudioConfig",
        "Data2VecAudioModel",
        {**CONV, **ENCODER, "conv_pos_kernel_size": 5, "num_conv_pos_embeddings": 2},
        {"do_normalize": True, "return_attention_mask": True},
    ),
    "whisper": (
        "whisper",
        "WhisperConfig",
        "WhisperForConditionalGeneration",
        {
            "d_model": 32,
            "encoder_layers": 2,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_layers": 1,
            "decoder_attention_heads": 2,
            "decoder_ffn_dim": 64,
            "num_mel_bins": 80,
            "max_source_positions": 1500,
            "max_target_positions": 32,
            "vocab_size": 64,
            "pad_token_id": 1,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "decoder_start_token_id": 2,
            "begin_suppress_tokens": None,
            "suppress_tokens": None,
        },
        {"feature_size": 80},
    ),
}


def family(name: str) -> str:
    """The adapter family (an ``ADAPTERS`` key) of the tiny checkpoint ``name``."""
    return TINY[name][0]


def save_tiny(name: str, path: str | Path, *, seed: int = 1234) -> Path:
    """Save the tiny random checkpoint ``name`` (a ``TINY`` key) into ``path``; return ``path``.

    Weights are drawn with ``torch.manual_seed(seed)``, so a folder saved twice is identical.
    """
    import torch
    import transformers

    _, config_cls, model_cls, config_kwargs, fe_kwargs = TINY[name]
    path = Path(path)
    config = getattr(transformers, config_cls)(**config_kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config)
    model.save_pretrained(path)
    if model_cls.startswith("Whisper"):
        extractor = transformers.WhisperFeatureExtractor(**fe_kwargs)
    else:
        extractor = transformers.Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, padding_value=0.0, **fe_kwargs
        )
    extractor.save_pretrained(path)
    return path
