"""Decoder cross-attention vs input saliency for encoder-decoder speech models (Whisper).

After Papi et al. 2025, "Cross-Attention is Half Explanation in Speech-to-Text Models"
(arXiv 2509.18010). One concern per module:

- :mod:`~speechlens.saliency.forced`: the transcript to explain (reference or greedy
  hypothesis) as teacher-forced decoder inputs, with the one-position shift made explicit;
- :mod:`~speechlens.saliency.whisper`: the Whisper model, its log-mel input and valid frames,
  one teacher-forced pass returning token log-probabilities and cross-attention;
- :mod:`~speechlens.saliency.methods`: gradient x input, encoder-output saliency and the
  SPES-style perturbation saliency;
- :mod:`~speechlens.saliency.correlate`: Pearson r on valid frames, the tidy and summary tables;
- :mod:`~speechlens.saliency.pipeline`: settings, corpus loop and output files.
"""

from speechlens.saliency.correlate import correlation_rows, pearson_r, summarise
from speechlens.saliency.forced import ForcedTranscript, teacher_forcing
from speechlens.saliency.methods import (
    gradient_saliency,
    perturbation_saliency,
    pool_to_encoder_grid,
)
from speechlens.saliency.pipeline import check_settings, run_corpus

__all__ = [
    "ForcedTranscript",
    "check_settings",
    "correlation_rows",
    "gradient_saliency",
    "pearson_r",
    "perturbation_saliency",
    "pool_to_encoder_grid",
    "run_corpus",
    "summarise",
    "teacher_forcing",
]
