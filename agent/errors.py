"""The agent's exception tree: :class:`AgentError` is the root of every error the agent raises
on purpose, ``agent.media``'s :class:`~agent.media.base.MediaError` and ``agent.uplink``'s
:class:`~agent.uplink.errors.UplinkError` branches included.

Every class carries the data that explains it, so a caller can log, signal or speak the
reason without parsing the message.

Failure posture: these are raised for bad input (config, spool, key) and refused operations;
the daemon catches them at its boundary, signals the officer and keeps running where it can.
"""

from __future__ import annotations

from pathlib import Path


class AgentError(Exception):
    """Base of every error raised by the agent (media and uplink branches included)."""


class AgentConfigError(AgentError):
    """The TOML configuration is unreadable or has a bad value."""

    def __init__(self, source: str, key: str, detail: str) -> None:
        super().__init__(f"config {source}: {key}: {detail}")
        self.source = source
        self.key = key
        self.detail = detail


class SpoolError(AgentError):
    """The spool cannot be used (not writable, inconsistent state)."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"spool {path}: {detail}")
        self.path = path
        self.detail = detail


class SigningKeyError(AgentError):
    """The device signing key is missing or unreadable."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"signing key {path}: {detail}")
        self.path = path
        self.detail = detail


class SealError(AgentError):
    """A finished segment could not be sealed into the spool."""

    def __init__(self, part: Path, detail: str) -> None:
        super().__init__(f"cannot seal {part}: {detail}")
        self.part = part
        self.detail = detail


class RecoveryError(AgentError):
    """A partial segment left by a crash could not be recovered."""

    def __init__(self, part: Path, detail: str) -> None:
        super().__init__(f"cannot recover {part}: {detail}")
        self.part = part
        self.detail = detail


class SpeechError(AgentError):
    """Text-to-speech failed (espeak-ng missing or failing)."""

    def __init__(self, voice: str, detail: str) -> None:
        super().__init__(f"speech with voice {voice!r} failed: {detail}")
        self.voice = voice
        self.detail = detail


class HardwareError(AgentError):
    """A button, LED, buzzer, battery gauge or storage probe cannot be used."""

    def __init__(self, device: str, detail: str) -> None:
        super().__init__(f"{device}: {detail}")
        self.device = device
        self.detail = detail


class RecordingRefusedError(AgentError):
    """The pre-capture checks failed, so recording was refused (Art. 11)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("recording refused: " + "; ".join(reasons))
        self.reasons = reasons
