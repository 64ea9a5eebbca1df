"""Decoder cross-attention vs input saliency for encoder-decoder speech models (Whisper).

After Papi et al. 2025, "Cross-Attention is Half Explanation in Speech-to-Text Models"
(arXiv 2509.18010). One concern per module:

- :mod:`~speechlens.saliency.forced`: the transcript to explain (reference or greedy
  hypothesis) as teacher-forced decoder inputs, with the one-position shift made explicit;
- :mod:`~speechlens.saliency.whisper`: the Whisper model, its log-mel input and valid frames,
  one teacher-forced pass returning token log-probabilities and cross-attention;
- :mod:`~speechlens.saliency.prompt`: each utterance's decoder prompt (language and task
  tokens of multilingual models);
- :mod:`~speechlens.saliency.pooling`: 10 ms mel frames to 20 ms encoder frames, centred;
- :mod:`~speechlens.saliency.methods`: gradient x input, encoder-output saliency and a
  RISE-style grid occlusion (``rise_grid``);
- :mod:`~speechlens.saliency.spes`: SPES (Fucci et al. 2024), the perturbation reference;
- :mod:`~speechlens.saliency.correlate`: Pearson r on valid frames, the tidy and summary
  tables (best head and layer cross-fitted over utterances);
- :mod:`~speechlens.saliency.pipeline`: settings, corpus loop and output files.
"""

from speechlens.saliency.correlate import SUMMARY, TABLE, correlation_rows, pearson_r, summarise
from speechlens.saliency.forced import ForcedTranscript, teacher_forcing
from speechlens.saliency.methods import gradient_saliency, rise_grid_saliency
from speechlens.saliency.pipeline import check_settings, run_corpus
from speechlens.saliency.pooling import pool_to_encoder_grid
from speechlens.saliency.prompt import decoder_prompt
from speechlens.saliency.spes import SpesSettings, spes_saliency

__all__ = [
    "SUMMARY",
    "TABLE",
    "ForcedTranscript",
    "SpesSettings",
    "check_settings",
    "correlation_rows",
    "decoder_prompt",
    "gradient_saliency",
    "pearson_r",
    "pool_to_encoder_grid",
    "rise_grid_saliency",
    "run_corpus",
    "spes_saliency",
    "summarise",
    "teacher_forcing",
]
