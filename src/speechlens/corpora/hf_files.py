"""The parquet files of one config and split of a Hugging Face dataset, local or from the hub.

Which files hold a split is decided, in this order, by

1. the spec's ``data_files``: glob patterns relative to the repository (or folder);
2. the dataset card: the ``configs`` entry of ``README.md``'s YAML header, as written by
   ``datasets``' ``push_to_hub`` (``- config_name: default`` / ``data_files:`` /
   ``- split: test`` / ``path: data/test-*``);
3. the usual layouts (:func:`layout_patterns`): ``{config}/{split}-*.parquet``,
   ``{config}/{split}/*.parquet`` (the hub's ``refs/convert/parquet`` export), and for the
   ``default`` config ``data/{split}-*.parquet``, ``{split}-*.parquet``, ... ; the first
   layout with files wins.

Patterns are matched with :func:`fnmatch.fnmatchcase` on ``/``-separated paths (``*`` also
crosses ``/``, as in huggingface_hub's ``allow_patterns``). Only parquet is read: a pattern
that matches other files is an error.

From the hub, :func:`hub_snapshot` calls :func:`huggingface_hub.snapshot_download` with the
pinned ``revision`` and ``allow_patterns`` (first ``README.md`` alone, then the split's
files), so the files land in (and are reused from) huggingface_hub's cache. With
``HF_HUB_OFFLINE=1`` huggingface_hub reads that cache only; a snapshot that is not there is a
:class:`~speechlens.corpora.contract.CorpusError` saying how to provide it.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from speechlens.corpora.contract import CorpusError

log = logging.getLogger(__name__)

COMMIT = re.compile(r"^[0-9a-f]{40}$")
README = "README.md"


@dataclass(frozen=True)
class DataFiles:
    """The split's parquet files: ``files`` are ``/``-separated paths relative to ``root``.

    ``commit`` is the snapshot's commit hash (hub only); ``chosen_by`` says which rule of the
    module docstring picked the files and ``patterns`` are its patterns.
    """

    root: Path
    files: tuple[str, ...]
    patterns: tuple[str, ...]
    chosen_by: str
    commit: str | None = None


def layout_patterns(config: str, split: str) -> list[list[str]]:
    """The usual parquet layouts of a config's split, most specific first (one list each)."""
    layouts = [
        [f"{config}/{split}-*.parquet", f"{config}/{split}.parquet"],
        [f"{config}/{split}/*.parquet"],
        [f"{config}/partial-{split}/*.parquet"],
    ]
    if config == "default":
        layouts += [
            [f"data/{split}-*.parquet", f"data/{split}.parquet"],
            [f"data/{split}/*.parquet"],
            [f"{split}-*.parquet", f"{split}.parquet"],
            [f"{split}/*.parquet"],
        ]
    return layouts


def card_patterns(readme: str, config: str, split: str, where: str) -> list[str] | None:
    """The split's ``data_files`` patterns from a dataset card, or None when it has no
    ``configs`` entry. Raises :class:`CorpusError` naming the configs or splits it has."""
    header = _front_matter(readme, where)
    configs = header.get("configs") if isinstance(header, Mapping) else None
    if not configs:
        return None
    if not isinstance(configs, list):
        raise CorpusError(f"{where}: `configs` in the card header is not a list")
    names = [c.get("config_name", "default") for c in configs if isinstance(c, Mapping)]
    entry = next(
        (c for c in configs if isinstance(c, Mapping) and c.get("config_name") == config), None
    )
    if entry is None:
        raise CorpusError(
            f"{where}: the dataset card has no config {config!r} (config key `config`; "
            f"configs: {names})"
        )
    splits = _splits(entry.get("data_files"), where)
    if split not in splits:
        raise CorpusError(
            f"{where}: config {config!r} has no split {split!r} (config key `split`; "
            f"splits: {sorted(splits)})"
        )
    return splits[split]


def _front_matter(readme: str, where: str) -> object:
    lines = readme.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    except StopIteration:
        return {}
    try:
        return yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as err:
        raise CorpusError(f"{where}: the card's YAML header cannot be parsed ({err})") from err


def _splits(data_files: object, where: str) -> dict[str, list[str]]:
    """``data_files`` of a card config -> {split: patterns}; a bare pattern list is ``train``."""
    if isinstance(data_files, str):
        return {"train": [data_files]}
    if isinstance(data_files, Mapping):
        return {str(k): _as_list(v, where) for k, v in data_files.items()}
    if isinstance(data_files, list) and all(isinstance(x, str) for x in data_files):
        return {"train": list(data_files)}
    if isinstance(data_files, list):
        out: dict[str, list[str]] = {}
        for item in data_files:
            if not isinstance(item, Mapping) or "split" not in item or "path" not in item:
                raise CorpusError(f"{where}: data_files entry {item!r} has no split and path")
            out.setdefault(str(item["split"]), []).extend(_as_list(item["path"], where))
        return out
    raise CorpusError(f"{where}: data_files {data_files!r} is not a pattern, list or mapping")


