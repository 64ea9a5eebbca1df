"""Package attributes imported on first use (PEP 562), for packages whose heavy modules
(torch, scikit-learn) the workflow's start-up or a light job does not need.

A package lists ``{"speechlens.pkg.module": ("name", ...)}`` in its ``__init__`` and sets
``__getattr__ = lazy_getattr(__name__, globals(), that_mapping)``. The module names stay
string constants in the ``__init__``: :mod:`speechlens.codeversion` counts them as imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence


def lazy_getattr(
    package: str, namespace: dict, modules: Mapping[str, Sequence[str]]
) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``package``: an attribute named in ``modules``
    (module -> names) is imported from its module on first access and kept in
    ``namespace`` (the package's ``globals()``); any other name is an AttributeError."""
    owner = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):  # noqa: N807 (PEP 562 hook)
        module = owner.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
