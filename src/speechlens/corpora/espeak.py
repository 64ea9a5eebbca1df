"""A ctypes binding to libespeak-ng (shipped by the ``espeakng-loader`` wheel).

Only what corpus building needs: synthesise one UTF-8 text with a voice and prosody
settings, and return the audio with every event espeak-ng reports (sentence, word,
phoneme, end) and the exact sample at which it occurs.

Two properties of the library shape this module:

- **Events.** espeak-ng is initialised in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode with
  ``espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_PHONEME_IPA``; the synth callback
  receives audio blocks (int16, 22050 Hz) and arrays of ``espeak_EVENT``. Each event's
  ``sample`` is the sample index from the start of the message (``audio_position`` is the
  same instant rounded down to ms). Phoneme names (IPA, stress marks included, UTF-8) come
  in the 8-byte ``id.string`` member of the event's union; ``text_position`` is the
  1-based *character* (not byte) index of the word in the input, ``length`` its length in
  characters. The IPA name is empty both for pauses and for a few real sounds (the
  English/Spanish hiatus link ``;``), so every text is synthesised twice, once with IPA
  names and once with espeak-ng's ASCII mnemonics (``espeak_ng_SetPhonemeEvents``), where
  pauses are exactly the names starting with ``_``; the two runs are checked to give the
  same audio and event samples.
- **Hidden state.** libespeak-ng keeps synthesis state in static variables (the wave
  generator's phase among them) that neither ``espeak_Initialize`` nor a voice change
  resets, so the same text comes out a few samples longer or shorter, with different
  bytes, depending on what was synthesised before. To make every synthesis a pure
  function of (text, settings), an :class:`Espeak` initialises the library once per
  process and never synthesises in that process: each call forks a child, which
  synthesises from the pristine initialised state and sends the result back through a
  pipe. The library is not thread-safe; use one process per worker (POSIX ``fork`` is
  required).
"""

from __future__ import annotations

import ctypes
import dataclasses
import difflib
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_PHONEME_IPA = 0x0002
CHARS_UTF8 = 1
POS_CHARACTER = 1
EE_OK = 0

EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_SENTENCE = 2
EVENT_END = 5
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7

PARAM_RATE = 1
PARAM_PITCH = 3
PARAM_RANGE = 4


class EspeakError(RuntimeError):
    """libespeak-ng could not be loaded, initialised or asked to synthesise."""


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h (API revision 12)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    """``espeak_VOICE``; ``languages`` holds (priority byte, name, NUL) pairs, so void*."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Event:
    """One espeak-ng event.

    ``kind`` is an ``EVENT_*`` code; ``sample`` the sample index (at the engine's sample
    rate) from the start of the audio; ``audio_position_ms`` espeak's own ms value for the
    same instant; ``text_position`` the 1-based character index into the input text and
    ``length`` the word length in characters (word events); ``name`` the raw IPA phoneme
    name, stress marks included, and ``mnemonic`` espeak-ng's ASCII name of the same
    phoneme, for phoneme events ("" otherwise).
    """

    kind: int
    sample: int
    audio_position_ms: int
    text_position: int
    length: int
    name: str
    mnemonic: str = ""

    @property
    def is_pause(self) -> bool:
        """A pause phoneme (ASCII mnemonic ``_``, ``_:``, ``_!``, ``_|``, ...)."""
        return self.kind == EVENT_PHONEME and self.mnemonic.startswith("_")


@dataclass(frozen=True)
class Settings:
    """How to speak: an espeak-ng voice name (``"lang"`` or ``"lang+variant"``), rate in
    words per minute (80-450), base pitch and pitch range (0-100, 50 = voice default), and
    the seed of espeak-ng's random generator (used by some variants for pitch jitter)."""

    voice: str
    rate: int = 175
    pitch: int = 50
    range: int = 50
    seed: int = 0


