"""The current assignment and the spoken preamble built from it (Art. 12).

Art. 12: on starting, state time, place, officers, reason, target and stage, and tell everyone
present that audio and video are being recorded. The same assignment goes into the signed
``session-open`` record.

The assignment comes from the receiver (the uplink writes ``state/assignment.json``); without
one, the config's ``[assignment]`` section; where that is empty too, neutral defaults that say
the details were not registered in advance.

Failure posture: an unreadable or malformed ``assignment.json`` is logged and ignored (config
defaults are used), because a bad push from the dock must never stop a recording.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from agent.config import AssignmentConfig

log = logging.getLogger(__name__)

try:
    from zoneinfo import ZoneInfo

    CHINA_TZ: Any = ZoneInfo("Asia/Shanghai")
except Exception:  # no tzdata on a minimal image: China has had no DST since 1991
    CHINA_TZ = timezone(timedelta(hours=8), "CST")

STAGES_ZH = {
    "start": "立案启动",
    "investigation": "调查取证",
    "inspection": "检查",
    "decision": "审查决定",
    "hearing": "听证",
    "service": "送达",
    "execution": "执行",
    "archiving": "归档",
}

DEFAULTS_ZH = {
    "place": "执法现场（未预先登记）",
    "officers": "本记录仪佩戴人员",
    "reason": "现场执法",
    "target": "现场相关人员",
    "stage": "现场执法",
}
DEFAULTS_EN = {
    "place": "the scene (not registered in advance)",
    "officers": "the wearer of this recorder",
    "reason": "on-site enforcement",
    "target": "the persons present",
    "stage": "on-site enforcement",
}


@dataclass
class Assignment(AssignmentConfig):
    """The assignment in force: the receiver's push, or the configured defaults (same fields)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Assignment:
        """Build from a receiver push; raises ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError("assignment must be a JSON object")
        case = data.get("case")
        if case is not None and not isinstance(case, str):
            raise ValueError("case must be a string or null")
        officers = data.get("officers", [])
        if not isinstance(officers, list) or not all(isinstance(o, str) for o in officers):
            raise ValueError("officers must be a list of strings")
        values: dict[str, str] = {}
        for name in ("place", "reason", "target", "stage"):
            value = data.get(name, "")
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            values[name] = value
        return cls(case=case, officers=list(officers), **values)

    @classmethod
    def from_config(cls, cfg: AssignmentConfig) -> Assignment:
        return cls(**asdict(cfg))


def load_assignment(state_dir: Path, defaults: AssignmentConfig) -> Assignment:
    """``state/assignment.json`` if present and valid, else the config's defaults."""
    path = state_dir / "assignment.json"
    if path.exists():
        try:
            return Assignment.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            log.warning("ignoring bad assignment %s: %s", path, exc)
    return Assignment.from_config(defaults)


def preamble_zh(assignment: Assignment, when: datetime) -> str:
    local = when.astimezone(CHINA_TZ)
    officers = "、".join(assignment.officers) or DEFAULTS_ZH["officers"]
    stage = STAGES_ZH.get(assignment.stage, assignment.stage) or DEFAULTS_ZH["stage"]
    parts = [
        f"现在是北京时间{local.year}年{local.month}月{local.day}日{local.hour}时{local.minute}分。",
        f"执法地点：{assignment.place or DEFAULTS_ZH['place']}。",
        f"执法人员：{officers}。",
        f"执法事由：{assignment.reason or DEFAULTS_ZH['reason']}。",
        f"执法对象：{assignment.target or DEFAULTS_ZH['target']}。",
        f"执法环节：{stage}。",
    ]
    if assignment.case:
        parts.append(f"案件编号：{assignment.case}。")
    parts.append("现在开始全程录音录像，请知悉。")
    return "".join(parts)


def preamble_en(assignment: Assignment, when: datetime) -> str:
    local = when.astimezone(CHINA_TZ)
    officers = ", ".join(assignment.officers) or DEFAULTS_EN["officers"]
    parts = [
        f"It is {local:%H:%M} Beijing time on {local:%d %B %Y}.",
        f"Place: {assignment.place or DEFAULTS_EN['place']}.",
        f"Officers: {officers}.",
        f"Reason: {assignment.reason or DEFAULTS_EN['reason']}.",
        f"Target: {assignment.target or DEFAULTS_EN['target']}.",
        f"Stage: {assignment.stage or DEFAULTS_EN['stage']}.",
    ]
    if assignment.case:
        parts.append(f"Case: {assignment.case}.")
    parts.append("Audio and video are now being recorded.")
    return " ".join(parts)


BUILDERS = {"zh": preamble_zh, "en": preamble_en}

RESUME_PROMPT = {
    "zh": "录音录像已恢复。请说明中断原因。",
    "en": "Recording has resumed. Please state the reason for the interruption.",
}
BATTERY_PROMPT = {
    "zh": "电量即将耗尽。",
    "en": "Battery nearly empty.",
}
REFUSED_PROMPT = {"zh": "无法开始录像：", "en": "Cannot record: "}


def build_preamble(
    assignment: Assignment, when: datetime, languages: list[str]
) -> list[tuple[str, str]]:
    """``[(lang, text), ...]`` in the configured language order."""
    return [(lang, BUILDERS[lang](assignment, when)) for lang in languages]
