"""A version string of the library code a rule runs, so that code edits can rerun its jobs.

Rules carry ``params: code=code_version("probe.py")`` (``rules/common.smk``), the version of
the script and the ``speechlens`` code it imports; Snakemake's ``params`` rerun trigger reruns a
rule's jobs whenever that string changes.

The string is a sha256 over the modules a script imports and every ``speechlens`` module
those import, transitively (the import closure, read from the source with :mod:`ast`;
nothing is imported; a ``speechlens`` module named in a string constant counts as imported,
as packages name the modules they import on first use). Each module counts by its syntax
tree without docstrings, so edits to comments, docstrings, blank lines or formatting change
nothing, while any change to code does. The top-level ``speechlens/__init__.py`` only holds
``__version__`` and is left out: a version bump alone reruns nothing (stores and tables
record the version anyway).

Parsing the package takes about a second; :func:`load_cache` and :func:`save_cache` keep the
per-file results between Snakemake runs (the workflow keeps them in
``.snakemake/speechlens/code_versions.json``), keyed by file path, modification time (ns)
and size, so a no-op run re-reads only files that changed.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

PACKAGE = "speechlens"
ROOT = Path(__file__).resolve().parent
"""The folder of the ``speechlens`` package; modules are found here, never imported."""

_PARSED: dict[tuple, tuple[str, tuple[str, ...]]] = {}
_SAVED: set[tuple] = set()  # keys of _PARSED that are in the cache file already


def load_cache(path: str | Path) -> None:
    """Add the per-file results saved by :func:`save_cache` at ``path`` (if any) to this
    process' cache. A missing, unreadable or foreign file is ignored: it only costs time."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
        parsed = {
            (str(e["path"]), int(e["mtime_ns"]), int(e["size"])): (
                str(e["digest"]),
                tuple(str(d) for d in e["imports"]),
            )
            for e in entries
        }
    except (OSError, ValueError, TypeError, KeyError):
        return
    _PARSED.update(parsed)
    _SAVED.update(parsed)


def _current(key: tuple) -> bool:
    """Whether the file of cache key ``(path, mtime_ns, size)`` still has that time and size."""
    try:
        stat = Path(key[0]).stat()
    except OSError:
        return False
    return (stat.st_mtime_ns, stat.st_size) == key[1:]


def save_cache(path: str | Path) -> None:
    """Write this process' per-file results to ``path`` (atomically), when it parsed a file
    that the file does not hold yet."""
    from speechlens.atomic import write_text

    if set(_PARSED) <= _SAVED:
        return
    entries = [
        {"path": p, "mtime_ns": t, "size": s, "digest": d, "imports": list(i)}
        for (p, t, s), (d, i) in sorted(_PARSED.items())
        if _current((p, t, s))  # older versions of edited files are dropped
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(entries))
    _SAVED.update(_PARSED)


class CodeVersionError(ValueError):
    """A name given for a code version is not a ``speechlens`` module or script on disk."""


def _module_file(name: str, root: Path) -> Path | None:
    """The source file of ``speechlens`` module ``name`` under ``root``; None if not one."""
    parts = name.split(".")
    if parts[0] != PACKAGE or not all(p.isidentifier() for p in parts):
        return None
    base = root.joinpath(*parts[1:])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Drop the docstring statement of the module and of every class and function."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _imports(tree: ast.AST, package: str, root: Path) -> list[str]:
    """``speechlens`` modules imported anywhere in ``tree``; ``package`` resolves relative ones."""
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from . import x`, `from ..store import y`
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            imported.add(module)
            # `from speechlens import store` imports the submodule speechlens.store
            imported.update(f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith(f"{PACKAGE}.")
        ):
            # a module imported on first use names it in a string (a package's lazy
            # exports, importlib.import_module("speechlens.x")): it counts as imported
            imported.add(node.value)
    return sorted(m for m in imported if _module_file(m, root) is not None)


def _parse(name: str, root: Path) -> tuple[str, tuple[str, ...]]:
    """(digest of the docstring-free syntax tree, ``speechlens`` imports) of a module."""
    path = _module_file(name, root)
    if path is None:
        raise CodeVersionError(f"code version: {name!r} is not a module of {PACKAGE} ({root})")
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        tree = ast.parse(path.read_bytes(), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = tuple(_imports(tree, package, root))
        dump = ast.dump(_strip_docstrings(tree), annotate_fields=False)
        _PARSED[key] = hashlib.sha256(dump.encode()).hexdigest(), deps
    return _PARSED[key]


def module_closure(*modules: str, root: Path = ROOT) -> list[str]:
    """The named modules and every ``speechlens`` module they import, transitively, sorted.

    The top-level package ``speechlens`` (its ``__init__``, only ``__version__``) is left out.
    """
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_parse(name, root)[1])
    return sorted(seen - {PACKAGE})


def code_version(*modules: str, root: Path = ROOT) -> str:
    """16 hex digits identifying the code of ``modules`` and their ``speechlens`` imports.

    Unchanged by edits to comments, docstrings and formatting; changed by any code edit in
    the closure (:func:`module_closure`). Raises :class:`CodeVersionError` for a name that
    is not a ``speechlens`` module.
    """
    if not modules:
        raise CodeVersionError("code version: name at least one module")
    digest = hashlib.sha256()
    for name in module_closure(*modules, root=root):
        digest.update(f"{name}:{_parse(name, root)[0]}\n".encode())
    return digest.hexdigest()[:16]


def imported_modules(script: str | Path, root: Path = ROOT) -> list[str]:
    """The ``speechlens`` modules a Python file (a rule's script) imports directly, sorted."""
    script = Path(script)
    if not script.is_file():
        raise CodeVersionError(f"code version: script {script} does not exist")
    tree = ast.parse(script.read_bytes(), filename=str(script))
    return sorted(set(_imports(tree, "", root)) - {PACKAGE})


def script_code_version(script: str | Path, root: Path = ROOT) -> str:
    """:func:`code_version` of ``script`` itself and the ``speechlens`` modules it imports.

    The script counts by its docstring-free syntax tree, like the modules, so a code edit in
    the script reruns its rule through the ``params`` trigger, while a new file time (a fresh
    clone, a copy) or a comment edit does not. The profiles therefore leave Snakemake's
    ``code`` trigger out: it compares the script's file time with the outputs'.
    """
    modules = imported_modules(script, root)
    if not modules:
        raise CodeVersionError(f"code version: script {script} imports no {PACKAGE} module")
    tree = ast.parse(Path(script).read_bytes(), filename=str(script))
    own = hashlib.sha256(ast.dump(_strip_docstrings(tree), annotate_fields=False).encode())
    digest = hashlib.sha256(f"{own.hexdigest()}:{code_version(*modules, root=root)}".encode())
    return digest.hexdigest()[:16]
