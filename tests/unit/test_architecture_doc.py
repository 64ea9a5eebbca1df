"""docs/architecture.md stays true to the code: every module it names exists, and every
module of src/speechlens is named.

A module is named as ``speechlens.x.y`` or ``src/speechlens/x/y.py`` (a package as
``speechlens.x``, ``src/speechlens/x/`` or through any of its modules). A dotted name may
end in an attribute of its module (``speechlens.models.has_capability``); the attribute must
be defined or imported at the module's top level.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from tests.conftest import REPO

DOC = REPO / "docs" / "architecture.md"
SRC = REPO / "src"
DOTTED = re.compile(r"(?<![\w./-])speechlens(?:\.[A-Za-z_]\w*)+")
PATHS = re.compile(r"(?<![\w.-])src/speechlens/[\w/]*?(?:\w+\.py|/)(?![\w/])")


def modules() -> set[str]:
    """Dotted names of every module and package under src/speechlens (not the top level)."""
    out = set()
    for path in (SRC / "speechlens").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if len(parts) > 1:
            out.add(".".join(parts))
    return out


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


@cache
def top_level_names(path: Path) -> frozenset[str]:
    """Names a module defines, assigns or imports at its top level."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return frozenset(names)


def referenced(text: str) -> tuple[set[str], list[str]]:
    """(modules the text names, names that are neither a module nor a module attribute)."""
    named, bad = set(), []
    for ref in DOTTED.findall(text):
        ref = ref.rstrip(".")
        if module_file(ref):
            named.add(ref)
            continue
        parent, _, attr = ref.rpartition(".")
        if module_file(parent) and attr in top_level_names(module_file(parent)):
            named.add(parent)
        else:
            bad.append(ref)
    for ref in PATHS.findall(text):
        path = REPO / ref
        if ref.endswith("/") and (path / "__init__.py").is_file():
            named.add(".".join(Path(ref).relative_to("src").parts))
        elif ref.endswith(".py") and path.is_file():
            parts = Path(ref).relative_to("src").with_suffix("").parts
            named.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        else:
            bad.append(ref)
    return named, bad


def covered(named: set[str]) -> set[str]:
    """Modules named, and packages named through one of their modules."""
    out = set(named)
    for name in named:
        parts = name.split(".")
        out |= {".".join(parts[:i]) for i in range(2, len(parts))}
    return out


def test_the_page_names_only_modules_that_exist():
    _, bad = referenced(DOC.read_text())
    assert not bad, f"docs/architecture.md names modules that do not exist: {sorted(set(bad))}"


def test_the_page_names_every_module():
    named, _ = referenced(DOC.read_text())
    missing = modules() - covered(named)
    assert not missing, f"docs/architecture.md does not name: {sorted(missing)}"


def test_the_checker_tells_names_from_non_names():
    """The test's own parser on a toy text: a real module, a real attribute, a package path,
    a missing module and a missing attribute."""
    text = (
        "speechlens.store and speechlens.models.has_capability; src/speechlens/tera/;"
        " speechlens.nothing_here, src/speechlens/gone.py and speechlens.tables.NoSuchThing."
    )
    named, bad = referenced(text)
    assert named == {"speechlens.store", "speechlens.models", "speechlens.tera"}
    assert sorted(bad) == [
        "speechlens.nothing_here",
        "speechlens.tables.NoSuchThing",
        "src/speechlens/gone.py",
    ]
    assert "speechlens.models" in covered({"speechlens.models.base"})
