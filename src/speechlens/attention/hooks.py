"""Head ablation: forward pre-hooks on the self-attention output projections.

The input of block ``l``'s output projection (``adapter.attention_projections()[l - 1]``)
is ``(..., num_heads * head_dim)``, head ``h`` in columns ``h * head_dim : (h + 1) *
head_dim``. Ablating head ``h`` replaces its columns before the projection:

- ``mode="zero"``: by 0 (the block's attention output then carries only the other heads
  and the projection bias);
- ``mode="mean"``: by the head's mean output over a corpus (:func:`head_output_means`),
  the same vector at every frame.

The hook computes ``x * keep + fill`` (``keep`` 1 on kept columns and 0 on ablated ones,
``fill`` the replacement), which leaves kept columns bit-identical. No ``prune_heads``
(Whisper and wav2vec2 lack it) and no weights are modified.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from speechlens.attention.settings import ABLATION_MODES, AttentionError


def _projections(adapter) -> list:
    """The adapter's output projections, checked against its geometry."""
    projections = adapter.attention_projections()
    if len(projections) != adapter.num_layers - 1 or adapter.num_heads < 1:
        raise AttentionError(
            f"{adapter.family}: {len(projections)} attention projections and "
            f"{adapter.num_heads} heads for {adapter.num_layers - 1} blocks"
        )
    width = projections[0].in_features
    if width % adapter.num_heads:
        raise AttentionError(
            f"{adapter.family}: projection input {width} not divisible by {adapter.num_heads} heads"
        )
    return projections


def check_heads(heads: Mapping[int, Iterable[int]], num_blocks: int, num_heads: int) -> dict:
    """``{block: sorted heads}`` with blocks in ``1 .. num_blocks`` and heads in range."""
    out = {}
    for block, hs in heads.items():
        block = int(block)
        if not 1 <= block <= num_blocks:
            raise AttentionError(f"ablation: block {block} outside 1 .. {num_blocks}")
        hs = sorted({int(h) for h in hs})
        if hs and not (hs[0] >= 0 and hs[-1] < num_heads):
            raise AttentionError(f"ablation: block {block} heads {hs} outside 0 .. {num_heads - 1}")
        out[block] = hs
    return out


@contextlib.contextmanager
def ablate(
    adapter,
    heads: Mapping[int, Sequence[int]],
    *,
    mode: str = "zero",
    means: np.ndarray | None = None,
) -> Iterator[None]:
    """Within the block, ``adapter.forward`` runs with the given heads ablated.

    Args:
        adapter: a loaded adapter with self-attention.
        heads: ``{block: [head, ...]}``, blocks ``1 .. num_layers - 1``. A block listed
            with no heads gets an identity hook (used to check exactness).
        mode: ``"zero"`` or ``"mean"``.
        means: ``(block, num_heads * head_dim)`` per-head mean outputs
            (:func:`head_output_means`), required for ``mode="mean"``.
    """
    if mode not in ABLATION_MODES:
        raise AttentionError(f"ablation mode {mode!r}: use one of {ABLATION_MODES}")
    projections = _projections(adapter)
    heads = check_heads(heads, len(projections), adapter.num_heads)
    if mode == "mean":
        width = projections[0].in_features
        if means is None or np.shape(means) != (len(projections), width):
            raise AttentionError(
                f"ablation mode 'mean' needs per-head means of shape ({len(projections)}, "
                f"{width}), got {None if means is None else np.shape(means)}"
            )
    handles = []
    try:
        for block, hs in heads.items():
            proj = projections[block - 1]
            width = proj.in_features
            head_dim = width // adapter.num_heads
            keep = torch.ones(width)
            fill = torch.zeros(width)
            for h in hs:
                cols = slice(h * head_dim, (h + 1) * head_dim)
                keep[cols] = 0.0
                if mode == "mean":
                    fill[cols] = torch.as_tensor(np.asarray(means)[block - 1, cols])
            param = proj.weight
            keep = keep.to(param.device, param.dtype)
            fill = fill.to(param.device, param.dtype)
            handles.append(proj.register_forward_pre_hook(_replace(keep, fill)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _replace(keep: torch.Tensor, fill: torch.Tensor):
    def hook(_module, args):
        return (args[0] * keep + fill, *args[1:])

    return hook


def head_output_means(adapter, waves: Iterable[np.ndarray]) -> np.ndarray:
    """Mean input of every block's output projection over the valid frames of ``waves``.

    Returns ``(block, num_heads * head_dim)`` float64: head ``h``'s mean output in its
    columns. Utterances run one at a time, so only their own ``frame_count`` frames count
    (Whisper ``pad30`` padding positions are left out).
    """
    projections = _projections(adapter)
    sums = np.zeros((len(projections), projections[0].in_features))
    frames = 0
    valid = {"n": 0}

    def capture(block):
        def hook(_module, args):
            x = args[0][0, : valid["n"]]
            sums[block] += x.detach().to("cpu", torch.float64).sum(dim=0).numpy()

        return hook

    handles = [p.register_forward_pre_hook(capture(i)) for i, p in enumerate(projections)]
    try:
        for wave in waves:
            n = adapter.frame_count(len(wave))
            if n == 0:
                continue
            valid["n"] = n
            adapter.forward([wave])
            frames += n
    finally:
        for handle in handles:
            handle.remove()
    if frames == 0:
        raise AttentionError("head_output_means: no utterance gave a frame")
    return sums / frames
