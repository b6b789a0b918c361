"""Plays speech and tones through the capture pipeline, one after another.

Playing is blocking (``CapturePipeline.play_audio`` returns once played), so the daemon's main
loop hands sounds to a worker thread and keeps serving buttons and the watchdog meanwhile. On a
stepped (fast simulated) capture there is no worker: a sound is queued on the simulated speaker
at once (``queue_audio``) and plays as the simulation advances, so when it is heard depends only
on the script, never on thread scheduling.

Failure posture: a sound that fails to play is logged and skipped; the worker keeps running.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass

from agent.media.base import CapturePipeline
from agent.tts import Speech

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Played:
    text: str
    voice: str
    duration_s: float


class Speaker:
    def __init__(self, capture: CapturePipeline) -> None:
        self._capture = capture
        self._queue: queue.Queue[Speech | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        # What was played (text and length only: PCM would grow memory over a shift).
        self.played: deque[Played] = deque(maxlen=64)
        self._thread: threading.Thread | None = None
        if not capture.stepped:
            self._thread = threading.Thread(target=self._run, name="speaker", daemon=True)
            self._thread.start()

    def say(self, speech: Speech) -> None:
        if self._thread is None:
            self._queue_stepped(speech)
            return
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._queue.put(speech)

    @property
    def idle(self) -> bool:
        """Nothing queued is still to be played."""
        if self._thread is None:
            return not self._capture.audio_queued
        return self._idle.is_set()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """True once everything queued so far has been played (or failed).

        On a stepped capture nothing plays while waiting: it answers at once (the simulation
        advances until :attr:`idle`).
        """
        if self._thread is None:
            return self.idle
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _queue_stepped(self, speech: Speech) -> None:
        try:
            self._capture.queue_audio(speech.pcm_s16le, speech.sample_rate_hz, speech.channels)
        except Exception:
            log.exception("cannot play %r", speech.text[:40])
            return
        self.played.append(Played(speech.text, speech.voice, speech.duration_s))
        log.info("queued %r (%.1f s)", speech.text[:40], speech.duration_s)

    def _run(self) -> None:
        while True:
            speech = self._queue.get()
            if speech is None:
                return
            try:
                self._capture.play_audio(speech.pcm_s16le, speech.sample_rate_hz, speech.channels)
                self.played.append(Played(speech.text, speech.voice, speech.duration_s))
                log.info("played %r (%.1f s)", speech.text[:40], speech.duration_s)
            except Exception:
                log.exception("cannot play %r", speech.text[:40])
            finally:
                with self._lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()
