"""The code version rules carry as a param: which edits change it, and which do not."""

from __future__ import annotations

import shutil
from ast import parse as ast_parse

import pytest

from speechlens.codeversion import (
    ROOT,
    CodeVersionError,
    code_version,
    imported_modules,
    module_closure,
    script_code_version,
)
from tests.conftest import REPO

SCRIPTS = REPO / "workflow" / "scripts"


@pytest.fixture
def package(tmp_path):
    """A private copy of the speechlens package to edit."""
    root = tmp_path / "speechlens"
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_closure_follows_speechlens_imports_transitively():
    closure = module_closure("speechlens.probing")
    # probing imports labels, store, atomic ...; labels imports corpora.contract
    assert {"speechlens.probing", "speechlens.labels", "speechlens.store"} <= set(closure)
    assert "speechlens.corpora.contract" in closure and "speechlens.atomic" in closure
    assert "speechlens.extract" not in closure and "speechlens.models" not in closure
    assert "speechlens" not in closure  # the version-only package __init__
    assert closure == sorted(closure)


def test_scripts_are_versioned_by_what_they_import():
    assert "speechlens.probing" in imported_modules(SCRIPTS / "probe.py")
    assert "speechlens.extract" in imported_modules(SCRIPTS / "features.py")
    probe = script_code_version(SCRIPTS / "probe.py")
    assert len(probe) == 16 and int(probe, 16) >= 0
    assert probe == script_code_version(SCRIPTS / "probe.py")  # stable
    assert probe != script_code_version(SCRIPTS / "features.py")


def test_comments_docstrings_and_formatting_do_not_change_it(package):
    before = code_version("speechlens.probing", root=package)
    labels = package / "labels.py"
    text = labels.read_text()
    doc = text.index('"""', text.index("\ndef "))  # the first function's docstring
    edited = (
        '# a new comment\n"""Module docstring reworded.\n'
        + text[3:doc]
        + '"""Function docstring reworded.\n'
        + text[doc + 3 :].replace("\n\n", "\n\n\n", 1)
    )
    labels.write_text(edited)
    assert labels.read_text() != text
    assert code_version("speechlens.probing", root=package) == before


def test_a_code_edit_in_any_imported_module_changes_it(package):
    probing = code_version("speechlens.probing", root=package)
    extract = code_version("speechlens.extract", root=package)
    corpora = code_version("speechlens.corpora", root=package)
    tables = package / "tables.py"  # the probe table's spec: probing imports it, extract not
    tables.write_text(tables.read_text() + "\nEDITED = 1\n")
    assert code_version("speechlens.probing", root=package) != probing
    assert code_version("speechlens.extract", root=package) == extract
    probing = code_version("speechlens.probing", root=package)
    labels = package / "labels.py"  # the frame-centre rule: probing's labels, and the
    labels.write_text(labels.read_text() + "\nEDITED = 1\n")  # segment pooling of reduce
    assert code_version("speechlens.probing", root=package) != probing
    assert code_version("speechlens.extract", root=package) != extract  # via reduce
    extract = code_version("speechlens.extract", root=package)
    store = package / "store.py"
    store.write_text(store.read_text() + "\nEDITED = 1\n")
    assert code_version("speechlens.extract", root=package) != extract
    assert code_version("speechlens.corpora", root=package) == corpora  # imports none


def test_the_cache_between_runs_never_hides_an_edit(package, tmp_path, monkeypatch):
    """The per-file cache (kept by the workflow between runs) is keyed by path, time and
    size: a run that loads it gives the same versions, and an edited file is re-read."""
    from speechlens import codeversion as cv

    monkeypatch.setattr(cv, "_PARSED", {})
    monkeypatch.setattr(cv, "_SAVED", set())
    cache = tmp_path / "cache" / "code_versions.json"
    before = cv.code_version("speechlens.probing", root=package)
    cv.save_cache(cache)
    saved = cache.read_text()
    assert str(package / "labels.py") in saved

    monkeypatch.setattr(cv, "_PARSED", {})  # a new run: nothing parsed yet ...
    monkeypatch.setattr(cv, "_SAVED", set())
    cv.load_cache(cache)
    parsed = []
    monkeypatch.setattr(cv.ast, "parse", lambda *a, **k: parsed.append(a) or ast_parse(*a, **k))
    assert cv.code_version("speechlens.probing", root=package) == before
    assert parsed == []  # ... and every file came from the cache
    labels = package / "labels.py"
    labels.write_text(labels.read_text() + "\nEDITED = 1\n")
    assert cv.code_version("speechlens.probing", root=package) != before
    assert len(parsed) == 1  # only the edited file was parsed again
    cv.save_cache(cache)
    assert cache.read_text().count(str(labels)) == 1  # its old entry is dropped

    cache.write_text("not json")  # a damaged cache only costs time
    monkeypatch.setattr(cv, "_PARSED", {})
    cv.load_cache(cache)
    assert cv.code_version("speechlens.probing", root=package) != before