def _as_list(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return list(value)
    raise CorpusError(f"{where}: data_files path {value!r} is not a pattern or list of patterns")


def listing(root: Path) -> list[str]:
    """Every file below ``root`` as a ``/``-separated relative path, sorted; hidden files and
    folders (``.cache``, ``.git``) are left out. Links (the hub cache's) are followed."""
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        out.append(rel.as_posix())
    return sorted(out)


def match(files: list[str], patterns: list[str], where: str) -> list[str]:
    """The files matching any pattern, sorted; an error if any of them is not parquet."""
    hits = sorted({f for f in files for p in patterns if fnmatch.fnmatchcase(f, p)})
    other = [f for f in hits if not f.endswith(".parquet")]
    if other:
        raise CorpusError(
            f"{where}: data files {other[:5]} are not parquet; hf_dataset reads parquet only "
            "(use the hub's parquet export, revision refs/convert/parquet)"
        )
    return hits


def choose(
    root: Path, config: str, split: str, data_files: list[str] | None, where: str
) -> DataFiles:
    """The split's parquet files below ``root`` (rules 1-3 of the module docstring)."""
    files = listing(root)
    card = root / README
    from_card = None
    if not data_files and card.is_file():
        from_card = card_patterns(_read(card), config, split, str(card))
    if data_files:
        candidates = [(list(data_files), "data_files")]
    elif from_card is not None:
        candidates = [(from_card, f"the configs entry of {README}")]
    else:
        candidates = [(p, "the usual parquet layout") for p in layout_patterns(config, split)]
    for patterns, chosen_by in candidates:
        found = match(files, patterns, where)
        if found:
            log.info("%s: %d parquet files by %s %s", where, len(found), chosen_by, patterns)
            return DataFiles(root, tuple(found), tuple(patterns), chosen_by)
    tried = [p for patterns, _ in candidates for p in patterns]
    parquet = [f for f in files if f.endswith(".parquet")]
    raise CorpusError(
        f"{where}: no parquet files for config {config!r} split {split!r} (patterns {tried}); "
        f"parquet files here: {parquet[:20]}"
        + (f" ... ({len(parquet)} in all)" if len(parquet) > 20 else "")
        + "; set `data_files` to glob patterns of the split's files"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}: cannot read ({err})") from err


def hub_patterns(root: Path, config: str, split: str, data_files: list[str] | None) -> list[str]:
    """``allow_patterns`` of the split's files, given a snapshot ``root`` holding the card."""
    if data_files:
        return list(data_files)
    card = root / README
    if card.is_file():
        patterns = card_patterns(_read(card), config, split, str(card))
        if patterns is not None:
            return patterns
    return [p for layout in layout_patterns(config, split) for p in layout]


def hub_snapshot(
    repo: str,
    revision: str,
    config: str,
    split: str,
    data_files: list[str] | None,
    cache_dir: str | None,
) -> DataFiles:
    """Download (or find in huggingface_hub's cache) the split's files of dataset ``repo`` at
    ``revision``; returns them as :class:`DataFiles` with the snapshot's commit."""
    where = f"hf_dataset {repo}@{revision}"
    if not COMMIT.match(revision):
        log.warning(
            "%s: revision %r is not a commit hash, so the data may change; pin the commit "
            "recorded in hf_dataset.json",
            where,
            revision,
        )
    card_root = _snapshot(repo, revision, cache_dir, [README], where)
    patterns = hub_patterns(card_root, config, split, data_files)
    root = _snapshot(repo, revision, cache_dir, patterns, where)
    found = choose(root, config, split, data_files, where)
    return DataFiles(found.root, found.files, found.patterns, found.chosen_by, root.name)


def _snapshot(
    repo: str, revision: str, cache_dir: str | None, patterns: list[str], where: str
) -> Path:
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = huggingface_hub.snapshot_download(
            repo,
            repo_type="dataset",
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=patterns,
        )
    except LocalEntryNotFoundError as err:
        cache = cache_dir or constants.HF_HUB_CACHE
        offline = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else "it is unreachable"
        raise CorpusError(
            f"{where}: the files {patterns} are not in huggingface_hub's cache {cache} and the "
            f"hub cannot be asked ({offline}). Download them where the hub is reachable, into "
            f"the same cache: `hf download {repo} --repo-type dataset --revision {revision} "
            + " ".join(f"--include '{p}'" for p in patterns)
            + "`, or copy the parquet files into a folder and set `path` to it instead of "
            f"`repo` ({err})"
        ) from err
    except (OSError, ValueError) as err:  # not found, gated, bad repo id, ...
        raise CorpusError(f"{where}: {type(err).__name__}: {err}") from err
    return Path(folder)
