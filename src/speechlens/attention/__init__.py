"""Self-attention analysis: head statistics and types, head ablation.

- :mod:`~speechlens.attention.settings`: the ``attention`` config section (schema defaults,
  checks naming the config key);
- :mod:`~speechlens.attention.stats`: per-head metrics of attention maps on the time axis
  (Yang, Liu & Lee 2020 and speechlens's threshold metrics), accumulated over a corpus
  without holding the maps, and the head types;
- :mod:`~speechlens.attention.head_types`: runs a model over a corpus for the head table
  and a few example maps;
- :mod:`~speechlens.attention.hooks`: head ablation by forward pre-hooks on the attention
  output projections (zero or mean replacement), and per-head mean outputs;
- :mod:`~speechlens.attention.ablation`: the ablation experiment (groups of heads,
  re-extraction, probing on the un-ablated run's folds);
- :mod:`~speechlens.attention.summary`: each ablated group's drop, ranked among random
  controls of its size (empirical p-value).
"""

from speechlens.attention.settings import AttentionError, has_self_attention

__all__ = ["AttentionError", "has_self_attention"]
