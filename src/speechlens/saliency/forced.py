"""The transcript whose tokens are explained, as teacher-forced decoder inputs.

Whisper's decoder reads ``prompt + content`` (prompt: ``<|startoftranscript|>``, for
multilingual models the utterance's language and task tokens, then ``<|notimestamps|>``;
see :mod:`speechlens.saliency.prompt`).
The logits at decoder position ``i`` predict the token at position ``i + 1``. So with
``full = prompt + content`` (``P`` prompt tokens, ``K`` content tokens):

- decoder input: ``full[:-1]`` (``P + K - 1`` tokens; the last content token is never
  read, only predicted);
- content token ``k`` (``full[P + k]``) is predicted at **query position ``P + k - 1``**:
  its log-probability, its saliency and its cross-attention are all taken there.

Only content tokens are explained (no prompt, end-of-text or timestamp tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ForcedTranscript:
    """Token ids to explain for one utterance.

    Attributes:
        prompt: special prefix token ids (e.g. ``[<|startoftranscript|>, <|notimestamps|>]``).
        content: ids of the ``K`` tokens that are explained (no special tokens).
        tokens: their text (``K`` strings, leading spaces kept, as decoded one by one).
    """

    prompt: tuple[int, ...]
    content: tuple[int, ...]
    tokens: tuple[str, ...]

    def __post_init__(self):
        if not self.prompt:
            raise ValueError("the decoder prompt must hold at least the start token")
        if len(self.tokens) != len(self.content):
            raise ValueError("tokens and content ids differ in length")


def teacher_forcing(
    prompt: tuple[int, ...] | list[int], content: tuple[int, ...] | list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoder inputs, query positions and targets of a forced transcript.

    Returns ``(input_ids, positions, targets)``: ``input_ids`` ``(P + K - 1,)`` int64,
    ``positions`` ``(K,)`` the decoder position whose logits predict each content token
    (``P - 1 .. P + K - 2``), ``targets`` ``(K,)`` the content ids. ``K`` may be 0.
    """
    if len(prompt) == 0:
        raise ValueError("the decoder prompt must hold at least the start token")
    full = np.asarray(list(prompt) + list(content), dtype=np.int64)
    n_prompt = len(prompt)
    positions = np.arange(n_prompt - 1, len(full) - 1, dtype=np.int64)
    return full[:-1] if len(content) else full, positions, full[n_prompt:]


def reference_transcript(tokenizer, text: str, prompt=None) -> ForcedTranscript:
    """Tokens of a reference text, with Whisper's convention of a leading space.

    ``tokenizer`` is a ``WhisperTokenizer``; ``prompt`` the decoder prompt (default: the
    tokenizer's ``prefix_tokens``).
    """
    content = tokenizer(" " + str(text).strip(), add_special_tokens=False).input_ids
    return from_ids(tokenizer, content, prompt)


def from_ids(tokenizer, ids, prompt=None) -> ForcedTranscript:
    """A transcript from content ids; special ids (``>= eos``, timestamps) are dropped.
    ``prompt``: the decoder prompt (default: the tokenizer's ``prefix_tokens``)."""
    special = set(tokenizer.all_special_ids)
    first_special = int(tokenizer.eos_token_id)
    content = [int(i) for i in ids if int(i) not in special and int(i) < first_special]
    tokens = [tokenizer.decode([i]) for i in content]
    prompt = tokenizer.prefix_tokens if prompt is None else prompt
    return ForcedTranscript(tuple(int(i) for i in prompt), tuple(content), tuple(tokens))
