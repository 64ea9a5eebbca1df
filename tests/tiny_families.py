"""Tiny random checkpoints of the families of issue 17, saved with ``save_pretrained``.

Like :mod:`tests.tiny_models`: small widths, real frame arithmetic (wav2vec2 conv stacks,
SeamlessM4T's 80-bin fbank stacked by 2), the feature-extractor config beside the weights.

    path = save_tiny_family("xvector_wavlm", tmp_dir / "xv")
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_models import CONV, ENCODER

TDNN = {"tdnn_dim": (16, 16, 16, 16, 24), "xvector_output_dim": 12, "num_labels": 3}
CONFORMER = {
    "hidden_size": 32,
    "num_attention_heads": 2,
    "conv_depthwise_kernel_size": 5,
    "left_max_position_embeddings": 8,
    "right_max_position_embeddings": 2,
}
SEAMLESS_SMALL = {
    "vocab_size": 64,
    "t2u_vocab_size": 32,
    "char_vocab_size": 32,
    "max_position_embeddings": 64,
    "encoder_layers": 1,
    "encoder_ffn_dim": 32,
    "encoder_attention_heads": 2,
    "decoder_layers": 1,
    "decoder_ffn_dim": 32,
    "decoder_attention_heads": 2,
    "speech_encoder_layers": 2,
    "speech_encoder_attention_heads": 2,
    "speech_encoder_intermediate_size": 64,
    "t2u_encoder_layers": 1,
    "t2u_encoder_ffn_dim": 32,
    "t2u_encoder_attention_heads": 2,
    "t2u_decoder_layers": 1,
    "t2u_decoder_ffn_dim": 32,
    "t2u_decoder_attention_heads": 2,
    "t2u_max_position_embeddings": 64,
    "t2u_variance_predictor_embed_dim": 32,
    "t2u_variance_predictor_hidden_dim": 16,
    "upsample_initial_channel": 64,
    "unit_hifi_gan_vocab_size": 32,
    "unit_embed_dim": 16,
    "lang_embed_dim": 4,
    "spkr_embed_dim": 4,
    "vocoder_num_langs": 2,
    "vocoder_num_spkrs": 2,
}
# MMS (Pratap et al. 2023) pretrained models are wav2vec2 "large" models: stable layer norm,
# layer-normed conv feature encoder with biases, 1280 wide (1b) -- here tiny.
MMS = {
    **CONV,
    **ENCODER,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "conv_bias": True,
    "feat_proj_dropout": 0.0,
}
# Qwen2-Audio: its real 128 mel bins and 1500 positions (the encoder takes 30 s), tiny widths;
# a tiny Qwen2 language model beside it (never built by the adapter).
QWEN2_AUDIO_ENCODER = {
    "num_mel_bins": 128,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "d_model": 32,
    "max_source_positions": 1500,
}
QWEN2_TEXT = {
    "model_type": "qwen2",
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 64,
}

# name -> (family, model class, config class, config kwargs, extractor class, extractor kwargs)
TINY_FAMILIES = {
    "xvector_wav2vec2": (
        "xvector",
        "Wav2Vec2ForXVector",
        "Wav2Vec2Config",
        {**CONV, **ENCODER, **TDNN, "feat_extract_norm": "group"},
        "Wav2Vec2FeatureExtractor",
        {"do_normalize": True, "return_attention_mask": False},
    ),
    "xvector_wavlm": (
        "xvector",
        "WavLMForXVector",
        "WavLMConfig",
        {
            **CONV,
            **ENCODER,
            **TDNN,
            "feat_extract_norm": "layer",
            "do_stable_layer_norm": True,
            "num_buckets": 32,
            "max_bucket_distance": 80,
            "use_weighted_layer_sum": True,
        },
        "Wav2Vec2FeatureExtractor",
        {"do_normalize": True, "return_attention_mask": True},
    ),
    "xvector_unispeech_sat": (
        "xvector",
        "UniSpeechSatForXVector",
        "UniSpeechSatConfig",
        {**CONV, **ENCODER, **TDNN, "feat_extract_norm": "group", "num_clusters": 4},
        "Wav2Vec2FeatureExtractor",
        {"do_normalize": False, "return_attention_mask": False},
    ),
    "w2v_bert": (
        "w2v-bert",
        "Wav2Vec2BertModel",
        "Wav2Vec2BertConfig",
        {**CONFORMER, "num_hidden_layers": 2, "intermediate_size": 64, "output_hidden_size": 32},
        "SeamlessM4TFeatureExtractor",
        {},
    ),
    "seamless_m4t_v2": (
        "seamless-m4t",
        "SeamlessM4Tv2Model",
        "SeamlessM4Tv2Config",
        {**CONFORMER, **SEAMLESS_SMALL},
        "SeamlessM4TFeatureExtractor",
        {},
    ),
    "mms": (
        "wav2vec2",
        "Wav2Vec2Model",
        "Wav2Vec2Config",
        MMS,
        "Wav2Vec2FeatureExtractor",
        {"do_normalize": True, "return_attention_mask": True},
    ),
    "mms_1b_all": (  # MMS-1b-all: the same plus a language adapter in every block
        "wav2vec2",
        "Wav2Vec2Model",
        "Wav2Vec2Config",
        {**MMS, "adapter_attn_dim": 8},
        "Wav2Vec2FeatureExtractor",
        {"do_normalize": True, "return_attention_mask": True},
    ),
    "qwen2_audio": (  # a full Qwen2AudioForConditionalGeneration, as published
        "qwen2-audio",
        "Qwen2AudioForConditionalGeneration",
        "Qwen2AudioConfig",
        {"audio_config": QWEN2_AUDIO_ENCODER, "text_config": QWEN2_TEXT, "audio_token_index": 5},
        "WhisperFeatureExtractor",
        {"feature_size": 128},
    ),
}


def family(name: str) -> str:
    """The adapter family (an ``ADAPTERS`` key) of the tiny checkpoint ``name``."""
    return TINY_FAMILIES[name][0]


def save_tiny_family(name: str, path: str | Path, *, seed: int = 1234) -> Path:
    """Save the tiny random checkpoint ``name`` (a ``TINY_FAMILIES`` key) into ``path``.

    Weights are drawn with ``torch.manual_seed(seed)``, so a folder saved twice is identical.
    """
    import torch
    import transformers

    _, model_cls, config_cls, config_kwargs, fe_cls, fe_kwargs = TINY_FAMILIES[name]
    path = Path(path)
    config = getattr(transformers, config_cls)(**config_kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config)
    if model_cls.endswith("ForXVector"):  # transformers' init leaves x-vectors near 1e-8
        with torch.no_grad():
            for module in (model.projector, *model.tdnn, model.feature_extractor):
                linear = getattr(module, "kernel", module)
                linear.weight.normal_(0.0, 1.5 / linear.weight.shape[1] ** 0.5)
                linear.bias.normal_(0.0, 0.1)
    model.save_pretrained(path)
    extractor_cls = getattr(transformers, fe_cls)
    if fe_cls == "Wav2Vec2FeatureExtractor":
        fe_kwargs = {"feature_size": 1, "sampling_rate": 16000, "padding_value": 0.0, **fe_kwargs}
    extractor_cls(**fe_kwargs).save_pretrained(path)
    return path
