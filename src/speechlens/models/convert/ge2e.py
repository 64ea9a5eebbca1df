"""Resemblyzer's GE2E speaker encoder (PyPI ``resemblyzer`` 0.1.4) -> a checkpoint folder.

Only the weights file ``resemblyzer/pretrained.pt`` is used. It is read from the installed
package, verified against the wheel's ``RECORD`` (:mod:`speechlens.models.convert.pypi`),
loaded with ``torch.load(weights_only=True)`` (no code runs), checked and written as
``model.safetensors`` (float32, the names of Resemblyzer's ``VoiceEncoder``: ``lstm.*``,
``linear.*``), ``config.json`` (sizes read off the shapes) and
:data:`~speechlens.models.convert.ct2_whisper.SOURCE_RECORD`.

The package is installed without its dependencies (``pip install --no-deps
resemblyzer==0.1.4``, done by ``make install`` and the conda env's post-deploy script):
its ``webrtcvad`` is a C build that can break the install, and ``librosa`` is not needed,
since :mod:`speechlens.models.ge2e` computes the same mel spectrogram itself.

The checkpoint also holds ``similarity_weight`` and ``similarity_bias``, the scale ``w`` and
offset ``b`` of the GE2E loss' cosine similarity (Wan et al. 2018, eq. 5); they are not
part of the embedding network (``VoiceEncoder`` loads with ``strict=False`` and ignores
them), so they are dropped and recorded in the source record.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from speechlens.atomic import atomic_path
from speechlens.models.convert import pypi
from speechlens.models.convert.ct2 import ConversionError

WEIGHTS_FILE = "pretrained.pt"
SOURCE_RECORD = "speechlens_source.json"
MODEL_TYPE = "ge2e"
LOSS_ONLY = ("similarity_weight", "similarity_bias")
"""Parameters of the GE2E loss, not of the encoder: dropped."""


def network_config(state: dict) -> dict:
    """Sizes of the encoder from the shapes of its state dict; fails on anything else.

    Expects ``lstm.{weight_ih,weight_hh,bias_ih,bias_hh}_l{k}`` for ``k = 0 .. L-1`` (gates
    stacked as PyTorch's ``nn.LSTM``: ``(4 H, in)``) and ``linear.{weight,bias}``.
    """
    layers = {int(m[1]) for k in state if (m := re.fullmatch(r"lstm\.\w+_l(\d+)", k))}
    if not layers or layers != set(range(len(layers))):
        raise ConversionError(f"LSTM layers are not numbered 0..n-1: {sorted(layers)}")
    hidden = int(state["lstm.weight_hh_l0"].shape[1])
    n_mels = int(state["lstm.weight_ih_l0"].shape[1])
    expected = {"linear.weight": (None, hidden), "linear.bias": (None,)}
    for k in range(len(layers)):
        width = n_mels if k == 0 else hidden
        expected |= {
            f"lstm.weight_ih_l{k}": (4 * hidden, width),
            f"lstm.weight_hh_l{k}": (4 * hidden, hidden),
            f"lstm.bias_ih_l{k}": (4 * hidden,),
            f"lstm.bias_hh_l{k}": (4 * hidden,),
        }
    if set(state) != set(expected):
        raise ConversionError(
            f"unexpected weights: extra {sorted(set(state) - set(expected))}, "
            f"missing {sorted(set(expected) - set(state))}"
        )
    for key, shape in expected.items():
        got = tuple(state[key].shape)
        if len(got) != len(shape) or any(
            s is not None and s != g for s, g in zip(shape, got, strict=True)
        ):
            raise ConversionError(f"{key}: shape {got}, expected {shape}")
    embedding = int(state["linear.weight"].shape[0])
    if tuple(state["linear.bias"].shape) != (embedding,):
        raise ConversionError(f"linear.bias: shape {tuple(state['linear.bias'].shape)}")
    return {
        "model_type": MODEL_TYPE,
        "n_mels": n_mels,
        "hidden_size": hidden,
        "num_layers": len(layers),
        "embedding_size": embedding,
    }


def read_weights(path: Path) -> tuple[dict, dict]:
    """The encoder's float32 state dict and the dropped loss parameters of ``pretrained.pt``."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle/runtime errors of several types
        raise ConversionError(f"{path}: cannot load with weights_only=True ({err})") from err
    if not isinstance(checkpoint, dict) or "model_state" not in checkpoint:
        raise ConversionError(f"{path}: no 'model_state' (not a Resemblyzer checkpoint)")
    state = dict(checkpoint["model_state"])
    dropped = {k: state.pop(k).tolist() for k in LOSS_ONLY if k in state}
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}
    return state, dropped


def convert(weights: str | Path, out_dir: str | Path, *, packages: list[dict] | None = None):
    """Write the checkpoint folder of a Resemblyzer ``pretrained.pt`` to ``out_dir``."""
    from safetensors.torch import load_file, save_file

    weights, out_dir = Path(weights), Path(out_dir)
    state, dropped = read_weights(weights)
    config = network_config(state)
    record = {
        "converter": __name__,
        "packages": packages or [],
        "weights_sha256": pypi.sha256_file(weights),
        "dropped": dropped,
        "stored_dtype": "float32",
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        save_file(state, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        mode = (tmp / "config.json").stat().st_mode & 0o777
        (tmp / "model.safetensors").chmod(mode)  # safetensors writes 0600
        loaded = load_file(tmp / "model.safetensors")
        if set(loaded) != set(state) or any(not loaded[k].equal(v) for k, v in state.items()):
            raise ConversionError(f"{out_dir}: the written weights differ from the source")
    return out_dir


def convert_packages(packages: list[str], out_dir: str | Path) -> Path:
    """Convert the GE2E weights shipped by the installed ``packages`` (``resemblyzer``)."""
    with tempfile.TemporaryDirectory(prefix="ge2e-") as tmp:
        provenance = pypi.assemble(packages, [WEIGHTS_FILE], tmp)
        return convert(Path(tmp) / WEIGHTS_FILE, out_dir, packages=provenance)
