"""Corpus kind ``commonvoice``: a local, extracted Mozilla Common Voice release (for LID).

Common Voice is downloaded by each user from its site after accepting its terms, so this
kind reads a release already on disk. Spec keys (besides the sampling keys of
:mod:`speechlens.corpora.sources`, applied per language, ``seed``, ``sample_rate``,
``on_bad_audio``, ``max_duration_s`` and ``fill_silence``, as for ``folder``):

- ``path``: a release folder holding one folder per language
  (``cv-corpus-<version>/<locale>/validated.tsv`` + ``clips/``), or one language folder;
- ``languages``: the locale folders to read (default: every folder below ``path`` with a
  ``validated.tsv``; ignored when ``path`` itself is a language folder);
- ``table``: the clip list read in each language folder, default ``validated.tsv``.

Columns used: ``client_id`` (the speaker), ``path`` (the clip under ``clips/``),
``sentence`` (the text), ``gender`` (``male``/``female``; newer releases'
``male_masculine``/``female_feminine`` are mapped to those, empty to ``unknown``, other
values kept) and ``locale`` (the language; the folder name when the column is missing or
empty). Other columns (``age``, ``accents``, ...) are not kept. Clip tables are unquoted
TSV (a sentence may hold a bare ``"``). Clips are MP3, read by libsndfile (>= 1.1) through
soundfile. Utterance ids are the clip names without ``.mp3``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path

from speechlens import schema
from speechlens.corpora.contract import CorpusError
from speechlens.corpora.sources import Source, build_folder_corpus, sample
from speechlens.corpora.tables import clean

log = logging.getLogger(__name__)

REQUIRED = ["client_id", "path", "sentence"]
GENDERS = {
    "male": "male",
    "female": "female",
    "male_masculine": "male",
    "female_feminine": "female",
    "": "unknown",
}


def build(spec: Mapping, out_dir: Path, *, threads: int = 1) -> None:
    """Build a Common Voice corpus described by ``spec`` into ``out_dir`` (atomically)."""
    spec = schema.merge(dict(spec), "$defs.commonvoice")
    if not spec.get("path"):
        raise CorpusError("commonvoice corpus spec: `path` (the extracted release) is required")
    root = Path(spec["path"]).expanduser()
    if not root.is_dir():
        raise CorpusError(f"commonvoice corpus spec: `path` {root} is not a folder")
    sources = []
    for folder in language_folders(root, spec["table"], spec.get("languages")):
        sources += read_clips(root, folder, spec["table"])
    build_folder_corpus(
        sample(sources, spec), root, out_dir, spec, threads=threads, what=f"commonvoice {root}"
    )


def language_folders(root: Path, table: str, languages: list[str] | None) -> list[Path]:
    """The language folders to read: ``root`` itself, the named ones, or all with ``table``."""
    if (root / table).is_file():
        return [root]
    if languages:
        missing = [lang for lang in languages if not (root / lang / table).is_file()]
        if missing:
            raise CorpusError(f"{root}: no {table} in the language folders {missing}")
        return [root / lang for lang in languages]
    found = sorted(p.parent for p in root.glob(f"*/{table}"))
    if not found:
        raise CorpusError(f"{root}: no {table} here or in any <language>/ folder")
    return found


def read_clips(root: Path, folder: Path, table: str) -> list[Source]:
    """The clips listed in ``folder/table``; each must exist under ``folder/clips``."""
    path = folder / table
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise CorpusError(f"{path}: empty file (no header)")
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise CorpusError(f"{path}: missing columns {missing} (found {header})")
        sources = []
        for line_no, record in enumerate(reader, 2):
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                raise CorpusError(
                    f"{path} row {line_no}: {len(record)} fields, the header has {len(header)}"
                )
            row = dict(zip(header, record, strict=True))
            sources.append(_source(root, folder, row, f"{path} row {line_no}"))
    if not sources:
        raise CorpusError(f"{path}: no clips listed")
    return sources


def _source(root: Path, folder: Path, row: Mapping[str, str], where: str) -> Source:
    clip = clean(row["path"])
    if not clip or "/" in clip or "\\" in clip or clip.startswith("."):
        raise CorpusError(f"{where}: path {clip!r} is not a clip file name")
    audio = folder / "clips" / clip
    if not audio.is_file():
        raise CorpusError(f"{where}: clip {audio} does not exist")
    speaker = clean(row["client_id"])
    if not speaker:
        raise CorpusError(f"{where}: empty client_id")
    gender = clean(row.get("gender", ""))
    return Source(
        utterance_id=clip.removesuffix(".mp3"),
        audio=str(audio.relative_to(root)),
        speaker=speaker,
        language=clean(row.get("locale", "")) or folder.name,
        gender=GENDERS.get(gender, gender),
        text=clean(row["sentence"]),
    )
