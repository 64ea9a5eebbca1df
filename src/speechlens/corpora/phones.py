"""Phone labels for synthetic corpora: espeak-ng IPA phoneme names → a fixed label set.

espeak-ng reports each phoneme as an IPA string of at most 8 UTF-8 bytes, with the
syllable's stress mark in front of vowels (``ˈa`` primary, ``ˌa`` secondary) and an empty
string for pauses. :func:`normalise` turns such a name into ``(label, stress)``:

1. Unicode NFC; the stress marks ``ˈ`` and ``ˌ`` are removed and reported separately as
   ``stress`` (1 = primary, 2 = secondary, 0 = unstressed vowels, consonants, silence).
2. An empty name becomes :data:`SILENCE` (``sil``). Pauses have empty IPA names, but so
   do a few sounding phonemes (the hiatus link ``;``); callers that know espeak-ng's ASCII
   mnemonic tell them apart first (see :func:`speechlens.corpora.espeak_align.phone_marks`).
3. espeak-ng's internal variant markers ``-`` and ``.`` are dropped (French writes reduced
   vowels as ``a-``, ``ə-``, ``e-``, ``y-``: they become ``a``, ``ə``, ``e``, ``y``), and
   :data:`ALIASES` is applied (ASCII ``g`` → IPA ``ɡ``).
4. A name in :data:`PHONES` is the label. Otherwise (only voices outside the five shipped
   languages) the name is reduced step by step until it is (see :func:`reduce`):
   diacritics and modifier letters are dropped, then only the first segment is kept; a
   name with no IPA letter at all becomes :data:`UNKNOWN` (``spn``).

The label set :data:`PHONES` is closed and has these groups (all IPA):

- ``sil`` (silence: pauses, pre-pauses, stop closures, padding) and ``spn`` (unmappable);
- every IPA vowel letter :data:`VOWELS` (``i y ɨ ʉ ɯ u ɪ ʏ ʊ e ø ɘ ɵ ɤ o ə ɛ œ ɜ ɞ ʌ ɔ æ
  ɐ a ɶ ɑ ɒ ᵻ``; ``ᵻ`` is espeak-ng's reduced English vowel), each also long (``aː``) and
  nasal (``ɑ̃``);
- the IPA consonant letters :data:`CONSONANTS` (pulmonic, implosive and the "other
  symbols" ``ʍ ɥ ɫ ɕ ʑ ɧ ʜ ʢ``), and the affricates :data:`AFFRICATES` (``ts dz tʃ dʒ pf
  tɕ dʑ tʂ dʐ``);
- the multi-symbol units espeak-ng speaks as one phoneme, :data:`UNITS`: diphthongs
  (``aɪ aʊ eɪ oʊ ɔɪ ɔø eʊ ʊɐ iə aɪə ...``), r-coloured vowels (``ɚ ɝ ɑːɹ ɔːɹ ɛɹ ɪɹ ʊɹ``)
  and the syllabic ``əl``.

Every phone espeak-ng produces for the shipped sentences of ``en-us``, ``tr``, ``de``,
``es`` and ``fr`` is in :data:`PHONES` after steps 1-3 (no reduction needed).
"""

from __future__ import annotations

import unicodedata

SILENCE = "sil"
UNKNOWN = "spn"
STRESS = {"ˈ": 1, "ˌ": 2}
LONG = "ː"
NASAL = "\u0303"

VOWELS = tuple("iyɨʉɯuɪʏʊeøɘɵɤoəɛœɜɞʌɔæɐaɶɑɒᵻ")
CONSONANTS = tuple("pbtdʈɖcɟkɡqɢʔmɱnɳɲŋɴʙrʀⱱɾɽɸβfvθðszʃʒʂʐçʝxɣχʁħʕhɦɬɮʋɹɻjɰlɭʎʟɓɗʄɠʛwʍɥɫɕʑɧʜʢ")
AFFRICATES = ("ts", "dz", "tʃ", "dʒ", "pf", "tɕ", "dʑ", "tʂ", "dʐ")
UNITS = (
    # diphthongs and triphthongs
    "aɪ", "aʊ", "eɪ", "oʊ", "ɔɪ", "ɔø", "ɔʏ", "eʊ", "ʊɐ", "iə", "eə", "ʊə", "aɪə", "aʊə",
    # r-coloured vowels and syllabic l
    "ɚ", "ɝ", "ɑːɹ", "ɔːɹ", "ɛɹ", "ɪɹ", "ʊɹ", "əl",
)  # fmt: skip
ALIASES = {"g": "ɡ"}
_DROPPED = "-."

PHONES: frozenset[str] = frozenset(
    unicodedata.normalize("NFC", label)
    for label in [SILENCE, UNKNOWN, *VOWELS, *CONSONANTS, *AFFRICATES, *UNITS]
    + [v + LONG for v in VOWELS]
    + [v + NASAL for v in VOWELS]
)


def split_stress(name: str) -> tuple[str, int]:
    """Remove stress marks from an espeak-ng IPA name: (name without marks, stress 0/1/2)."""
    stress = 0
    for mark, level in STRESS.items():
        if mark in name:
            stress = stress or level
            name = name.replace(mark, "")
    return name, stress


def clean(name: str) -> str:
    """Steps 1-3 of the module docstring, without the stress (already split off)."""
    name = unicodedata.normalize("NFC", name).strip()
    name = "".join(ch for ch in name if ch not in _DROPPED)
    if not name:
        return SILENCE
    return ALIASES.get(name, name)


def reduce(name: str) -> str:
    """Step 4: map a cleaned name that is not in :data:`PHONES` to a label that is.

    Tries, in order: the name; the name without diacritics and modifier letters (``ː``
    and the nasal tilde kept); its first segment (a letter with its marks); that segment
    without marks but ``ː``; the bare first letter; else :data:`UNKNOWN`.
    """
    if name in PHONES:
        return name
    segments = _segments(name)
    if not segments:
        return UNKNOWN
    first = segments[0]
    candidates = [
        "".join(_strip(seg, keep=LONG + NASAL) for seg in segments),
        first,
        _strip(first, keep=LONG + NASAL),
        _strip(first, keep=LONG),
        first[0],
    ]
    for candidate in candidates:
        candidate = unicodedata.normalize("NFC", candidate)
        if candidate in PHONES:
            return candidate
    return UNKNOWN


def _segments(name: str) -> list[str]:
    """Split a name into IPA letters, each with the marks that follow it (NFD)."""
    segments: list[str] = []
    for ch in unicodedata.normalize("NFD", name):
        if ch in VOWELS or ch in CONSONANTS:
            segments.append(ch)
        elif segments:
            segments[-1] += ch
    return segments


def _strip(segment: str, keep: str) -> str:
    """Drop diacritics, modifier letters and other marks from a segment, except ``keep``."""
    return "".join(ch for ch in segment if ch in keep or ch in VOWELS or ch in CONSONANTS)


def normalise(name: str) -> tuple[str, int]:
    """espeak-ng IPA phoneme name (e.g. ``"ˈaɪ"``, ``""``) → (label in :data:`PHONES`, stress).

    ``stress`` is 1 for primary, 2 for secondary, 0 otherwise (always 0 for ``sil``).
    """
    bare, stress = split_stress(name)
    label = reduce(clean(bare))
    return label, (0 if label == SILENCE else stress)
