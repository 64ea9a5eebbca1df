"""Corpus kind ``librispeech``: a LibriSpeech subset (Panayotov et al. 2015, OpenSLR 12).

Spec keys (besides the sampling keys of :mod:`speechlens.corpora.sources`, ``seed``,
``sample_rate``, ``on_bad_audio``, ``max_duration_s`` and ``fill_silence``, as for ``folder``):

- ``subset``: ``dev-clean`` (default), ``dev-other``, ``test-clean``, ``test-other``,
  ``train-clean-100``, ``train-clean-360`` or ``train-other-500``;
- ``path``: an already extracted copy (a folder holding ``LibriSpeech/<subset>`` or
  ``<subset>``); when given nothing is downloaded;
- otherwise ``url`` (default: the OpenSLR archive of :data:`ARCHIVES`) and ``sha256``
  (default: the pin of :data:`ARCHIVES` when the URL's file name is the subset's archive,
  as on a mirror; required for any other file) are fetched into ``downloads`` (default
  ``resources/downloads``) and extracted there (:mod:`speechlens.corpora.download`);
- ``alignments`` (optional): Praat TextGrids, e.g. from the Montreal Forced Aligner, as
  ``{path: folder}`` or ``{url: archive, sha256: pin}``. TextGrids are found anywhere
  below it (MFA's ``<speaker>/<chapter>/<utterance>.TextGrid`` or flat) and matched by
  file name to utterance ids; TextGrids of utterances not in the corpus are ignored.
  ``tiers`` maps TextGrid tier names to contract tiers (default ``phones``/``words``).

The layout read is the archive's: ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt``
(one ``<utterance_id> <TEXT>`` line per utterance), FLAC audio ``<utterance_id>.flac``
beside it, and ``SPEAKERS.TXT`` (``ID | SEX | SUBSET | MINUTES | NAME``, ``;`` comments)
giving each speaker's gender. Language is ``en``; extra columns ``chapter`` and ``subset``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from speechlens import schema
from speechlens.corpora import download
from speechlens.corpora.alignments import Alignments, read_textgrid
from speechlens.corpora.contract import CorpusError
from speechlens.corpora.folder import DEFAULT_TIERS
from speechlens.corpora.sources import Source, build_folder_corpus, sample
from speechlens.corpora.tables import clean

log = logging.getLogger(__name__)

OPENSLR = "https://www.openslr.org/resources/12"
# sha256 of the OpenSLR archives as published in torchaudio's LIBRISPEECH dataset
# (pytorch/audio, src/torchaudio/datasets/librispeech.py, `_CHECKSUMS`) and, identically,
# in Apple's mlx-data LibriSpeech loader. Not re-verified here (no network in tests).
ARCHIVES: dict[str, tuple[str, str]] = {
    "dev-clean": (
        f"{OPENSLR}/dev-clean.tar.gz",
        "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    ),
    "dev-other": (
        f"{OPENSLR}/dev-other.tar.gz",
        "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    ),
    "test-clean": (
        f"{OPENSLR}/test-clean.tar.gz",
        "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    ),
    "test-other": (
        f"{OPENSLR}/test-other.tar.gz",
        "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    ),
    "train-clean-100": (
        f"{OPENSLR}/train-clean-100.tar.gz",
        "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    ),
    "train-clean-360": (
        f"{OPENSLR}/train-clean-360.tar.gz",
        "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    ),
    "train-other-500": (
        f"{OPENSLR}/train-other-500.tar.gz",
        "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
    ),
}
GENDERS = {"F": "female", "M": "male"}


def build(spec: Mapping, out_dir: Path, *, threads: int = 1) -> None:
    """Build a LibriSpeech corpus described by ``spec`` into ``out_dir`` (atomically)."""
    spec = schema.merge(dict(spec), "$defs.librispeech")
    subset = spec["subset"]
    if subset not in ARCHIVES:
        raise CorpusError(f"librispeech corpus spec: subset {subset!r} not one of {list(ARCHIVES)}")
    release = _release_folder(spec)
    subset_dir = find_subset(release, subset)
    sources = sample(read_subset(subset_dir, read_speakers(subset_dir)), spec)
    alignments = None
    if spec.get("alignments"):
        tiers = spec.get("tiers") or DEFAULT_TIERS
        folder = _alignment_folder(spec["alignments"], spec)
        alignments = read_textgrid_tree(folder, {s.utterance_id for s in sources}, tiers)
    build_folder_corpus(
        sources,
        subset_dir,
        out_dir,
        spec,
        alignments=alignments,
        threads=threads,
        what=f"librispeech {subset}",
    )


def archive_pin(spec: Mapping) -> tuple[str, str]:
    """(url, sha256) of the subset's archive: the spec's, else :data:`ARCHIVES`'."""
    default_url, default_sha = ARCHIVES[spec["subset"]]
    url = spec.get("url") or default_url
    sha = spec.get("sha256")
    if sha is None:
        if download.file_name(url) != download.file_name(default_url):
            raise CorpusError(
                f"librispeech corpus spec: `sha256` is required for url {url!r} "
                f"(no pinned hash for a file other than {download.file_name(default_url)})"
            )
        sha = default_sha
    return url, sha


