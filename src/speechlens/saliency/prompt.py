"""The decoder prompt of each utterance: Whisper's start, language and task tokens.

Multilingual Whisper models are prompted, as in training and in ``generate``, with
``<|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>`` (Radford et al. 2022,
"Robust Speech Recognition via Large-Scale Weak Supervision", section 2.3), the language
being the utterance's. English-only (``.en``) models keep their own prompt (the tokenizer's
``prefix_tokens``: ``<|startoftranscript|> <|notimestamps|>``).

The corpus' ``language`` column holds BCP-47 tags or espeak-ng voice codes (``en-us``,
``pt-BR``, ``tr``, ``cmn``): the primary subtag, lower-cased, names the language, with the
few codes where Whisper's token differs mapped by :data:`ALIASES` (``cmn`` -> ``zh``,
``jv`` -> ``jw``, ...). A model is multilingual when its generation config says so
(``is_multilingual``) or, without that flag, when its vocabulary has at least 51865 tokens
(OpenAI's English-only vocabularies have 51864). Its languages are those of the generation
config's ``lang_to_id`` or, without one, the language tokens its tokenizer knows.
"""

from __future__ import annotations

from collections.abc import Sequence

ALIASES = {
    "cmn": "zh",  # Mandarin (espeak-ng, ISO 639-3) -> Whisper's Chinese
    "zho": "zh",
    "chi": "zh",
    "jv": "jw",  # Whisper's token for Javanese is <|jw|>
    "jav": "jw",
    "iw": "he",  # deprecated ISO code of Hebrew
    "nb": "no",  # Norwegian Bokmal -> Whisper's Norwegian
    "nob": "no",
    "in": "id",  # deprecated ISO code of Indonesian
    "ji": "yi",  # deprecated ISO code of Yiddish
}
TASK = "transcribe"
"""The task token: the corpus text is a transcript in the utterance's own language."""
MULTILINGUAL_VOCAB = 51865


class PromptError(ValueError):
    """A language that cannot be mapped or that the model lacks (names utterance and language)."""


def whisper_language(code: str, utterance_id: str = "?") -> str:
    """Whisper's language code (``"tr"``, ``"zh"``) of a BCP-47 or espeak-ng code."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    primary = str(code).strip().lower().replace("_", "-").split("-")[0]
    whisper = ALIASES.get(primary, primary)
    if whisper not in LANGUAGES:
        raise PromptError(
            f"utterance {utterance_id}: language {code!r} has no Whisper language token "
            f"(primary subtag {primary!r}; Whisper knows {sorted(LANGUAGES)})"
        )
    return whisper


def is_multilingual(generation_config, vocab_size: int) -> bool:
    """Whether the model is prompted with language and task tokens (module docstring)."""
    flag = getattr(generation_config, "is_multilingual", None)
    if flag is not None:
        return bool(flag)
    return int(vocab_size) >= MULTILINGUAL_VOCAB


def model_languages(tokenizer, generation_config, vocab_size: int) -> dict[str, int]:
    """Whisper language code -> token id of each language the model knows."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    lang_to_id = getattr(generation_config, "lang_to_id", None)
    if lang_to_id:
        return {token.strip("<|>"): int(i) for token, i in lang_to_id.items()}
    unknown = tokenizer.convert_tokens_to_ids(tokenizer.unk_token) if tokenizer.unk_token else None
    found = {}
    for code in LANGUAGES:
        i = tokenizer.convert_tokens_to_ids(f"<|{code}|>")
        if i is not None and i != unknown and 0 <= int(i) < int(vocab_size):
            found[code] = int(i)
    return found


def language_filter(tokenizer, generation_config, vocab_size: int):
    """A predicate on corpus language codes: whether the model knows the language (English
    for English-only models; a language of :func:`model_languages` for multilingual ones)."""
    multilingual = is_multilingual(generation_config, vocab_size)
    known = (
        set(model_languages(tokenizer, generation_config, vocab_size)) if multilingual else {"en"}
    )

    def knows(code: str) -> bool:
        try:
            return whisper_language(code) in known
        except PromptError:
            return False

    return knows


def _special(tokenizer, token: str) -> int:
    i = tokenizer.convert_tokens_to_ids(token)
    unknown = tokenizer.convert_tokens_to_ids(tokenizer.unk_token) if tokenizer.unk_token else None
    if i is None or i == unknown:
        raise PromptError(f"the tokenizer lacks {token}")
    return int(i)


def decoder_prompt(
    tokenizer, generation_config, vocab_size: int, language: str | None, utterance_id: str
) -> tuple[int, ...]:
    """The forced-decoding prompt of one utterance (module docstring).

    Raises :class:`PromptError` naming the utterance and the language when a multilingual
    model lacks it (or the code is no language).
    """
    if not is_multilingual(generation_config, vocab_size):
        return tuple(int(i) for i in tokenizer.prefix_tokens)
    code = whisper_language(language or "", utterance_id)
    known = model_languages(tokenizer, generation_config, vocab_size)
    if code not in known:
        raise PromptError(
            f"utterance {utterance_id}: language {language!r} (Whisper <|{code}|>) is not "
            f"one of the model's {len(known)} languages"
        )
    return (
        _special(tokenizer, "<|startoftranscript|>"),
        known[code],
        _special(tokenizer, f"<|{TASK}|>"),
        _special(tokenizer, "<|notimestamps|>"),
    )


def prompts(
    tokenizer, generation_config, vocab_size: int, rows: Sequence[tuple[str, str]]
) -> dict[str, tuple[int, ...]]:
    """``utterance_id -> prompt`` for ``(utterance_id, language)`` rows; fails on the first
    utterance whose language the model lacks (before any computation)."""
    return {
        uid: decoder_prompt(tokenizer, generation_config, vocab_size, lang, uid)
        for uid, lang in rows
    }