@dataclass(frozen=True)
class Synthesis:
    """``samples``: int16 array of shape (n_samples,) at ``sample_rate`` Hz (22050 for
    espeak-ng); ``events``: every event in emission order."""

    samples: np.ndarray
    sample_rate: int
    events: tuple[Event, ...]


def library_paths() -> tuple[str, str]:
    """(path of libespeak-ng, path of espeak-ng-data) from the ``espeakng-loader`` wheel."""
    try:
        import espeakng_loader
    except ImportError as err:  # pragma: no cover - dependency missing
        raise EspeakError(
            "the `espeakng-loader` package is required for synthetic corpora"
        ) from err
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def list_variants(data_path: str | Path | None = None) -> dict[str, str]:
    """Numbered voice variants (``m1``, ``f3``, ...) in ``espeak-ng-data/voices/!v``.

    Returns ``{variant: gender}`` with gender ``"male"`` or ``"female"`` as declared by the
    variant file's ``gender`` line, sorted by variant name (numerically).
    """
    root = Path(data_path or library_paths()[1]) / "voices" / "!v"
    variants = {}
    for path in root.iterdir():
        if not re.fullmatch(r"[mf]\d+", path.name):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        match = re.search(r"^gender\s+(male|female)\b", text, flags=re.MULTILINE)
        if match:
            variants[path.name] = match.group(1)
    return dict(sorted(variants.items(), key=lambda kv: (kv[0][0], int(kv[0][1:]))))


class Espeak:
    """libespeak-ng initialised in this process; synthesis runs in forked children.

    Create at most one per process (the library is a singleton); :func:`engine` does that.
    """

    def __init__(self, library_path: str | None = None, data_path: str | None = None) -> None:
        default_lib, default_data = library_paths()
        self.library_path = library_path or default_lib
        self.data_path = data_path or default_data
        self._lib = self._load(self.library_path)
        self._chunks: list[np.ndarray] = []
        self._events: list[Event] = []
        self._callback = _SYNTH_CALLBACK(self._on_synth)  # keep a reference alive
        options = INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA
        rate = self._lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), options
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed with data at {self.data_path}")
        self.sample_rate = int(rate)
        self._lib.espeak_SetSynthCallback(self._callback)
        self.pid = os.getpid()

    @staticmethod
    def _load(path: str) -> ctypes.CDLL:
        try:
            lib = ctypes.CDLL(path)
        except OSError as err:
            raise EspeakError(f"cannot load libespeak-ng from {path}: {err}") from err
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_ng_SetPhonemeEvents.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetPhonemeEvents.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        return lib

    # -- public API -------------------------------------------------------------------

    def has_voice(self, voice: str) -> bool:
        """Whether ``espeak_SetVoiceByName(voice)`` succeeds (a language or voice name)."""
        return _in_child(self._set_voice_code, voice) == EE_OK

    def voice_names(self) -> list[str]:
        """Every voice identifier and language code espeak-ng knows, sorted."""
        return _in_child(self._voice_names)

    def suggest(self, voice: str, n: int = 5) -> list[str]:
        """Up to ``n`` known voice names closest to ``voice`` (for error messages)."""
        return difflib.get_close_matches(voice.lower(), self.voice_names(), n=n, cutoff=0.5)

    def synthesize(self, text: str, settings: Settings) -> Synthesis:
        """Speak ``text`` (UTF-8) with ``settings``; see :class:`Synthesis`.

        Runs twice, each time in a forked child (IPA names, then ASCII mnemonics), and
        merges the names; raises :class:`EspeakError` if the two runs differ.
        """
        samples, events = _in_child(self._synthesize_here, text, settings, True)
        ascii_samples, ascii_events = _in_child(self._synthesize_here, text, settings, False)
        timing = [(e.kind, e.sample) for e in events]
        if not np.array_equal(samples, ascii_samples) or timing != [
            (e.kind, e.sample) for e in ascii_events
        ]:
            raise EspeakError(f"espeak-ng is not deterministic for {settings} and {text!r}")
        merged = [
            dataclasses.replace(e, mnemonic=a.name) if e.kind == EVENT_PHONEME else e
            for e, a in zip(events, ascii_events, strict=True)
        ]
        return Synthesis(samples=samples, sample_rate=self.sample_rate, events=tuple(merged))

    # -- run in the forked child ------------------------------------------------------

    def _set_voice_code(self, voice: str) -> int:
        return int(self._lib.espeak_SetVoiceByName(voice.encode("utf-8")))

    def _voice_names(self) -> list[str]:
        voices = self._lib.espeak_ListVoices(None)
        names: set[str] = set()
        i = 0
        while voices[i]:
            voice = voices[i].contents
            names.add(Path(voice.identifier.decode("utf-8", "replace")).name.lower())
            names.update(_languages(voice.languages))
            i += 1
        return sorted(names)

    def _synthesize_here(
        self, text: str, settings: Settings, ipa: bool
    ) -> tuple[np.ndarray, list[Event]]:
        if self._lib.espeak_ng_SetPhonemeEvents(1, int(ipa)) != EE_OK:
            raise EspeakError("espeak_ng_SetPhonemeEvents failed")
        code = self._set_voice_code(settings.voice)
        if code != EE_OK:
            raise EspeakError(f"espeak-ng has no voice {settings.voice!r} (code {code})")
        for param, value in (
            (PARAM_RATE, settings.rate),
            (PARAM_PITCH, settings.pitch),
            (PARAM_RANGE, settings.range),
        ):
            if self._lib.espeak_SetParameter(param, int(value), 0) != EE_OK:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) failed")
        self._lib.espeak_ng_SetRandSeed(int(settings.seed))
        data = text.encode("utf-8") + b"\0"
        self._chunks.clear()
        self._events.clear()
        code = self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if code != EE_OK or self._lib.espeak_Synchronize() != EE_OK:
            raise EspeakError(f"espeak_Synth failed (code {code}) for text {text!r}")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return samples, list(self._events)

    def _on_synth(self, wav, n_samples: int, events) -> int:
        """Synth callback: store the audio block and the events; 0 = continue."""
        if wav and n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            self._events.append(_convert_event(events[i]))
            i += 1
        return 0