def _release_folder(spec: Mapping) -> Path:
    if spec.get("path"):
        root = Path(spec["path"]).expanduser()
        if not root.is_dir():
            raise CorpusError(f"librispeech corpus spec: `path` {root} is not a folder")
        return root
    url, sha = archive_pin(spec)
    return download.fetch_and_extract(url, sha, spec["downloads"], retries=spec["retries"])


def _alignment_folder(value: Mapping, spec: Mapping) -> Path:
    if value.get("path"):
        path = Path(value["path"]).expanduser()
        if not path.is_dir():
            raise CorpusError(f"librispeech corpus spec: alignments.path {path} is not a folder")
        return path
    if not value.get("url") or not value.get("sha256"):
        raise CorpusError("librispeech corpus spec: alignments needs `path`, or `url` and `sha256`")
    return download.fetch_and_extract(
        value["url"], value["sha256"], spec["downloads"], retries=spec["retries"]
    )


def find_subset(release: Path, subset: str) -> Path:
    """The ``<subset>`` folder inside an extracted release (``LibriSpeech/<subset>``)."""
    for candidate in (release / "LibriSpeech" / subset, release / subset, release):
        if candidate.name == subset and candidate.is_dir():
            return candidate
    raise CorpusError(f"{release}: no LibriSpeech/{subset} or {subset} folder")


def read_speakers(subset_dir: Path) -> dict[str, str]:
    """Speaker id -> gender (``female``/``male``) from ``SPEAKERS.TXT`` beside the subset."""
    candidates = (subset_dir.parent / "SPEAKERS.TXT", subset_dir / "SPEAKERS.TXT")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        log.warning("%s: no SPEAKERS.TXT; genders are unknown", subset_dir)
        return {}
    genders = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in line.split("|", 4)]
        if len(fields) < 2 or fields[1] not in GENDERS:
            raise CorpusError(f"{path} line {line_no}: expected 'ID | SEX | ...', got {line!r}")
        genders[fields[0]] = GENDERS[fields[1]]
    return genders


def read_subset(subset_dir: Path, genders: Mapping[str, str]) -> list[Source]:
    """Every utterance listed in the subset's ``*.trans.txt`` files, audio checked to exist."""
    transcripts = sorted(subset_dir.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise CorpusError(f"{subset_dir}: no <speaker>/<chapter>/*.trans.txt transcripts")
    sources = []
    for path in transcripts:
        speaker, chapter = path.parent.parent.name, path.parent.name
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt, _, text = line.strip().partition(" ")
            where = f"{path} line {line_no}"
            if not utt.startswith(f"{speaker}-{chapter}-"):
                raise CorpusError(f"{where}: utterance {utt!r} is not {speaker}-{chapter}-*")
            audio = path.parent / f"{utt}.flac"
            if not audio.is_file():
                raise CorpusError(f"{where}: audio {audio} does not exist")
            sources.append(
                Source(
                    utterance_id=utt,
                    audio=str(audio.relative_to(subset_dir)),
                    speaker=speaker,
                    language="en",
                    gender=genders.get(speaker, "unknown"),
                    text=clean(text),
                    extra={"chapter": chapter, "subset": subset_dir.name},
                )
            )
    return sources


def read_textgrid_tree(folder: Path, wanted: set[str], tiers: Mapping[str, str]) -> Alignments:
    """TextGrids found anywhere below ``folder`` whose file stem is in ``wanted``."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".textgrid")
    if not paths:
        raise CorpusError(f"alignments {folder}: no .TextGrid files")
    ignored: Counter[str] = Counter()
    out: Alignments = {}
    for path in paths:
        if path.stem not in wanted:
            continue
        if path.stem in out:
            raise CorpusError(f"alignments {folder}: two TextGrids for {path.stem!r} ({path})")
        out[path.stem] = read_textgrid(path, tiers, ignored)
    if wanted and not any(out.values()):
        raise CorpusError(
            f"alignments {folder}: no TextGrid of these utterances has a tier named in "
            f"`tiers` {sorted(tiers)} (found {len(out)} TextGrids; ignored tiers {dict(ignored)})"
        )
    if ignored:
        log.info("%s: ignored TextGrid tiers (tier: files) %s", folder, dict(ignored))
    log.info("%s: TextGrids for %d of %d utterances", folder, len(out), len(wanted))
    return out
