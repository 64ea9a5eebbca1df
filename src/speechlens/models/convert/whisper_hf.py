"""The transformers side of a converted Whisper: tokenizer, model config, generation config.

Used by :mod:`speechlens.models.convert.ct2_whisper`. The generation config carries what
``WhisperForConditionalGeneration.generate`` reads (transformers
``models/whisper/generation_whisper.py``), as in OpenAI's checkpoints on the hub:
``decoder_start_token_id``, ``no_timestamps_token_id``, ``suppress_tokens`` /
``begin_suppress_tokens`` (from CT2's ``suppress_ids`` / ``suppress_ids_begin``),
``alignment_heads``, ``is_multilingual`` and, for multilingual models, ``lang_to_id``,
``task_to_id`` and a default ``task``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from speechlens.models.convert.ct2 import ConversionError

STORED_DTYPE = "float32"

SPECIAL = {
    "eot": "<|endoftext|>",
    "sot": "<|startoftranscript|>",
    "translate": "<|translate|>",
    "transcribe": "<|transcribe|>",
    "prev": "<|startofprev|>",
    "lm": "<|startoflm|>",
    "no_timestamps": "<|notimestamps|>",
}
MULTILINGUAL_VOCAB = 51865  # English-only Whisper vocabularies have 51864 entries


@dataclass(frozen=True)
class Dims:
    """Sizes of a Whisper model, read off the CT2 variable shapes."""

    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    ffn_dim: int
    num_mel_bins: int
    max_source_positions: int
    max_target_positions: int


def read_vocabulary(src_dir: Path) -> list[str]:
    """The CT2 vocabulary, one token per id: ``vocabulary.json`` (a JSON list of strings) or
    ``vocabulary.txt`` (one token a line)."""
    if (path := src_dir / "vocabulary.json").is_file():
        vocab = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise ConversionError(f"{path}: expected a JSON list of token strings")
        return vocab
    path = src_dir / "vocabulary.txt"
    if not path.is_file():
        raise ConversionError(f"{src_dir}: neither vocabulary.json nor vocabulary.txt")
    vocab = path.read_text(encoding="utf-8").split("\n")
    return vocab[:-1] if vocab[-1] == "" else vocab


def build_tokenizer(src_dir: Path):
    """A ``WhisperTokenizer`` from ``tokenizer.json`` plus any tokens only the vocabulary has.

    Older ``tokenizer.json`` files stop at ``<|notimestamps|>``; the timestamp tokens
    ``<|0.00|>`` ... ``<|30.00|>`` that fill the rest of the vocabulary then come from the
    vocabulary file (added as non-special tokens, as on the Hugging Face hub). Fails unless
    every id of the vocabulary maps to the same token (ids whose vocabulary entry is empty,
    an unused slot, are not compared).
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    spec = json.loads((src_dir / "tokenizer.json").read_text(encoding="utf-8"))
    added = sorted(spec["added_tokens"], key=lambda t: t["id"])
    tok = WhisperTokenizer(
        tokenizer_file=str(src_dir / "tokenizer.json"),
        pad_token=SPECIAL["eot"],
        extra_special_tokens=[t["content"] for t in added if t["special"]],
    )
    vocab = read_vocabulary(src_dir)
    extra = [AddedToken(t, normalized=False, special=False) for t in vocab[len(tok) :]]
    tok.add_tokens(extra)
    got = tok.convert_ids_to_tokens(list(range(len(vocab))))
    bad = [i for i, (g, v) in enumerate(zip(got, vocab, strict=True)) if v and g != v]
    if bad or len(tok) != len(vocab):
        raise ConversionError(
            f"{src_dir}: tokenizer.json and the vocabulary disagree ({len(tok)} vs "
            f"{len(vocab)} tokens; first differing ids {bad[:5]})"
        )
    return tok


def token_ids(tok) -> dict[str, int]:
    """Ids of the :data:`SPECIAL` tokens; unknown tokens map to ``<|endoftext|>``, so fail then."""
    ids = {key: tok.convert_tokens_to_ids(token) for key, token in SPECIAL.items()}
    missing = [SPECIAL[k] for k, i in ids.items() if k != "eot" and i in (None, ids["eot"])]
    if missing:
        raise ConversionError(f"special tokens missing from the tokenizer: {missing}")
    return ids


def build_config(dims: Dims, heads: dict[str, int], ids: dict[str, int]):
    """The HF ``WhisperConfig`` (float32 weights, tied output projection)."""
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.num_mel_bins,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=heads["encoder"],
        decoder_attention_heads=heads["decoder"],
        encoder_ffn_dim=dims.ffn_dim,
        decoder_ffn_dim=dims.ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        bos_token_id=ids["sot"],
        decoder_start_token_id=ids["sot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        dtype=STORED_DTYPE,
    )


def language_ids(ct2_config: dict, tok) -> dict[str, int]:
    """``{"<|en|>": 50259, ...}``: the language tokens the model knows.

    From CT2's ``lang_ids`` when the config lists them (the tokens the model was trained
    with), else every Whisper language token the tokenizer has. Fails on an id that is not
    a language token.
    """
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    if "lang_ids" in ct2_config:
        ids = [int(i) for i in ct2_config["lang_ids"]]
        tokens = tok.convert_ids_to_tokens(ids)
        codes = {f"<|{c}|>" for c in LANGUAGES}
        bad = [(i, t) for i, t in zip(ids, tokens, strict=True) if t not in codes]
        if bad:
            raise ConversionError(f"config.json lang_ids: not language tokens: {bad[:5]}")
        return dict(zip(tokens, ids, strict=True))
    lang = {f"<|{c}|>": tok.convert_tokens_to_ids(f"<|{c}|>") for c in LANGUAGES}
    return {t: i for t, i in lang.items() if i not in (None, tok.unk_token_id)}


def build_generation_config(config, ct2_config: dict, ids: dict[str, int], tok):
    """Whisper generation settings; alignment heads, suppressed ids and languages from CT2.

    Multilingual models get ``lang_to_id``, ``task_to_id`` and ``task="transcribe"``.
    The task matters: ``generate`` (transformers 5) builds the prompt from
    ``decoder_start_token_id``, then the language (given, or detected by the model from
    the ``<|startoftranscript|>`` logits restricted to ``lang_to_id``), then a task token
    only when ``task`` is set (or a language is given, or the old ``forced_decoder_ids``
    name one, as OpenAI's hub configs do with ``[[1, null], [2, <|transcribe|>]]``). Without
    it the prompt is ``<|sot|><|lang|><|notimestamps|>``, a sequence the model never saw
    in training, and greedy decoding loops ("Sie Sie Sie ..."). ``task`` is the
    non-deprecated way to the same prompt ``<|sot|><|lang|><|transcribe|><|notimestamps|>``.
    """
    from transformers import GenerationConfig

    multilingual = config.vocab_size >= MULTILINGUAL_VOCAB
    gen = GenerationConfig(
        decoder_start_token_id=ids["sot"],
        bos_token_id=ids["sot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        max_length=config.max_target_positions,
        no_timestamps_token_id=ids["no_timestamps"],
        prev_sot_token_id=ids["prev"],
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
    )
    if multilingual:
        gen.lang_to_id = language_ids(ct2_config, tok)
        gen.task_to_id = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
        gen.task = "transcribe"
    return gen
