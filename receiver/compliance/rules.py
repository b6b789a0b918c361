"""Enforcement types with their AV-recording level (Art. 8, 9, 20) and the markers each stage of
the whole process must carry (Art. 10, 18, 20).

Failure posture: data plus lookups; :func:`enforcement_type` and :func:`stage` raise
:class:`ComplianceInputError` listing the known values.
"""

from __future__ import annotations

from dataclasses import dataclass

from evidence.markers import STAGE_MARKERS, MarkerKind
from receiver.compliance.errors import ComplianceInputError

AV_MANDATORY = "mandatory"
AV_RECOMMENDED = "recommended"
AV_NONE = "none"


@dataclass(frozen=True)
class EnforcementType:
    name: str
    av_level: str
    article: str
    description: str


ENFORCEMENT_TYPE_LIST = (
    EnforcementType("sealing", AV_MANDATORY, "Art. 8", "sealing premises or property (查封)"),
    EnforcementType("unsealing", AV_MANDATORY, "Art. 8", "unsealing (解除查封)"),
    EnforcementType("seizure", AV_MANDATORY, "Art. 8", "seizure of property (扣押)"),
    EnforcementType(
        "substitute-performance", AV_MANDATORY, "Art. 8", "substitute performance (代履行)"
    ),
    EnforcementType("personal-liberty", AV_MANDATORY, "Art. 8", "touching personal liberty"),
    EnforcementType("life-health", AV_MANDATORY, "Art. 8", "touching life or health"),
    EnforcementType("major-property", AV_MANDATORY, "Art. 8", "touching major property"),
    EnforcementType(
        "penalty", AV_MANDATORY, "Art. 20", "administrative penalty (ID, rights, service filmed)"
    ),
    EnforcementType(
        "penalty-interview", AV_MANDATORY, "Art. 20", "penalty interview, recorded in full"
    ),
    EnforcementType("hearing", AV_MANDATORY, "Art. 20", "penalty hearing, recorded in full"),
    EnforcementType("dispute", AV_RECOMMENDED, "Art. 9", "on-site dispute"),
    EnforcementType(
        "inspection", AV_RECOMMENDED, "Art. 9", "inspection (mandatory if major, Art. 18)"
    ),
    EnforcementType("interview", AV_RECOMMENDED, "Art. 9", "interview outside a penalty procedure"),
    EnforcementType(
        "service-by-leaving", AV_RECOMMENDED, "Art. 9", "service by leaving (留置送达)"
    ),
    EnforcementType("service-by-notice", AV_RECOMMENDED, "Art. 9", "service by public notice"),
    EnforcementType("licensing", AV_NONE, "Art. 16", "licensing (on-site review may be recorded)"),
    EnforcementType("confirmation", AV_NONE, "Art. 2", "administrative confirmation"),
    EnforcementType("other", AV_NONE, "Art. 2", "other"),
)
ENFORCEMENT_TYPES: dict[str, EnforcementType] = {t.name: t for t in ENFORCEMENT_TYPE_LIST}


def enforcement_type(name: str) -> EnforcementType:
    try:
        return ENFORCEMENT_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(ENFORCEMENT_TYPES))
        raise ComplianceInputError(
            f"type: unknown enforcement type {name!r}; known: {known}"
        ) from None


def av_level(type_name: str, *, major_inspection: bool = False) -> tuple[str, str]:
    """The AV level and the article that sets it; a major inspection is mandatory (Art. 18)."""
    t = enforcement_type(type_name)
    if major_inspection and t.name == "inspection":
        return AV_MANDATORY, "Art. 18"
    return t.av_level, t.article


#: Art. 2: the stages of the whole process (the names the agent's spoken preamble knows)
STAGES = (
    "start",
    "investigation",
    "inspection",
    "decision",
    "hearing",
    "service",
    "execution",
    "archiving",
)


@dataclass(frozen=True)
class StageRule:
    stage: str
    required: tuple[MarkerKind, ...]
    article: str


STAGE_RULES: dict[str, StageRule] = {
    name: StageRule(name, required, article) for name, (required, article) in STAGE_MARKERS.items()
}


def stage(name: str) -> StageRule:
    try:
        return STAGE_RULES[name]
    except KeyError:
        raise ComplianceInputError(
            f"stage: unknown stage {name!r}; known: {', '.join(STAGES)}"
        ) from None
