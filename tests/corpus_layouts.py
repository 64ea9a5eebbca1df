"""Tiny public-corpus releases in their real layouts, written by the tests.

Each ``make_*`` writes a release folder (audio written with soundfile, or, for TIMIT, NIST
SPHERE files with the header TIMIT ships) and returns what the tests check against.
:func:`pack` turns a folder into a tar.gz or zip archive for the HTTP server.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
from praatio import textgrid

RATE = 16000


def tone(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A 0.3-amplitude 220 Hz tone with a little seeded noise, float32 ``(n,)``."""
    t = np.arange(int(round(seconds * rate))) / rate
    noise = 0.02 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)


def pack(folder: Path, archive: Path) -> Path:
    """Archive ``folder``'s contents (paths relative to ``folder``) as tar.gz or zip."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as zf:
            for path in files:
                zf.write(path, path.relative_to(folder).as_posix())
    else:
        with tarfile.open(archive, "w:gz") as tar:
            for path in files:
                tar.add(path, path.relative_to(folder).as_posix())
    return archive


# --- LibriSpeech ---------------------------------------------------------------------------

LIBRI_SPEAKERS = {"84": ("F", "121123"), "174": ("M", "50561"), "251": ("M", "136532")}
LIBRI_UTTERANCES = 3  # per speaker


def make_librispeech(root: Path, subset: str = "dev-clean") -> dict[str, dict]:
    """``root/LibriSpeech/{SPEAKERS.TXT, <subset>/<spk>/<chapter>/...}``; returns
    utterance id -> {speaker, gender, text, duration_s, chapter}."""
    base = root / "LibriSpeech"
    lines = [
        "; LibriSpeech speakers (test copy)",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
    ]
    expected = {}
    for i, (speaker, (sex, chapter)) in enumerate(LIBRI_SPEAKERS.items()):
        lines.append(f"{speaker:<5}| {sex} | {subset:<16} | 8.02 | Reader {speaker}")
        folder = base / subset / speaker / chapter
        folder.mkdir(parents=True)
        trans = []
        for j in range(LIBRI_UTTERANCES):
            utt = f"{speaker}-{chapter}-{j:04d}"
            seconds = 0.5 + 0.1 * j + 0.05 * i
            sf.write(folder / f"{utt}.flac", tone(seconds, seed=10 * i + j), RATE, format="FLAC")
            text = f"WORD{j} SPOKEN BY {speaker}"
            trans.append(f"{utt} {text}")
            expected[utt] = {
                "speaker": speaker,
                "gender": {"F": "female", "M": "male"}[sex],
                "text": text,
                "duration_s": round(seconds * RATE) / RATE,
                "chapter": chapter,
            }
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(trans) + "\n")
    (base / "SPEAKERS.TXT").write_text("\n".join(lines) + "\n")
    return expected


def make_mfa_alignments(root: Path, expected: dict[str, dict]) -> dict[str, list[tuple]]:
    """Montreal-Forced-Aligner-style TextGrids ``<spk>/<chapter>/<utt>.TextGrid`` (tiers
    ``words`` and ``phones``) for every utterance; returns utt -> phone intervals."""
    phones = {}
    for utt, info in expected.items():
        duration = info["duration_s"]
        entries = [(0.05, 0.15, "W"), (0.15, 0.3, "ER1"), (0.3, duration - 0.05, "D")]
        words = [(0.05, duration - 0.05, info["text"].split()[0].lower())]
        tg = textgrid.Textgrid()
        tg.addTier(textgrid.IntervalTier("words", words, 0, duration))
        tg.addTier(textgrid.IntervalTier("phones", entries, 0, duration))
        folder = root / info["speaker"] / info["chapter"]
        folder.mkdir(parents=True, exist_ok=True)
        tg.save(str(folder / f"{utt}.TextGrid"), format="long_textgrid", includeBlankSpaces=True)
        phones[utt] = entries
    return phones


# --- TIMIT ---------------------------------------------------------------------------------

TIMIT_SAMPLES = 8000  # 0.5 s at 16 kHz
TIMIT_PHN = [
    (0, 800, "h#"),
    (800, 1600, "sh"),
    (1600, 2000, "q"),
    (2000, 3200, "iy"),
    (3200, 4000, "pcl"),
    (4000, 5600, "p"),
    (5600, 8000, "h#"),
]
TIMIT_WRD = [(800, 2000, "she"), (1900, 5600, "peep")]  # overlap as in a few TIMIT files
TIMIT_SPEAKERS = [("TRAIN", "DR1", "FCJF0"), ("TRAIN", "DR1", "MDAB0"), ("TEST", "DR2", "FAEM0")]
TIMIT_SENTENCES = ["SA1", "SX14", "SI1039"]


def nist_sphere(samples: np.ndarray, utterance_id: str) -> bytes:
    """A NIST SPHERE file as TIMIT ships it: 1024-byte header, 16-bit little-endian PCM."""
    header = "\n".join(
        [
            "NIST_1A",
            "   1024",
            "database_id -s5 TIMIT",
            "database_version -s3 1.0",
            f"utterance_id -s{len(utterance_id)} {utterance_id}",
            "channel_count -i 1",
            f"sample_count -i {len(samples)}",
            "sample_rate -i 16000",
            f"sample_min -i {int(samples.min())}",
            f"sample_max -i {int(samples.max())}",
            "sample_n_bytes -i 2",
            "sample_byte_format -s2 01",
            "sample_sig_bits -i 16",
            "end_head",
            "",
        ]
    ).encode("ascii")
    return header.ljust(1024, b" ") + samples.astype("<i2").tobytes()


def make_timit(root: Path) -> dict[str, np.ndarray]:
    """``root/TIMIT/<SPLIT>/<DR>/<SPEAKER>/<SENTENCE>.{WAV,PHN,WRD,TXT}``; returns
    utterance id -> the int16 samples written."""
    written = {}
    for s, (split, dialect, speaker) in enumerate(TIMIT_SPEAKERS):
        folder = root / "TIMIT" / split / dialect / speaker
        folder.mkdir(parents=True)
        for k, sentence in enumerate(TIMIT_SENTENCES):
            pcm = np.round(tone(TIMIT_SAMPLES / RATE, seed=10 * s + k) * 20000).astype(np.int16)
            utt_id = f"{speaker[1:].lower()}_{sentence.lower()}"
            (folder / f"{sentence}.WAV").write_bytes(nist_sphere(pcm, utt_id))
            (folder / f"{sentence}.PHN").write_text(
                "".join(f"{a} {b} {p}\n" for a, b, p in TIMIT_PHN)
            )
            (folder / f"{sentence}.WRD").write_text(
                "".join(f"{a} {b} {w}\n" for a, b, w in TIMIT_WRD)
            )
            (folder / f"{sentence}.TXT").write_text(f"0 {TIMIT_SAMPLES} She peeps {sentence}.\n")
            written[f"{speaker}_{sentence}"] = pcm
        # a converted copy, as some distributions ship beside the SPHERE file: not listed
        sf.write(folder / "SA1.WAV.wav", tone(0.2), RATE)
    return written


# --- Common Voice --------------------------------------------------------------------------

CV_HEADER = [
    "client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
    "down_votes", "age", "gender", "accents", "variant", "locale", "segment",
]  # fmt: skip
CV_CLIPS = {
    "en": [
        ("a1" * 32, "female_feminine", 'He said "hello to me'),
        ("a1" * 32, "female_feminine", "A second sentence."),
        ("b2" * 32, "male_masculine", "Third one here."),
        ("c3" * 32, "", "Fourth, unknown gender."),
    ],
    "tr": [
        ("d4" * 32, "male", "Merhaba dünya."),
        ("e5" * 32, "female", "İkinci cümle."),
        ("e5" * 32, "female", "Üçüncü cümle."),
    ],
}


def make_commonvoice(root: Path) -> dict[str, dict]:
    """``root/cv-corpus-test/<locale>/{validated.tsv, clips/*.mp3}`` (48 kHz MP3);
    returns clip id -> {speaker, gender (as given), text, language}."""
    expected = {}
    for lang, clips in CV_CLIPS.items():
        folder = root / "cv-corpus-test" / lang
        (folder / "clips").mkdir(parents=True)
        lines = ["\t".join(CV_HEADER)]
        for n, (client, gender, sentence) in enumerate(clips):
            clip = f"common_voice_{lang}_{1000 + n}"
            sf.write(
                folder / "clips" / f"{clip}.mp3",
                tone(0.6 + 0.1 * n, rate=48000, seed=n),
                48000,
                format="MP3",
                subtype="MPEG_LAYER_III",
            )
            row = [client, f"{clip}.mp3", f"s{n}", sentence, "", "2", "0", "", gender, "", "",
                   lang, ""]  # fmt: skip
            lines.append("\t".join(row))
            expected[clip] = {
                "speaker": client,
                "gender": gender,
                "text": sentence,
                "language": lang,
            }
        (folder / "validated.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return expected


# --- VoxCeleb ------------------------------------------------------------------------------

VOX_CLIPS = {
    "id10001": {"1zcIwhmdeo4": 2, "7gWzIy6yIIk": 1},
    "id10002": {"0_laIeN-Q44": 2},
    "id10003": {"5ablueV_1tw": 1},
}
VOX_META = [
    ("id10001", "A.J._Buckley", "m", "Ireland"),
    ("id10002", "A.R._Rahman", "m", "India"),
    ("id10003", "Aamir_Khan", "f", "India"),
]


def make_voxceleb(root: Path) -> list[str]:
    """``root/wav/<speaker>/<video>/<clip>.wav`` + ``root/vox1_meta.csv`` (tab separated,
    as VoxCeleb1 ships it); returns the utterance ids expected."""
    ids = []
    for s, (speaker, videos) in enumerate(VOX_CLIPS.items()):
        for video, count in videos.items():
            folder = root / "wav" / speaker / video
            folder.mkdir(parents=True)
            for c in range(1, count + 1):
                sf.write(folder / f"{c:05d}.wav", tone(0.4 + 0.1 * c, seed=s * 10 + c), RATE)
                ids.append(f"{speaker}-{video}-{c:05d}")
    lines = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    lines += [f"{a}\t{b}\t{g}\t{n}\tdev" for a, b, g, n in VOX_META]
    (root / "vox1_meta.csv").write_text("\n".join(lines) + "\n")
    return sorted(ids)
