"""Sound devices by name, never by position: the ALSA capture card and the PortAudio speaker.

On Raspberry Pi OS Lite ALSA's "default" is the HDMI / headphone output, on Desktop it is
PipeWire (unreachable from a system service), and card numbers and PortAudio indexes change
with USB enumeration order. So the configuration names the card (its ALSA id, the word in
brackets in ``/proc/asound/cards``, e.g. ``Device`` or ``sndrpigooglevoi``) and the agent opens
``plughw:CARD=<id>,DEV=<n>`` (``plughw`` converts rate and format as needed); the speaker is the
PortAudio output device whose name contains the configured text.

Failure posture: a named device that is not there raises :class:`CaptureDeviceError` listing
what is there, so the check report says which card is missing; nothing falls back silently to
another device (a recording from the wrong microphone is worse than a refusal).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.media.base import CaptureDeviceError

CARDS_PATH = Path("/proc/asound/cards")
_CARD_LINE = re.compile(r"^\s*(\d+)\s+\[(\S+)\s*\]:\s*(.*)$")
_CARD_ID = re.compile(r"^[A-Za-z0-9_]{1,32}$")


@dataclass(frozen=True)
class AlsaCard:
    index: int
    id: str
    description: str


def list_cards(path: Path = CARDS_PATH) -> list[AlsaCard]:
    """The cards in ``/proc/asound/cards`` (empty if there is no sound support)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    cards = []
    for line in text.splitlines():
        match = _CARD_LINE.match(line)
        if match:
            cards.append(AlsaCard(int(match[1]), match[2], match[3].strip()))
    return cards


def capture_device(card: str, device: int = 0, *, cards_path: Path = CARDS_PATH) -> str:
    """``plughw:CARD=<card>,DEV=<device>`` once ``card`` is known to exist."""
    if not _CARD_ID.match(card):
        raise CaptureDeviceError("microphone", f"not an ALSA card id: {card!r}")
    cards = list_cards(cards_path)
    if not any(c.id == card for c in cards):
        present = ", ".join(f"{c.id} ({c.description})" for c in cards) or "none"
        raise CaptureDeviceError(
            "microphone", f"ALSA card {card!r} not found; cards present: {present}"
        )
    return f"plughw:CARD={card},DEV={device}"


@dataclass(frozen=True)
class OutputDevice:
    index: int
    name: str
    channels: int
    default_rate_hz: int


def choose_output_device(devices: Sequence[Mapping[str, Any]], wanted: str) -> OutputDevice:
    """The first output device whose name contains ``wanted`` (case-insensitive).

    ``devices`` are PyAudio's ``get_device_info_by_index`` dictionaries (index, name,
    maxOutputChannels, defaultSampleRate).
    """
    outputs = [d for d in devices if int(d.get("maxOutputChannels", 0)) > 0]
    for d in outputs:
        if wanted.casefold() in str(d.get("name", "")).casefold():
            return OutputDevice(
                int(d["index"]),
                str(d["name"]),
                int(d["maxOutputChannels"]),
                int(float(d.get("defaultSampleRate", 48000))),
            )
    names = ", ".join(repr(str(d.get("name", ""))) for d in outputs) or "none"
    raise CaptureDeviceError("speaker", f"no output device named like {wanted!r}; outputs: {names}")
