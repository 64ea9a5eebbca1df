"""The packaged config schema: the one home of every default.

``workflow/schemas/config.schema.yaml`` is the schema that the workflow validates against
(``snakemake.utils.validate`` fills its defaults); the package ships the same file
(``speechlens/schemas/config.schema.yaml``, a link to it), so library callers outside the
workflow read the very same defaults through :func:`defaults` instead of a second copy.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

SCHEMA_PATH = Path(str(resources.files("speechlens") / "schemas" / "config.schema.yaml"))


@cache
def _schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        # libyaml's loader when built (5x faster: the workflow reads the schema at start-up)
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def schema() -> dict:
    """The config schema (a deep copy: callers may change it)."""
    return copy.deepcopy(_schema())


def _resolve(node: dict) -> dict:
    """``node`` with a local ``$ref`` (``#/$defs/name``) followed."""
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"{SCHEMA_PATH}: only local $ref are supported, got {ref!r}")
        node = _schema()
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def subschema(path: str) -> dict:
    """The schema node at a dotted config ``path`` (``"probing.settings"``), or at a
    definition (``"$defs.task"``); ``$ref`` followed."""
    node = _schema()
    for part in path.split("."):
        node = _resolve(node)
        if part == "$defs":
            node = node["$defs"]
        elif "properties" in node and part in node["properties"]:
            node = node["properties"][part]
        elif part in node:  # a $defs entry
            node = node[part]
        else:
            raise KeyError(f"{SCHEMA_PATH}: no config key {path!r} (at {part!r})")
    return _resolve(node)


def defaults(path: str) -> dict:
    """The defaults of the object at ``path`` (see :func:`subschema`), nested objects
    included: ``{key: default}`` for each property that has one or is an object with
    properties. A deep copy: callers may change it."""
    return _defaults(subschema(path))


def _defaults(node: dict) -> dict:
    out = {}
    for key, prop in node.get("properties", {}).items():
        prop = _resolve(prop)
        if "default" in prop and not (prop["default"] == {} and "properties" in prop):
            out[key] = copy.deepcopy(prop["default"])
        elif prop.get("type") == "object" and "properties" in prop:
            out[key] = _defaults(prop)
    return out


def merge(user: dict | None, path: str) -> dict:
    """``user`` settings over the schema's defaults at ``path``, nested objects merged key by
    key (unknown keys are kept; the schema check names them)."""
    return _merge(defaults(path), user or {})


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif value is not None or key not in out:
            out[key] = value
    return out
