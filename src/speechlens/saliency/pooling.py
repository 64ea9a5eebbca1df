"""Mel frames (10 ms) to Whisper's encoder frames (20 ms), centred on each encoder frame.

Whisper's log-mel frame ``i`` is centred at ``10 i`` ms (centred STFT). Its encoder runs
``conv1`` (kernel 3, stride 1, padding 1) and ``conv2`` (kernel 3, stride 2, padding 1), so
encoder frame ``j`` reads mel frames ``2j - 2 .. 2j + 2`` symmetrically around mel frame
``2j``: it is centred at ``20 j`` ms and spans ``[20 j - 10, 20 j + 10)`` ms. Pooling
weights each mel frame by its overlap with that span: mel frame ``2j`` (``[20j - 5,
20j + 5)``) counts fully, its neighbours ``2j - 1`` and ``2j + 1`` half each. Every mel
frame's mass is kept (an odd frame is split between the two encoder frames it straddles),
except the half of a last odd mel frame that would fall in the encoder frame past the end.
(Summing mel frames ``2j`` and ``2j + 1`` instead would centre encoder frame ``j`` at
``20 j + 5`` ms: a 5 ms shift.)
"""

from __future__ import annotations

import numpy as np
import torch

MEL_PER_FRAME = 2
"""Mel frames (10 ms) per encoder frame (20 ms): the stride of Whisper's conv2."""


def pool_to_encoder_grid(per_mel_frame: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(..., mel_frame)`` -> ``(..., ceil(mel_frame / 2))`` (module docstring):
    ``out[j] = x[2j] + (x[2j - 1] + x[2j + 1]) / 2`` (missing neighbours count 0)."""
    x = per_mel_frame.detach().cpu().numpy() if torch.is_tensor(per_mel_frame) else per_mel_frame
    x = np.asarray(x)
    n = x.shape[-1]
    n_out = -(-n // MEL_PER_FRAME)
    even = x[..., 0::2]  # mel frames 2j, j = 0 .. n_out - 1
    odd = x[..., 1::2]  # mel frames 2j + 1
    out = even.astype(np.result_type(x.dtype, np.float32), copy=True)
    out[..., : odd.shape[-1]] += 0.5 * odd  # 2j + 1 -> j
    out[..., 1 : odd.shape[-1] + 1] += 0.5 * odd[..., : n_out - 1]  # 2j - 1 -> j
    return out