def test_relative_imports_are_followed(tmp_path):
    root = tmp_path / "speechlens"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text('__version__ = "0"\n')
    (root / "sub" / "__init__.py").write_text("from . import a\n")
    (root / "sub" / "a.py").write_text("from ..b import f\nX = f()\n")
    (root / "b.py").write_text("def f():\n    return 1\n")
    assert module_closure("speechlens.sub", root=root) == [
        "speechlens.b",
        "speechlens.sub",
        "speechlens.sub.a",
    ]
    before = code_version("speechlens.sub", root=root)
    (root / "b.py").write_text("def f():\n    return 2\n")
    assert code_version("speechlens.sub", root=root) != before


def test_modules_imported_on_first_use_count(tmp_path):
    """A package that imports a module lazily names it in a string (PEP 562 exports,
    importlib): the module is part of the closure, so editing it changes the version."""
    root = tmp_path / "speechlens"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text('__version__ = "0"\n')
    (root / "sub" / "__init__.py").write_text(
        'import importlib\n_LAZY = {"speechlens.sub.heavy": ("f",)}\n'
        'NOT_A_MODULE = "speechlens.sub.missing"\n'
    )
    (root / "sub" / "heavy.py").write_text("def f():\n    return 1\n")
    assert module_closure("speechlens.sub", root=root) == ["speechlens.sub", "speechlens.sub.heavy"]
    before = code_version("speechlens.sub", root=root)
    (root / "sub" / "heavy.py").write_text("def f():\n    return 2\n")
    assert code_version("speechlens.sub", root=root) != before


def test_the_probing_package_counts_its_lazy_modules():
    closure = module_closure("speechlens.probing")
    assert {"speechlens.probing.run", "speechlens.probing.estimators"} <= set(closure)
    assert "speechlens.probes.weighted_sum" in closure  # imported inside a function


def test_bad_names_are_errors_naming_them(tmp_path):
    with pytest.raises(CodeVersionError, match="'speechlens.nope' is not a module"):
        code_version("speechlens.nope")
    with pytest.raises(CodeVersionError, match="name at least one module"):
        code_version()
    script = tmp_path / "plain.py"
    script.write_text("import os\n")
    with pytest.raises(CodeVersionError, match="plain.py imports no speechlens module"):
        script_code_version(script)
    with pytest.raises(CodeVersionError, match="missing.py does not exist"):
        script_code_version(tmp_path / "missing.py")


def test_every_scripted_rule_carries_the_code_version_of_its_own_script():
    """The one line each rule needs (DESIGN.md, "A rule"): a rule without it would not
    rerun when the library code its script uses changes."""
    import re

    checked = 0
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        blocks = re.split(r"\n(?=rule )", "\n" + smk.read_text())
        for block in (b for b in blocks if b.startswith("rule ")):
            name = block.split(":")[0].removeprefix("rule ")
            script = re.search(r"^\s+script:\s*\n\s+\"[^\"]*/([\w.]+)\"", block, flags=re.M)
            if script is None:
                continue
            line = f'code=code_version("{script.group(1)}")'
            assert line in block, f"{smk.name}: rule {name} lacks params {line}"
            checked += 1
    assert checked >= 16


def test_a_script_counts_by_its_code_not_its_comments(tmp_path):
    script = tmp_path / "rule.py"
    script.write_text('"""A rule."""\nfrom speechlens import store\n\nX = 1\n')
    before = script_code_version(script)
    script.write_text('"""Another docstring."""\nfrom speechlens import store  # same\n\nX = 1\n')
    assert script_code_version(script) == before
    script.write_text('"""A rule."""\nfrom speechlens import store\n\nX = 2\n')
    assert script_code_version(script) != before
