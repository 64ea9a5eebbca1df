"""Read a CTranslate2 model file (``model.bin``) into NumPy arrays.

Layout (little-endian): ``uint32`` format version; string spec name; ``uint32`` spec
revision; ``uint32`` variable count; per variable a string name, ``uint8`` rank, rank x
``uint32`` dims, ``uint8`` dtype, ``uint32`` byte count and the raw data; then ``uint32``
alias count and (alias, target) string pairs. A string is a ``uint16`` byte length
(including a trailing NUL) and the bytes. Reference: CTranslate2's
``python/ctranslate2/specs/model_spec.py`` (``ModelSpec._serialize``) and
``src/models/model.cc`` (``Model::load``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CT2_FORMAT_VERSION = 6
CT2_DTYPES = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2"}


class ConversionError(ValueError):
    """The source does not match what the converter expects; the message says where."""


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
    try:
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
    except (struct.error, ValueError) as err:
        if isinstance(err, ConversionError):
            raise
        raise ConversionError(f"{path}: truncated or corrupt CT2 file ({err})") from err
    if cur.pos != len(cur.data):
        raise ConversionError(f"{path}: {len(cur.data) - cur.pos} trailing bytes")
    return Ct2File(version, spec, revision, variables, aliases)


def read_ct2(path: str | Path) -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 ``model.bin`` by name, aliases resolved to their targets."""
    ct2 = read_ct2_file(path)
    return {**ct2.variables, **{a: ct2.variables[t] for a, t in ct2.aliases.items()}}
