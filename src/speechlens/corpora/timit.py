"""Corpus kind ``timit``: a local copy of TIMIT (LDC93S1; licensed, never downloaded).

Spec keys (besides the sampling keys of :mod:`speechlens.corpora.sources`, ``seed``,
``sample_rate``, ``on_bad_audio``, ``max_duration_s`` and ``fill_silence``, as for ``folder``):

- ``path``: the folder holding ``TRAIN/`` and ``TEST/`` (any letter case);
- ``splits``: ``[train, test]`` by default;
- ``sentence_types``: ``[sa, si, sx]`` by default (drop ``sa``, the two dialect
  sentences every speaker reads, as phone-recognition studies usually do);
- ``phone_set``: ``timit61`` (default: TIMIT's own labels, silence being ``h#``, ``pau``
  and ``epi``) or ``timit39``: the folding of Lee & Hon (1989), :data:`FOLD_39`, in which
  closures, ``h#``, ``pau`` and ``epi`` become ``sil`` and the glottal stop ``q`` is
  dropped (with ``fill_silence`` its interval becomes ``sil``).

Layout: ``<split>/DR<n>/<sex><speaker>/<sentence>.WAV`` with ``.PHN``, ``.WRD`` and
``.TXT`` beside it. Audio is NIST SPHERE 16 kHz 16-bit PCM, read by libsndfile through
soundfile (shorten-compressed SPHERE is not supported: decompress it first with
``sph2pipe``). Only files named ``<sentence>.wav`` (any case) are audio, so a copy that
also holds converted ``SA1.WAV.wav`` files lists each sentence once. ``.PHN``/``.WRD``
lines are ``<start> <end> <label>`` in samples at 16 kHz; a few TIMIT word files have
words overlapping by some samples: the later word is trimmed to start where the previous
ends (counted in the log). ``.TXT`` is ``<start> <end> <text>``.

Utterance ids are ``<SPEAKER>_<SENTENCE>`` (``FCJF0_SA1``); speaker = the speaker folder
(``FCJF0``), gender from its first letter, extra columns ``dialect`` (``DR1``..``DR8``),
``split`` and ``sentence``. Language is ``en``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from speechlens import schema
from speechlens.corpora.alignments import Segment, make_segment
from speechlens.corpora.contract import SILENCE, CorpusError
from speechlens.corpora.sources import Source, build_folder_corpus, sample
from speechlens.corpora.tables import clean

log = logging.getLogger(__name__)

TIMIT_RATE = 16000
GENDERS = {"f": "female", "m": "male"}
# Lee & Hon (1989) 61 -> 39 folding; labels not listed map to themselves; None = dropped.
FOLD_39: dict[str, str | None] = {
    "ao": "aa",
    "ax": "ah",
    "ax-h": "ah",
    "axr": "er",
    "hv": "hh",
    "ix": "ih",
    "el": "l",
    "em": "m",
    "en": "n",
    "nx": "n",
    "eng": "ng",
    "zh": "sh",
    "ux": "uw",
    "pcl": SILENCE,
    "tcl": SILENCE,
    "kcl": SILENCE,
    "bcl": SILENCE,
    "dcl": SILENCE,
    "gcl": SILENCE,
    "h#": SILENCE,
    "pau": SILENCE,
    "epi": SILENCE,
    "q": None,
}
_SPEAKER = re.compile(r"^[fm][a-z]{3}[0-9]$", re.IGNORECASE)
_DIALECT = re.compile(r"^dr[1-8]$", re.IGNORECASE)
_WAV = re.compile(r"^(s[aix]\d+)\.wav$", re.IGNORECASE)


def build(spec: Mapping, out_dir: Path, *, threads: int = 1) -> None:
    """Build a TIMIT corpus described by ``spec`` into ``out_dir`` (atomically)."""
    spec = schema.merge(dict(spec), "$defs.timit")
    if not spec.get("path"):
        raise CorpusError("timit corpus spec: `path` (folder with TRAIN/ and TEST/) is required")
    root = Path(spec["path"]).expanduser()
    if not root.is_dir():
        raise CorpusError(f"timit corpus spec: `path` {root} is not a folder")
    if spec["phone_set"] not in ("timit61", "timit39"):
        raise CorpusError(f"timit corpus spec: phone_set {spec['phone_set']!r} not timit61/timit39")
    found = list_utterances(root, spec["splits"], spec["sentence_types"])
    sources = sample([source for source, _ in found], spec)
    kept = {s.utterance_id for s in sources}
    fold = spec["phone_set"] == "timit39"
    alignments = {
        source.utterance_id: read_alignments(wav, fold)
        for source, wav in found
        if source.utterance_id in kept
    }
    build_folder_corpus(
        sources, root, out_dir, spec, alignments=alignments, threads=threads, what=f"timit {root}"
    )


def list_utterances(
    root: Path, splits: list[str], sentence_types: list[str]
) -> list[tuple[Source, Path]]:
    """Every ``<split>/DR*/<speaker>/<sentence>.WAV`` below ``root``, with its audio path."""
    split_dirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    missing = [s for s in splits if s.lower() not in split_dirs]
    if missing:
        raise CorpusError(f"{root}: no {missing} folder (found {sorted(split_dirs)})")
    types = {t.lower() for t in sentence_types}
    found = []
    for split in splits:
        for dialect in sorted(p for p in split_dirs[split.lower()].iterdir() if p.is_dir()):
            if not _DIALECT.match(dialect.name):
                continue
            for speaker in sorted(p for p in dialect.iterdir() if p.is_dir()):
                if not _SPEAKER.match(speaker.name):
                    raise CorpusError(
                        f"{speaker}: speaker folder not <sex><initials><digit> (e.g. FCJF0)"
                    )
                for wav in sorted(speaker.iterdir()):
                    match = _WAV.match(wav.name)
                    if match and match.group(1)[:2].lower() in types:
                        found.append((_source(root, wav, split, dialect, speaker), wav))
    if not found:
        raise CorpusError(f"{root}: no <split>/DR*/<speaker>/<sentence>.WAV files for {splits}")
    return found


def _source(root: Path, wav: Path, split: str, dialect: Path, speaker: Path) -> Source:
    sentence = wav.stem.upper()
    txt = _sibling(wav, ".txt")
    text = ""
    if txt is not None:
        parts = txt.read_text(encoding="utf-8", errors="replace").split(maxsplit=2)
        text = clean(parts[2]) if len(parts) == 3 else ""
    return Source(
        utterance_id=f"{speaker.name.upper()}_{sentence}",
        audio=str(wav.relative_to(root)),
        speaker=speaker.name.upper(),
        language="en",
        gender=GENDERS[speaker.name[0].lower()],
        text=text,
        extra={"dialect": dialect.name.upper(), "split": split.lower(), "sentence": sentence},
    )


def _sibling(wav: Path, suffix: str) -> Path | None:
    """``wav``'s ``.PHN``/``.WRD``/``.TXT`` file, matched ignoring case."""
    for candidate in (wav.with_suffix(suffix.upper()), wav.with_suffix(suffix.lower())):
        if candidate.is_file():
            return candidate
    return None


