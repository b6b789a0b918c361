"""A worker that plays speech and tones through the capture pipeline, one after another.

Playing is blocking (``CapturePipeline.play_audio`` returns once played), so the daemon's main
loop hands sounds to this worker and keeps serving buttons and the watchdog meanwhile.

Failure posture: a sound that fails to play is logged and skipped; the worker keeps running.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.tts import Speech

log = logging.getLogger(__name__)

PlayFn = Callable[[bytes, int, int], None]


@dataclass(frozen=True)
class Played:
    text: str
    voice: str
    duration_s: float


class Speaker:
    def __init__(self, play: PlayFn) -> None:
        self._play = play
        self._queue: queue.Queue[Speech | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        # What was played (text and length only: PCM would grow memory over a shift).
        self.played: deque[Played] = deque(maxlen=64)
        self._thread = threading.Thread(target=self._run, name="speaker", daemon=True)
        self._thread.start()

    def say(self, speech: Speech) -> None:
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._queue.put(speech)

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """True once everything queued so far has been played (or failed)."""
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            speech = self._queue.get()
            if speech is None:
                return
            try:
                self._play(speech.pcm_s16le, speech.sample_rate_hz, speech.channels)
                self.played.append(Played(speech.text, speech.voice, speech.duration_s))
                log.info("played %r (%.1f s)", speech.text[:40], speech.duration_s)
            except Exception:
                log.exception("cannot play %r", speech.text[:40])
            finally:
                with self._lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()
