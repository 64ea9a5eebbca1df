"""Provenance of a corpus' results: the models (weights checksums, revision, init), the code
(speechlens version, git commit of the workflow), the library versions, and the full
configuration with its defaults filled in.

Written as a tidy TSV (one row per model) and an HTML page for the report.
"""

from __future__ import annotations

import html
import importlib.metadata
import json
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import yaml

from speechlens import store
from speechlens.atomic import write_text

COLUMNS = [
    "model",
    "family",
    "adapter",
    "source",
    "revision",
    "init",
    "seed",
    "weights_sha256",
    "layers",
    "features",
    "frame_rate_hz",
    "utterances",
    "store_dtype",
    "config_hash",
    "speechlens_version",
    "torch_version",
    "transformers_version",
]
LIBRARIES = (
    "speechlens",
    "torch",
    "transformers",
    "numpy",
    "pandas",
    "scikit-learn",
    "xarray",
    "zarr",
    "matplotlib",
    "snakemake",
)


def _weights(value) -> str:
    """Weights checksums as ``file=sha256`` pairs (``;``-separated), or the attr's text."""
    if isinstance(value, Mapping):
        return "; ".join(f"{name}={digest}" for name, digest in sorted(value.items()))
    return "" if value is None else str(value)


def model_table(stores: Mapping[str, str | Path]) -> pd.DataFrame:
    """One row per model (columns :data:`COLUMNS`) from its feature store's attrs and sizes.

    ``stores`` maps model name -> ``features.zarr``; a store that is not a feature store
    raises the store's own error naming the path.
    """
    rows = []
    for model, path in stores.items():
        ds = store.open_store(path)
        store.validate(ds, str(path))
        a = ds.attrs
        rows.append(
            {
                "model": model,
                "family": a.get("family"),
                "adapter": a.get("adapter"),
                "source": a.get("source"),
                "revision": a.get("resolved_revision") or a.get("revision"),
                "init": a.get("init"),
                "seed": a.get("seed"),
                "weights_sha256": _weights(a.get("weights")),
                "layers": int(ds.sizes["layer"]),
                "features": int(ds.sizes["feature"]),
                "frame_rate_hz": a.get("frame_rate_hz"),
                "utterances": int(ds.sizes["utterance"]),
                "store_dtype": a.get("dtype"),
                "config_hash": a.get("config_hash"),
                "speechlens_version": a.get("speechlens_version"),
                "torch_version": a.get("torch_version"),
                "transformers_version": a.get("transformers_version"),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def git_state(repo: str | Path | None) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git checkout at ``repo``
    (None when ``repo`` is not a git checkout or git is not installed). ``dirty``: tracked
    files differ from the commit."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    if repo is None:
        return {"commit": None, "dirty": None}
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries the results depend on, and Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def render_html(table: pd.DataFrame, config: Mapping, code: Mapping, versions: Mapping) -> str:
    """A self-contained HTML page: models table, code state, versions, config as YAML."""
    code_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in {**code, **versions}.items()
    )
    config_yaml = yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>provenance</title>"
        "<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
        "td{font-family:monospace;word-break:break-all}</style></head><body>\n"
        "<h2>Models</h2>\n"
        + table.to_html(index=False, na_rep="", border=0)
        + "\n<h2>Code and libraries</h2>\n<table>"
        + code_rows
        + "</table>\n<h2>Configuration (defaults filled in)</h2>\n<pre>"
        + html.escape(config_yaml)
        + "</pre>\n</body></html>\n"
    )


def _plain(obj):
    """``obj`` as plain JSON types (Snakemake's config may hold its own mapping types)."""
    return json.loads(json.dumps(obj, default=str))


def write_provenance(
    stores: Mapping[str, str | Path],
    config: Mapping,
    out_tsv: str | Path,
    out_html: str | Path,
    *,
    repo: str | Path | None = None,
) -> pd.DataFrame:
    """Write the models table (TSV) and the provenance page (HTML), each atomically.

    ``repo``: the workflow's folder, whose git commit is recorded. Returns the table.
    """
    table = model_table(stores)
    write_text(out_tsv, table.to_csv(sep="\t", index=False, lineterminator="\n"))
    write_text(out_html, render_html(table, config, git_state(repo), library_versions()))
    return table
