"""The adapter interface every model family implements, and helpers they share.

An adapter turns waveforms into per-layer hidden states (and, on request, self-attention
weights) on the model's own frame grid. Life cycle::

    adapter = ADAPTERS["wav2vec2"]("facebook/wav2vec2-base", revision="<commit>")
    adapter.load()                        # weights are read here, never in __init__
    states = adapter.forward([wave_a, wave_b])           # [(layer, frame, feature), ...]
    states, attn = adapter.forward(batch, output_attentions=True)

Conventions (all adapters):

- input: a list of mono ``float32`` waveforms, shape ``(n_samples,)``, at
  :attr:`Adapter.sample_rate` Hz, full scale 1.0;
- hidden states: one ``float32`` array per utterance, shape
  ``(num_layers, frame_count(n_samples), hidden_size)``. Layer 0 is the input to the
  first transformer block, layer ``l`` the output of block ``l`` (the raw residual stream:
  a final layer norm applied after the last block is *not* included);
- attentions: one ``float32`` array per utterance, shape
  ``(num_layers - 1, num_heads, frame, frame)``, entry ``[l, h, q, k]`` the weight query
  frame ``q`` gives key frame ``k`` in block ``l + 1``'s self-attention head ``h``;
- times: seconds; rates: Hz; frame ``i`` of an utterance is centred at
  ``frame_times(n)[i]`` seconds from the first sample, where sample ``t`` is taken to
  span ``[t, t + 1) / sample_rate`` (so a window over samples ``a .. a + w - 1`` is
  centred at ``(a + w / 2) / sample_rate``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

INITS = ("pretrained", "random")

CAPABILITIES = (
    "spectral",
    "self_attention",
    "cross_attention",
    "utterance_level",
    "trained_by_workflow",
)
"""What a model family can do, declared by its adapter class (:attr:`Adapter.capabilities`):

- ``spectral``: a one-layer signal-processing baseline (no weights, no layer curve);
- ``self_attention``: self-attention heads (:meth:`Adapter.attention_projections`, head types,
  head ablation);
- ``cross_attention``: an encoder-decoder with cross-attention and a tokenizer (forced
  decoding, cross-attention vs saliency);
- ``utterance_level``: some layers exist only per utterance (an embedding), not per frame;
- ``trained_by_workflow``: its checkpoint can be trained by the workflow (``source: train:``).

Config validation and the rules ask these declarations, never family names.
"""


class AdapterError(RuntimeError):
    """An adapter was misused or misconfigured; the message says how to fix it."""


class ModelSourceError(AdapterError, OSError):
    """The model's weights or config could not be found or read."""


