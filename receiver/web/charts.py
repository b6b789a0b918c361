"""Chart geometry for the report page: horizontal bars as numbers the template draws as SVG
(no script, no inline style; colours come from the stylesheet by class).

Failure posture: pure functions; empty input gives an empty chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WIDTH = 800
LABEL_W = 260
BAR_H = 18
STEP = 26


def bars(items: Sequence[tuple[str, float]], *, unit: str = "") -> dict[str, Any]:
    """``(label, value)`` pairs as bars scaled to the widest."""
    top = max((v for _, v in items), default=0.0) or 1.0
    plot = WIDTH - LABEL_W - 80
    out = [
        {
            "label": label,
            "value": f"{value:g}{unit}",
            "y": 4 + i * STEP,
            "w": round(max(plot * value / top, 1.0), 1),
        }
        for i, (label, value) in enumerate(items)
    ]
    return {"width": WIDTH, "height": 8 + STEP * len(out), "label_w": LABEL_W, "bars": out}


def delays(rows: Sequence[dict[str, Any]], limit: int = 40) -> dict[str, Any]:
    """Storage delay per recording (bar; ``late`` class when past its deadline) against its
    Art. 14 allowance (a tick), newest ``limit`` recordings."""
    rows = list(rows)[-limit:]
    top = max([r["delay_h"] for r in rows] + [r["allowed_h"] for r in rows] + [1.0])
    plot = WIDTH - LABEL_W - 80
    out = []
    for i, r in enumerate(rows):
        out.append(
            {
                "label": f"{r['device']} {r['session'][:15]}",
                "value": f"{r['delay_h']:.1f} h",
                "y": 4 + i * STEP,
                "w": round(max(plot * r["delay_h"] / top, 1.0), 1),
                "due_x": round(LABEL_W + plot * r["allowed_h"] / top, 1),
                "cls": "late" if r["late"] else "ok",
            }
        )
    return {"width": WIDTH, "height": 8 + STEP * len(out), "label_w": LABEL_W, "bars": out}