def _convert_event(raw: _Event) -> Event:
    name = ""
    if raw.type == EVENT_PHONEME:
        name = bytes(raw.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
    return Event(
        kind=int(raw.type),
        sample=int(raw.sample),
        audio_position_ms=int(raw.audio_position),
        text_position=int(raw.text_position),
        length=int(raw.length),
        name=name,
    )


def _languages(pointer: int | None) -> list[str]:
    """Decode an ``espeak_VOICE.languages`` list: (priority byte, name, NUL)*, NUL."""
    names = []
    if not pointer:
        return names
    offset = 0
    while ctypes.string_at(pointer + offset, 1) != b"\0":
        name = ctypes.string_at(pointer + offset + 1)
        names.append(name.decode("utf-8", "replace").lower())
        offset += len(name) + 2
    return names


def _in_child(fn: Callable, *args):
    """Run ``fn(*args)`` in a forked child and return its (pickled) result or raise."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(read_fd)
        status = 0
        try:
            payload = pickle.dumps((True, fn(*args)), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            payload = pickle.dumps((False, f"{type(err).__name__}: {err}"))
            status = 1
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
        os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        payload = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    if not payload:
        raise EspeakError(f"espeak-ng child process died (wait status {wait_status})")
    ok, value = pickle.loads(payload)
    if not ok:
        raise EspeakError(value)
    return value


_ENGINE: Espeak | None = None


def engine() -> Espeak:
    """The process' :class:`Espeak` (created on first use; re-created after a fork)."""
    global _ENGINE
    if _ENGINE is None or _ENGINE.pid != os.getpid():
        _ENGINE = Espeak()
    return _ENGINE