class Adapter(abc.ABC):
    """Base class of every model adapter (one subclass per model family).

    ``__init__`` only stores its arguments; :meth:`load` reads the model. The attributes
    below are valid after :meth:`load` (spectral baselines set them at once):

    - ``num_layers``: entries on the store's layer axis (transformer blocks + 1; 1 for
      spectral baselines);
    - ``hidden_size``: features per frame; ``num_heads``: attention heads per block (0 for
      models without attention);
    - ``sample_rate`` (Hz) the waveforms must have; ``frame_rate_hz``: output frames per
      second;
    - ``supports_padding``: whether a padded batch gives exactly the outputs of each
      utterance run alone. Adapters without it still accept any batch (they run only
      equal-length utterances together); the flag tells callers that sorting or grouping
      by length pays off.

    Args:
        source: a local folder saved with ``save_pretrained`` or a hub id (pin
            ``revision``); ``None`` for models without weights.
        revision: hub commit, branch or tag.
        init: ``"pretrained"`` (the trained weights) or ``"random"`` (same architecture,
            untrained weights drawn with ``torch.manual_seed(seed)``).
        seed: seed of the random init.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ...
        compute_dtype: ``"float32"`` (default); ``"bfloat16"``/``"float16"`` on CUDA only.
        **options: family-specific options (documented by each adapter) plus ``threads``,
            the CPU threads torch may use.
    """

    family: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()
    """Members of :data:`CAPABILITIES` this family has."""
    option_names: ClassVar[tuple[str, ...]] = ("threads",)
    max_samples: int | None = None
    """Longest waveform ``forward`` accepts, in samples at ``sample_rate`` (None: no limit;
    Whisper sets 30 s in ``load``). The features stage checks every utterance against it."""

    def __init__(
        self,
        source: str | None = None,
        *,
        revision: str | None = None,
        init: str = "pretrained",
        seed: int = 0,
        device: str = "auto",
        compute_dtype: str = "float32",
        **options: Any,
    ):
        if init not in INITS:
            raise AdapterError(f"{self.family}: init must be one of {INITS}, got {init!r}")
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise AdapterError(
                f"{self.family}: unknown option(s) {unknown}; known: {list(self.option_names)}"
            )
        self.source = None if source is None else str(source)
        self.revision = revision
        self.init = init
        self.seed = int(seed)
        self.device = device
        self.compute_dtype = compute_dtype
        self.options = dict(options)
        self._loaded = False

    # ------------------------------------------------------------------ shared helpers

    def check_max_length(self, waves: Sequence[np.ndarray], what: str) -> None:
        """Raise :class:`AdapterError` naming the first waveform longer than
        :attr:`max_samples` (``what``: the part of the model with that limit)."""
        for i, wave in enumerate(waves):
            if self.max_samples is not None and len(wave) > self.max_samples:
                raise AdapterError(
                    f"{self.family}: utterance {i} is {len(wave) / self.sample_rate:.2f} s long; "
                    f"{what} takes at most {self.max_samples / self.sample_rate:g} s. Split "
                    f"longer recordings into utterances of at most "
                    f"{self.max_samples / self.sample_rate:g} s."
                )

    def empty_outputs(self, n: int) -> tuple[list[Any], list[Any]]:
        """Per-utterance hidden states ``(layer, 0, feature)`` and attentions ``(block, head,
        0, 0)`` with no frames, for ``n`` utterances (filled in for those that give frames)."""
        hidden = [np.zeros((self.num_layers, 0, self.hidden_size), np.float32) for _ in range(n)]
        attn = [np.zeros((self.num_layers - 1, self.num_heads, 0, 0), np.float32) for _ in range(n)]
        return hidden, attn

    # ------------------------------------------------------------------ interface

    @abc.abstractmethod
    def load(self) -> None:
        """Read the model (weights, config, feature extractor); set the attributes above."""

    @abc.abstractmethod
    def frame_count(self, n_samples: int) -> int:
        """Exact number of output frames for a waveform of ``n_samples`` samples."""

    @abc.abstractmethod
    def frame_times(self, n_frames: int) -> np.ndarray:
        """Centre times (s, ``float64``, shape ``(n_frames,)``) of the first ``n_frames`` frames."""

    @abc.abstractmethod
    def forward(
        self, batch: Sequence[np.ndarray], *, output_attentions: bool = False
    ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        """Hidden states per utterance, and attentions per utterance when requested.

        See the module docstring for shapes. Utterances too short to give a frame yield
        arrays with a frame axis of length 0.
        """

    @abc.abstractmethod
    def provenance(self) -> dict[str, Any]:
        """What produced the features: family, source, revision, weight checksums, init."""

    def attention_projections(self) -> list[Any]:
        """The self-attention output projections, one ``torch.nn.Linear`` per block.

        Entry ``l - 1`` belongs to block ``l`` (``l = 1 .. num_layers - 1``, the block whose
        output is layer ``l``). Its input, last dim ``num_heads * head_dim``, is the
        concatenation of the heads' outputs, head-major: head ``h`` occupies columns
        ``h * head_dim : (h + 1) * head_dim``. The module must be *called* by the model
        (forward pre-hooks on it see, and may replace, the heads' outputs); head ablation
        (:mod:`speechlens.attention.ablation`) relies on that. Families without
        self-attention raise :class:`AdapterError`.
        """
        raise AdapterError(f"{self.family}: this model family has no self-attention heads")

    # ------------------------------------------------------------------ helpers

    @property
    def loaded(self) -> bool:
        """Whether :meth:`load` has run."""
        return self._loaded

    def _require_loaded(self) -> None:
        if not self._loaded:
            raise AdapterError(f"{self.family}: call load() before using the adapter")

    def _check_batch(self, batch: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Validate ``batch`` and return it as a list of contiguous 1-D ``float32`` arrays."""
        self._require_loaded()
        if isinstance(batch, np.ndarray):
            raise AdapterError(
                f"{self.family}: forward() takes a list of 1-D waveforms, not one array"
            )
        waves = []
        for i, wave in enumerate(batch):
            if not np.issubdtype(np.asarray(wave).dtype, np.floating):
                raise AdapterError(
                    f"{self.family}: waveform {i} has dtype {np.asarray(wave).dtype}; "
                    "expected float samples with full scale 1.0"
                )
            wave = np.ascontiguousarray(wave, dtype=np.float32)
            if wave.ndim != 1:
                raise AdapterError(
                    f"{self.family}: waveform {i} has shape {wave.shape}; "
                    "expected mono audio of shape (n_samples,)"
                )
            if not np.isfinite(wave).all():
                raise AdapterError(f"{self.family}: waveform {i} has non-finite samples")
            waves.append(wave)
        return waves

    def _base_provenance(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "adapter": type(self).__name__,
            "source": self.source,
            "revision": self.revision,
            "init": self.init,
            "seed": self.seed if self.init == "random" else None,
            "options": {k: v for k, v in sorted(self.options.items()) if k != "threads"},
        }


# ---------------------------------------------------------------------- conv arithmetic


def conv_output_length(
    n: int, kernel: int, stride: int, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a 1-D convolution over ``n`` inputs (``torch.nn.Conv1d`` rule), >= 0."""
    out = (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return max(out, 0)


def conv_stack_geometry(
    kernels: Sequence[int], strides: Sequence[int], paddings: Sequence[int] | None = None
) -> tuple[int, float]:
    """Total stride and centre offset of a stack of 1-D convolutions.

    Output ``i`` of the stack is centred on input position ``i * stride + offset``, where
    the centre of output ``j`` of one layer is input ``j * s + (k - 1) / 2 - p``. The
    receptive field of a stack without padding is ``2 * offset + 1`` inputs.
    """
    paddings = [0] * len(kernels) if paddings is None else list(paddings)
    stride, offset = 1, 0.0
    for k, s, p in zip(kernels, strides, paddings, strict=True):
        offset += stride * ((k - 1) / 2 - p)
        stride *= s
    return stride, offset
