"""Shared machinery of the Hugging Face ``transformers`` adapters.

Loading (pretrained or seeded random init) with clear errors when a hub model is not
available offline, device and dtype resolution, inference settings (``eval()``, layerdrop
off), switching to eager attention while attention weights are wanted, and provenance
(SHA-256 of the weight files).
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

from speechlens.models.base import Adapter, AdapterError, ModelSourceError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")  # in order of preference, top-level files only


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AdapterError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_dtype(compute_dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype for ``compute_dtype``; half precisions are allowed on CUDA only."""
    if compute_dtype not in DTYPES:
        raise AdapterError(f"compute_dtype must be one of {sorted(DTYPES)}, got {compute_dtype!r}")
    if compute_dtype != "float32" and device.type != "cuda":
        raise AdapterError(f"compute_dtype {compute_dtype!r} is supported on CUDA only")
    return DTYPES[compute_dtype]


def _looks_like_path(source: str) -> bool:
    """Whether ``source`` is meant as a path (hub ids look like ``name`` or ``org/name``)."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def _source_error(source: str, revision: str | None, what: str, err: Exception) -> Exception:
    """A :class:`ModelSourceError` naming the model and how to provide it offline."""
    if _looks_like_path(source) and not Path(source).expanduser().exists():
        return ModelSourceError(
            f"cannot load {what}: the local model folder {source!r} does not exist "
            "(check the model's `source:` path)"
        )
    if Path(source).exists():
        return ModelSourceError(
            f"cannot read {what} from the local folder {source!r}: {err}. The folder must "
            "hold a checkpoint saved with save_pretrained (config.json and the weights)."
        )
    rev = f" --revision {revision}" if revision else ""
    return ModelSourceError(
        f"cannot load {what} of model {source!r} (revision {revision or 'unpinned'}): it is "
        f"neither a local folder nor available from the Hugging Face hub or cache ({err}). "
        f"Either point the model's `source:` at a local folder saved with save_pretrained, "
        f"or populate the Hugging Face cache (HF_HOME) where there is network, e.g. "
        f"`hf download {source}{rev}`, then run with HF_HUB_OFFLINE=1."
    )


def load_config(source: str, revision: str | None) -> Any:
    """``AutoConfig.from_pretrained(source, revision=revision)`` with a clear error."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as err:
        raise _source_error(source, revision, "the config", err) from err


def load_model(
    model_cls: type, config: Any, source: str, revision: str | None, init: str, seed: int
) -> Any:
    """The model ``model_cls`` from ``source``: trained weights, or a seeded random init.

    ``init="random"`` uses only ``config`` and builds ``model_cls(config)`` after
    ``torch.manual_seed(seed)``, so the same seed gives the same weights.
    """
    if init == "random":
        torch.manual_seed(seed)
        return model_cls(config)
    try:
        return model_cls.from_pretrained(source, revision=revision, config=config)
    except (OSError, ValueError) as err:
        raise _source_error(source, revision, "the weights", err) from err


def load_feature_extractor(extractor_cls: type, source: str, revision: str | None) -> Any | None:
    """The feature extractor saved beside the model, or ``None`` if there is none."""
    try:
        return extractor_cls.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as err:
        log.warning("no feature-extractor config for %s (%s); using defaults", source, err)
        return None


def prepare_for_inference(model: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Move ``model`` to ``device``/``dtype``, switch to ``eval()``, turn layerdrop off.

    ``eval()`` alone disables dropout, layerdrop and SpecAugment masking
    (``mask_time_prob``); the config fields are zeroed too so that the recorded config
    says what ran.
    """
    config = model.config
    for name in ("layerdrop", "encoder_layerdrop", "decoder_layerdrop"):
        if hasattr(config, name):
            setattr(config, name, 0.0)
    if hasattr(config, "apply_spec_augment"):
        config.apply_spec_augment = False
    model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


@contextlib.contextmanager
def eager_attention(model: Any, enabled: bool = True) -> Iterator[None]:
    """Run ``model`` with eager attention inside the block (SDPA returns no weights)."""
    before = model.config._attn_implementation
    switch = enabled and before != "eager"
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_folder(source: str, revision: str | None) -> Path:
    """The folder holding ``source``'s files: the local folder or the hub cache snapshot."""
    if Path(source).is_dir():
        return Path(source)
    from transformers.utils import cached_file

    try:
        return Path(cached_file(source, "config.json", revision=revision)).parent
    except (OSError, ValueError) as err:
        raise _source_error(source, revision, "the config", err) from err


def weight_checksums(source: str, revision: str | None) -> dict[str, str]:
    """``{file name: sha256}`` of the checkpoint's weight files (safetensors, else .bin)."""
    folder = checkpoint_folder(source, revision)
    for pattern in WEIGHT_PATTERNS:
        files = sorted(folder.glob(pattern))
        if files:
            return {f.name: sha256_file(f) for f in files}
    raise ModelSourceError(f"no weight files ({', '.join(WEIGHT_PATTERNS)}) in {folder}")


class HFAdapter(Adapter):
    """An adapter backed by a ``transformers`` model; subclasses implement :meth:`_build`.

    :meth:`load` resolves device and dtype, checks the checkpoint's ``model_type`` against
    the family, loads the model, calls :meth:`_build` (which sets the geometry attributes
    and may keep only part of ``self.model``), then prepares the model for inference.
    """

    model_class_name: ClassVar[str] = ""

    def __init__(self, source: str | None = None, **kwargs: Any):
        super().__init__(source, **kwargs)
        if self.source is None:
            raise AdapterError(f"{self.family}: a model `source` (folder or hub id) is required")
        if self.source.startswith("~"):
            self.source = str(Path(self.source).expanduser())
        self.model = None
        self._provenance: dict[str, Any] | None = None

    def load(self) -> None:
        if self._loaded:
            return
        self.torch_device = resolve_device(self.device)
        self.torch_dtype = resolve_dtype(self.compute_dtype, self.torch_device)
        threads = self.options.get("threads")
        if threads and self.torch_device.type == "cpu":
            torch.set_num_threads(int(threads))
        import transformers

        model_cls = getattr(transformers, self.model_class_name)
        config = load_config(self.source, self.revision)
        if config.model_type != self.family:
            raise AdapterError(
                f"{self.family}: {self.source!r} holds a {config.model_type!r} model; "
                f"use the adapter of that family"
            )
        self.model = load_model(model_cls, config, self.source, self.revision, self.init, self.seed)
        self.config = self.model.config
        self._build()
        prepare_for_inference(self.model, self.torch_device, self.torch_dtype)
        self._loaded = True

    @abc.abstractmethod
    def _build(self) -> None:
        """Set the geometry attributes (and trim ``self.model``) after loading."""

    def provenance(self) -> dict[str, Any]:
        self._require_loaded()
        if self._provenance is None:
            import transformers

            record = self._base_provenance()
            record["resolved_revision"] = getattr(self.config, "_commit_hash", None)
            if self.init == "random":
                record["weights"] = f"random-init seed {self.seed}"
            else:
                record["weights"] = weight_checksums(self.source, self.revision)
            record["compute_dtype"] = self.compute_dtype
            record["transformers_version"] = transformers.__version__
            record["torch_version"] = torch.__version__
            self._provenance = record
        return dict(self._provenance)

    def _to_numpy(self, tensor: torch.Tensor) -> Any:
        """``tensor`` as a ``float32`` NumPy array on the CPU."""
        return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
