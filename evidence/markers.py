"""The shared vocabulary of marker kinds and gap causes (Art. 10, 13, 18, 20, 26).

One place that the recorder (what a button press signs), the verifier and the receiver (what
the compliance report expects per stage) all read, so a marker the device signs is always one the
receiver knows. The values are the ``kind`` of a ``marker`` record and the ``cause`` of a ``gap``
record as written on the wire; they never change meaning once released.

Failure posture: pure data and two parsers; :func:`parse_marker_kind` and
:func:`parse_gap_cause` raise :class:`ValueError` naming the unknown value and the known ones.
Older records with kinds outside this vocabulary stay valid evidence; the receiver reports them
as unknown rather than refusing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MarkerKind(StrEnum):
    """What a marker says happened at that moment."""

    IMPORTANT = "important"
    ARRIVAL = "arrival"
    """Arrival at the scene, entrance filmed (Art. 18)."""
    DEPARTURE = "departure"
    """End of the on-site work, entrance filmed again on leaving (Art. 18)."""
    ID_SHOWN = "id-shown"
    """Officers showed their enforcement ID (Art. 20)."""
    RIGHTS_EXPLAINED = "rights-explained"
    """The party was told their rights (Art. 20)."""
    DOCUMENT_SERVED = "document-served"
    """A notice or decision was served (Art. 10, 20)."""
    EVIDENCE = "evidence"
    """Evidence collected (Art. 10)."""
    MEASURE = "measure"
    """A measure taken: sealing, seizure, ... (Art. 10)."""
    OBSTRUCTION = "obstruction"
    """Recording or enforcement obstructed (Art. 26: violent obstruction goes to the police)."""


class GapCause(StrEnum):
    """Why a recording was interrupted (Art. 13)."""

    CAMERA_FAULT = "camera-fault"
    MICROPHONE_FAULT = "microphone-fault"
    DEVICE_FAULT = "device-fault"
    POWER_LOSS = "power-loss"
    CRASH = "crash"
    STORAGE = "storage"
    OBSTRUCTION = "obstruction"
    WEATHER = "weather"
    MANUAL_PAUSE = "manual-pause"
    """An officer paused without naming a cause: needs an explanation."""
    OTHER = "other"
    """An officer paused for a cause the device has no word for: needs an explanation."""


#: causes that explain a gap by themselves; the others need a spoken or written explanation
SELF_EXPLAINING_CAUSES: frozenset[GapCause] = frozenset(GapCause) - {
    GapCause.MANUAL_PAUSE,
    GapCause.OTHER,
}


@dataclass(frozen=True)
class MarkerInfo:
    kind: MarkerKind
    article: str
    label_en: str
    label_zh: str
    """What the device speaks to confirm the marker."""


MARKERS: dict[MarkerKind, MarkerInfo] = {
    m.kind: m
    for m in (
        MarkerInfo(MarkerKind.IMPORTANT, "Art. 10", "important moment", "重要时刻"),
        MarkerInfo(MarkerKind.ARRIVAL, "Art. 18", "arrival, entrance filmed", "到达现场，拍摄入口"),
        MarkerInfo(
            MarkerKind.DEPARTURE, "Art. 18", "departure, entrance filmed", "离开现场，拍摄入口"
        ),
        MarkerInfo(MarkerKind.ID_SHOWN, "Art. 20", "ID shown", "出示执法证件"),
        MarkerInfo(MarkerKind.RIGHTS_EXPLAINED, "Art. 20", "rights explained", "告知权利"),
        MarkerInfo(MarkerKind.DOCUMENT_SERVED, "Art. 20", "document served", "送达文书"),
        MarkerInfo(MarkerKind.EVIDENCE, "Art. 10", "evidence collected", "收集证据"),
        MarkerInfo(MarkerKind.MEASURE, "Art. 10", "measure taken", "采取措施"),
        MarkerInfo(MarkerKind.OBSTRUCTION, "Art. 26", "obstruction", "执法受阻"),
    )
}


#: the markers each enforcement stage (Art. 2) must carry, in the order they usually happen, and
#: the article that asks for them; the device offers them in this order, the receiver checks them
STAGE_MARKERS: dict[str, tuple[tuple[MarkerKind, ...], str]] = {
    "start": ((), "Art. 2"),
    "investigation": ((MarkerKind.ID_SHOWN, MarkerKind.RIGHTS_EXPLAINED), "Art. 20"),
    "inspection": ((MarkerKind.ARRIVAL, MarkerKind.DEPARTURE), "Art. 18"),
    "decision": ((), "Art. 2"),
    "hearing": ((MarkerKind.ID_SHOWN, MarkerKind.RIGHTS_EXPLAINED), "Art. 20"),
    "service": ((MarkerKind.DOCUMENT_SERVED,), "Art. 20"),
    "execution": ((MarkerKind.ARRIVAL, MarkerKind.MEASURE), "Art. 10"),
    "archiving": ((), "Art. 21"),
}


def next_expected(stage: str | None, made: tuple[str, ...] | list[str]) -> MarkerKind:
    """The marker a mark press stands for: the stage's first required marker not yet made in
    this session, else ``important``."""
    required, _ = STAGE_MARKERS.get(stage or "", ((), ""))
    for kind in required:
        if kind.value not in made:
            return kind
    return MarkerKind.IMPORTANT


def parse_marker_kind(value: str) -> MarkerKind:
    try:
        return MarkerKind(value)
    except ValueError:
        known = ", ".join(k.value for k in MarkerKind)
        raise ValueError(f"unknown marker kind {value!r}; known: {known}") from None


def parse_gap_cause(value: str) -> GapCause:
    try:
        return GapCause(value)
    except ValueError:
        known = ", ".join(c.value for c in GapCause)
        raise ValueError(f"unknown gap cause {value!r}; known: {known}") from None


def cause_explains(cause: str) -> bool:
    """Whether a gap with this recorded cause is explained without anything further."""
    try:
        return GapCause(cause) in SELF_EXPLAINING_CAUSES
    except ValueError:
        return False