def read_alignments(wav: Path, fold: bool) -> dict[str, list[Segment]]:
    """The ``phone`` and ``word`` tiers of one sentence (seconds), from ``.PHN``/``.WRD``."""
    tiers = {}
    for suffix, tier in ((".phn", "phone"), (".wrd", "word")):
        path = _sibling(wav, suffix)
        if path is None:
            raise CorpusError(f"{wav}: no {suffix.upper()} file beside it")
        segments = read_label_file(path, FOLD_39 if fold and tier == "phone" else None)
        tiers[tier] = trim_overlaps(segments) if tier == "word" else segments
    return tiers


def read_label_file(path: Path, fold: Mapping[str, str | None] | None = None) -> list[Segment]:
    """``<start> <end> <label>`` lines (samples at 16 kHz) as segments in seconds.

    With ``fold``, labels are mapped through it (unlisted labels kept, ``None`` dropped).
    """
    segments = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path} line {line_no}"
        if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
            raise CorpusError(f"{where}: expected '<start> <end> <label>' in samples, got {line!r}")
        label = fields[2]
        if fold is not None:
            label = fold.get(label, label)
            if label is None:
                continue
        start, end = int(fields[0]) / TIMIT_RATE, int(fields[1]) / TIMIT_RATE
        segments.append(make_segment(start, end, label, where))
    return segments


def trim_overlaps(segments: list[Segment]) -> list[Segment]:
    """Trim each segment to start where the previous one ends (TIMIT ``.WRD`` overlaps)."""
    out: list[Segment] = []
    trimmed = 0
    for seg in sorted(segments, key=lambda s: (s.start, s.end)):
        if out and seg.start < out[-1].end:
            trimmed += 1
            if seg.end <= out[-1].end:
                continue
            seg = Segment(out[-1].end, seg.end, seg.label, seg.where)
        out.append(seg)
    if trimmed:
        log.info("%s: trimmed %d overlapping words", segments[0].where.split(" line ")[0], trimmed)
    return out
