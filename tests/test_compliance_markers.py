"""The shared marker and gap-cause vocabulary (evidence/markers.py) and the stage rules built
on it: one list the device, the verifier and the receiver agree on."""

from __future__ import annotations

import pytest

from evidence.markers import (
    MARKERS,
    STAGE_MARKERS,
    GapCause,
    MarkerKind,
    cause_explains,
    next_expected,
    parse_gap_cause,
    parse_marker_kind,
)
from receiver.compliance.errors import ComplianceInputError
from receiver.compliance.rules import ENFORCEMENT_TYPES, STAGE_RULES, STAGES, av_level, stage


def test_every_kind_has_a_spoken_label_and_an_article() -> None:
    assert set(MARKERS) == set(MarkerKind)
    assert all(m.label_zh and m.article.startswith("Art. ") for m in MARKERS.values())


def test_stages_known_to_the_device_and_the_receiver_are_the_same() -> None:
    assert set(STAGE_MARKERS) == set(STAGES) == set(STAGE_RULES)
    assert stage("inspection").required == (MarkerKind.ARRIVAL, MarkerKind.DEPARTURE)
    with pytest.raises(ComplianceInputError, match="unknown stage 'raid'"):
        stage("raid")


def test_next_expected_marker_follows_the_stage() -> None:
    assert next_expected("inspection", []) is MarkerKind.ARRIVAL
    assert next_expected("inspection", ["arrival"]) is MarkerKind.DEPARTURE
    assert next_expected("inspection", ["arrival", "departure"]) is MarkerKind.IMPORTANT
    assert next_expected("service", ["important"]) is MarkerKind.DOCUMENT_SERVED
    assert next_expected(None, []) is MarkerKind.IMPORTANT


def test_gap_causes_that_explain_themselves() -> None:
    assert cause_explains("camera-fault")
    assert cause_explains("weather")
    assert not cause_explains("manual-pause")
    assert not cause_explains("other")
    assert not cause_explains("")
    assert not cause_explains("aliens")
    assert parse_gap_cause("obstruction") is GapCause.OBSTRUCTION


def test_unknown_values_name_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown marker kind 'wave'; known: important"):
        parse_marker_kind("wave")
    with pytest.raises(ValueError, match="unknown gap cause 'x'; known: camera-fault"):
        parse_gap_cause("x")


def test_av_levels_per_articles_8_9_18_20() -> None:
    for name in ("sealing", "unsealing", "seizure", "substitute-performance", "personal-liberty",
                 "life-health", "major-property"):  # fmt: skip
        assert av_level(name) == ("mandatory", "Art. 8")
    for name in ("penalty", "penalty-interview", "hearing"):
        assert av_level(name) == ("mandatory", "Art. 20")
    assert av_level("inspection") == ("recommended", "Art. 9")
    assert av_level("inspection", major_inspection=True) == ("mandatory", "Art. 18")
    assert ENFORCEMENT_TYPES["licensing"].av_level == "none"
    with pytest.raises(ComplianceInputError, match="unknown enforcement type 'raid'"):
        av_level("raid")
