"""A session as the case page shows it: preamble metadata, check report, segments with their
verification state, gaps, markers, and the geometry of its timeline (drawn as SVG by the
template, so the page needs neither script nor inline style).

Failure posture: pure functions over the store's rows; a record body that is not the expected
shape shows as a problem on the page, never as an exception.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from evidence.records import parse_utc

TIMELINE_WIDTH = 1000


def _time(text: Any) -> datetime | None:
    try:
        return parse_utc(text) if isinstance(text, str) else None
    except ValueError:
        return None


def session_view(
    s: dict[str, Any],
    violations: dict[int, list[str]],
    quarantined: list[str],
    present: set[str],
    explanations: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``violations``: seq -> chain problems; ``present``: object hashes found in the store;
    ``explanations``: gap seq -> its written explanation (Art. 13)."""
    explanations = explanations or {}
    records = s["records"]
    bodies = []
    for r in records:
        try:
            body = json.loads(r["body"])
        except ValueError:
            body = {}
        bodies.append(body if isinstance(body, dict) else {})
    opened = next(
        (b for r, b in zip(records, bodies, strict=True) if r["type"] == "session-open"), {}
    )
    closed = next(
        (b for r, b in zip(records, bodies, strict=True) if r["type"] == "session-close"), None
    )
    segments, gaps, markers, problems = [], [], [], list(quarantined)
    for r, b in zip(records, bodies, strict=True):
        seq_problems = violations.get(r["seq"], [])
        problems += [f"seq {r['seq']}: {p}" for p in seq_problems]
        if r["type"] == "segment":
            play_sha = r["plain_sha256"] or r["media_sha256"]
            missing = [h for h in (r["media_sha256"], play_sha) if h and h not in present]
            state = "verified" if not seq_problems and not missing else "problem"
            if missing:
                problems.append(f"seq {r['seq']}: media object missing from the store")
            segments.append(
                {
                    "seq": r["seq"],
                    "index": b.get("index"),
                    "file": r["media_file"],
                    "start": b.get("utc_start"),
                    "end": b.get("utc_end"),
                    "size": r["media_size"],
                    "frames": b.get("frames"),
                    "dropped": b.get("dropped_frames"),
                    "recovered": bool(b.get("recovered")),
                    "encrypted": bool(b.get("encryption")),
                    "state": state,
                    "problems": seq_problems,
                    "sha256": play_sha,
                    "present": bool(play_sha) and play_sha in present,
                }
            )
        elif r["type"] == "gap":
            gaps.append(
                {
                    "seq": r["seq"],
                    "cause": b.get("cause"),
                    "start": b.get("start_utc"),
                    "end": b.get("end_utc"),
                    "spoken": bool(b.get("spoken_reason")),
                    "detail": b.get("detail", ""),
                    "explanation": explanations.get(r["seq"]),
                }
            )
        elif r["type"] == "marker":
            markers.append(
                {
                    "seq": r["seq"],
                    "kind": b.get("kind"),
                    "utc": b.get("utc") or r["utc"],
                    "note": b.get("note", ""),
                }
            )
    if closed is None:
        problems.append("no session-close received (still open or not uploaded)")
    elif closed.get("segments") != len(segments):
        problems.append(
            f"session-close declares {closed.get('segments')} segments, {len(segments)} stored"
        )
    start = min((r["utc"] for r in records), default=None)
    end = max((r["utc"] for r in records), default=None)
    assignment = opened.get("assignment") if isinstance(opened.get("assignment"), dict) else {}
    view = {
        "session": s["session"],
        "device": s["device"],
        "filed_by": s["filed_by"],
        "start": start,
        "end": end,
        "stored": max((r.get("stored_utc") or "" for r in records), default="") or None,
        "assignment": assignment,
        "checks": _checks(opened.get("checks")),
        "preamble": opened.get("preamble") if isinstance(opened.get("preamble"), dict) else {},
        "segments": segments,
        "gaps": gaps,
        "markers": markers,
        "problems": problems,
        "verification": "verified" if not problems else "problem",
        "close": closed or {},
    }
    view["timeline"] = timeline(view)
    return view


def _checks(report: Any) -> dict[str, Any]:
    """The signed pre-capture check report (Art. 11) as ``{"result", "items": [name, outcome,
    reason]}``, whichever of the two shapes the device wrote."""
    if not isinstance(report, dict):
        return {"result": "missing", "items": []}
    items = report.get("checks") if isinstance(report.get("checks"), list) else report.get("items")
    rows = [
        {"name": i.get("name"), "outcome": i.get("outcome"), "reason": i.get("reason", "")}
        for i in (items if isinstance(items, list) else [])
        if isinstance(i, dict)
    ]
    return {"result": report.get("outcome") or report.get("result") or "-", "items": rows}


def timeline(v: dict[str, Any]) -> dict[str, Any]:
    """x positions (0..TIMELINE_WIDTH) of segments, gaps and markers over the session's span."""
    times = [
        t
        for item in v["segments"] + v["gaps"]
        for t in (_time(item["start"]), _time(item["end"]))
        if t is not None
    ] + [t for m in v["markers"] if (t := _time(m["utc"])) is not None]
    if not times:
        return {"width": TIMELINE_WIDTH, "items": []}
    lo, hi = min(times), max(times)
    span = max((hi - lo).total_seconds(), 1e-3)

    def x(text: Any) -> float:
        t = _time(text)
        return 0.0 if t is None else round((t - lo).total_seconds() / span * TIMELINE_WIDTH, 1)

    items = []
    for kind, rows in (("segment", v["segments"]), ("gap", v["gaps"])):
        for r in rows:
            x0, x1 = x(r["start"]), x(r["end"])
            cls = kind if kind == "gap" or r["state"] == "verified" else "segment-problem"
            label = f"seq {r['seq']} {r.get('cause') or r.get('file') or ''}"
            items.append({"kind": cls, "x": x0, "w": round(max(x1 - x0, 2.0), 1), "label": label})
    for m in v["markers"]:
        items.append({"kind": "marker", "x": x(m["utc"]), "w": 2.0, "label": str(m["kind"])})
    return {"width": TIMELINE_WIDTH, "items": items, "start": lo.isoformat(), "span_s": span}
