"""Config checking with messages that name the key, and a stable hash for provenance."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    """A config value or key is wrong; the message names its dotted path."""


def load_schema(path: str | Path) -> dict:
    """Read a JSON schema written in YAML (libyaml's safe loader when built)."""
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def config_errors(config: Mapping, schema: Mapping) -> list[str]:
    """All schema violations of ``config`` as ``'config key a.b.c: reason'`` lines, sorted."""
    validator = jsonschema.Draft202012Validator(schema)
    lines = []
    for error in validator.iter_errors(config):
        # descend into if/then branches so the reason names the offending key
        leaves = _leaves(error)
        for leaf in leaves:
            path = ".".join(str(p) for p in leaf.absolute_path) or "(top level)"
            lines.append(f"config key {path}: {leaf.message}")
    return sorted(set(lines))


def _leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    if not error.context:
        return [error]
    return [leaf for sub in error.context for leaf in _leaves(sub)]


def check_config(config: Mapping, schema_path: str | Path) -> None:
    """Raise :class:`ConfigError` listing every violation, each naming its key."""
    errors = config_errors(config, load_schema(schema_path))
    if errors:
        raise ConfigError(f"invalid configuration ({schema_path}):\n  " + "\n  ".join(errors))


def config_hash(obj: object) -> str:
    """Short sha256 of a JSON-serialisable object with sorted keys (stable across runs)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
