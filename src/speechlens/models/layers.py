"""Shared pieces of the adapters whose layers differ in width or include utterance-level ones.

Families such as the x-vector heads and ECAPA-TDNN have frame-level layers of different
widths (e.g. an 80-bin filterbank, 1024-channel blocks, a 3072-channel aggregation) and an
utterance-level embedding. Their adapters keep the store's ``(layer, frame, feature)``
contract by zero-padding every layer to the widest one; ``layer_widths[l]`` says how many
leading features of layer ``l`` are real (the rest are exactly 0.0). Zero columns change
neither a linear or MLP probe's fit, nor distances (kNN), nor linear CKA's Gram matrices.

Utterance-level layers are returned by ``embeddings(batch)``: one ``float32`` array per
utterance, shape ``(len(embedding_names), embedding_size)``.

Also: :func:`load_hf_family`, the loading path of ``HFAdapter.load`` for families that map
several checkpoint ``model_type`` values to model classes (or load one part of a larger
checkpoint with a ``key_mapping``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from speechlens.models.base import AdapterError
from speechlens.models.hf import (
    _source_error,
    load_config,
    load_model,
    prepare_for_inference,
    resolve_device,
    resolve_dtype,
)


def pad_width(layers: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Stack ``(frame, feature_l)`` arrays into ``(layer, frame, width)``, zero-padding features."""
    n_frames = layers[0].shape[0] if layers else 0
    out = np.zeros((len(layers), n_frames, width), np.float32)
    for i, layer in enumerate(layers):
        out[i, :, : layer.shape[-1]] = layer
    return out


def load_hf_family(
    adapter: Any,
    classes: dict[str, str],
    *,
    config_of: Callable[[Any], Any] | None = None,
    key_mapping: dict[str, dict[str, str]] | None = None,
    model_module: Any = None,
) -> None:
    """``HFAdapter.load`` for a family that accepts several checkpoint ``model_type`` values.

    ``classes`` maps ``config.model_type`` to the model class name (looked up in
    ``model_module``, default ``transformers``); ``config_of`` picks the sub-config the model
    is built from (e.g. the audio encoder's of a multimodal checkpoint); ``key_mapping``
    (per model type) renames checkpoint keys so that one part of a larger checkpoint loads
    (other keys are ignored). Sets ``torch_device``, ``torch_dtype``, ``model``, ``config``
    and ``checkpoint_type``; calls ``adapter._build()``; prepares the model for inference.
    """
    import transformers

    adapter.torch_device = resolve_device(adapter.device)
    adapter.torch_dtype = resolve_dtype(adapter.compute_dtype, adapter.torch_device)
    threads = adapter.options.get("threads")
    if threads and adapter.torch_device.type == "cpu":
        torch.set_num_threads(int(threads))
    config = load_config(adapter.source, adapter.revision)
    if config.model_type not in classes:
        raise AdapterError(
            f"{adapter.family}: {adapter.source!r} holds a {config.model_type!r} model; this "
            f"family reads {sorted(classes)} checkpoints"
        )
    adapter.checkpoint_type = config.model_type
    module = transformers if model_module is None else model_module
    model_cls = getattr(module, classes[config.model_type])
    sub_config = config if config_of is None else config_of(config)
    mapping = (key_mapping or {}).get(config.model_type)
    if mapping is None or adapter.init == "random":
        model = load_model(
            model_cls, sub_config, adapter.source, adapter.revision, adapter.init, adapter.seed
        )
    else:
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # not a report of every unused key
        try:
            model, info = model_cls.from_pretrained(
                adapter.source,
                revision=adapter.revision,
                config=sub_config,
                key_mapping=mapping,
                output_loading_info=True,
            )
        except (OSError, ValueError) as err:
            raise _source_error(adapter.source, adapter.revision, "the weights", err) from err
        finally:
            transformers.logging.set_verbosity(verbosity)
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise AdapterError(
                f"{adapter.family}: {adapter.source!r} lacks {len(missing)} weight(s) of the "
                f"{classes[config.model_type]} (e.g. {missing[:3]}); is it the right checkpoint?"
            )
    adapter.model = model
    adapter.config = model.config
    adapter._build()
    prepare_for_inference(adapter.model, adapter.torch_device, adapter.torch_dtype)
    adapter._loaded = True
