"""Text-to-speech with espeak-ng, and the short tones the agent plays through the speaker.

Chinese uses the ``cmn-latn-pinyin`` voice: plain ``cmn`` mispronounces (DESIGN.md).
Speech is synthesized to a WAV in a temporary directory and returned as PCM, which the capture
pipeline plays (and, on simulated hardware, mixes into the recording).

Failure posture: a missing or failing espeak-ng raises :class:`~agent.errors.SpeechError` with
espeak's message; callers log it, fall back to tones, and keep recording.
"""

from __future__ import annotations

import logging
import math
import shutil
import struct
import subprocess
import tempfile
import wave
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from agent.errors import SpeechError

log = logging.getLogger(__name__)

CACHE_MAX_TEXT_CHARS = 120
CACHE_ENTRIES = 16


@dataclass(frozen=True)
class Speech:
    text: str
    voice: str
    pcm_s16le: bytes
    sample_rate_hz: int
    channels: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm_s16le) / (2 * self.channels * self.sample_rate_hz)


class Synthesizer(ABC):
    """Turns text into PCM.

    Subclasses must override :meth:`synthesize`.
    """

    @abstractmethod
    def synthesize(self, text: str, voice: str) -> Speech:
        """PCM (s16le) for ``text`` spoken with ``voice``; raises SpeechError."""


class EspeakSynthesizer(Synthesizer):
    """espeak-ng in a subprocess (``espeak-ng -v VOICE -s WPM -w out.wav TEXT``)."""

    def __init__(
        self, *, words_per_minute: int = 160, executable: str = "espeak-ng", timeout_s: float = 30.0
    ) -> None:
        self.words_per_minute = words_per_minute
        self.executable = executable
        self.timeout_s = timeout_s
        self._cache: dict[tuple[str, str], Speech] = {}

    def available(self) -> bool:
        return shutil.which(self.executable) is not None

    def synthesize(self, text: str, voice: str) -> Speech:
        cached = self._cache.get((text, voice))
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="bodycam-tts-") as tmp:
            out = Path(tmp) / "speech.wav"
            cmd = [self.executable, "-v", voice, "-s", str(self.words_per_minute), "-w", str(out)]
            try:
                proc = subprocess.run(
                    [*cmd, "--", text], capture_output=True, timeout=self.timeout_s, check=False
                )
            except FileNotFoundError:
                raise SpeechError(voice, f"{self.executable} is not installed") from None
            except subprocess.TimeoutExpired:
                raise SpeechError(voice, f"{self.executable} timed out") from None
            if proc.returncode != 0 or not out.exists():
                detail = proc.stderr.decode(errors="replace").strip() or f"exit {proc.returncode}"
                raise SpeechError(voice, detail)
            speech = read_wav(out, text=text, voice=voice)
        # Prompts repeat and must be quick (the resume prompt is needed on the capture thread);
        # preambles are long, differ every time (they state the time) and are not kept.
        if len(text) <= CACHE_MAX_TEXT_CHARS and len(self._cache) < CACHE_ENTRIES:
            self._cache[(text, voice)] = speech
        return speech


def read_wav(path: Path, *, text: str = "", voice: str = "") -> Speech:
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise SpeechError(voice, f"{path}: expected 16-bit PCM")
            pcm = wav.readframes(wav.getnframes())
            return Speech(text, voice, pcm, wav.getframerate(), wav.getnchannels())
    except (wave.Error, EOFError, OSError) as exc:
        raise SpeechError(voice, f"unreadable WAV {path}: {exc}") from exc


def tone(
    frequencies_hz: list[float],
    *,
    note_s: float = 0.15,
    pause_s: float = 0.05,
    sample_rate_hz: int = 16000,
    level: float = 0.5,
) -> Speech:
    """A sequence of sine notes (with short fades so they do not click)."""
    samples: list[int] = []
    fade = int(0.01 * sample_rate_hz)
    n = int(note_s * sample_rate_hz)
    for freq in frequencies_hz:
        for i in range(n):
            envelope = min(1.0, i / fade, (n - 1 - i) / fade) if fade else 1.0
            value = level * envelope * math.sin(2 * math.pi * freq * i / sample_rate_hz)
            samples.append(int(value * 32767))
        samples.extend([0] * int(pause_s * sample_rate_hz))
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    label = "tone " + "/".join(f"{f:g}" for f in frequencies_hz)
    return Speech(label, "tone", pcm, sample_rate_hz, 1)


CUE_TONE = tone([880.0, 1320.0])
REFUSED_TONE = tone([440.0, 330.0, 220.0], note_s=0.2)
