"""CKA layer similarity from feature stores.

Data flows one way through the modules:

- :mod:`~speechlens.cka.statistic`: linear CKA (biased and debiased HSIC) from streamed
  feature-space sums, :class:`~speechlens.cka.statistic.CkaAccumulator`; pure arrays;
- :mod:`~speechlens.cka.units`: which frames of each store form one sample (frame, time
  with overlap-weighted pooling, segment) and the seeded draw of samples;
- :mod:`~speechlens.cka.stream`: reads the units' pooled features batch by batch into the
  accumulator (several passes when all layer pairs do not fit in memory);
- :mod:`~speechlens.cka.run`: opens the stores (any kind: frame, segment, utterance;
  :func:`~speechlens.cka.run.check_alignment` says which alignments they allow), runs the
  above, wraps, writes and reads the ``(layer_a, layer_b)`` matrix.
"""

from speechlens.cka.run import (
    ALIGNS,
    across_models,
    check_alignment,
    check_pairs,
    compute,
    load_cka,
    unit_store,
    within_model,
    write_cka,
)
from speechlens.cka.statistic import (
    ESTIMATORS,
    CkaAccumulator,
    cka_from_hsic,
    cka_matrix,
    hsic_from_stats,
    linear_cka,
    resolve_device,
)
from speechlens.cka.stream import plan_passes, read_units, stream_hsic
from speechlens.cka.units import (
    CkaError,
    Pooling,
    Units,
    frame_hop,
    match_utterances,
    overlap_pooling,
    sample_units,
    segment_units,
    time_units,
)

__all__ = [
    "ALIGNS",
    "ESTIMATORS",
    "CkaAccumulator",
    "CkaError",
    "Pooling",
    "Units",
    "across_models",
    "check_alignment",
    "check_pairs",
    "cka_from_hsic",
    "cka_matrix",
    "compute",
    "frame_hop",
    "hsic_from_stats",
    "linear_cka",
    "load_cka",
    "match_utterances",
    "overlap_pooling",
    "plan_passes",
    "read_units",
    "resolve_device",
    "sample_units",
    "segment_units",
    "stream_hsic",
    "time_units",
    "unit_store",
    "within_model",
    "write_cka",
]
