"""Renderers of the accountability report: plain text for a terminal and a self-contained HTML
page (inline CSS and SVG, no script, no external resource) a supervisor opens in a browser.

Times are shown in the report's local timezone; deadlines computed on a provisional or
weekends-only calendar are flagged next to the date and the calendar warning is printed at the
top. Failure posture: pure string building; every value from the store is HTML-escaped.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

from receiver.compliance.deadlines import format_local
from receiver.compliance.findings import TITLES, Finding, Kind, StorageRow
from receiver.compliance.report import Report


def _where(f: Finding) -> str:
    parts = [
        f"case {f.case or '-'}",
        f"officer {', '.join(f.officers) or '-'}",
        f"device {f.device or '-'}",
    ]
    if f.session:
        parts.append(f"session {f.session[:12]}")
    return "; ".join(parts)


def text(report: Report) -> str:
    tz = report.options.tz
    s = report.scope_dict()
    lines = [
        "Accountability report (Art. 25)",
        f"  as of {format_local(report.options.now, tz)}; period {s['from'] or 'start'} .. "
        f"{s['to'] or 'now'}"
        + "".join(f"; {k} {s[k]}" for k in ("case", "officer", "device", "unit") if s[k]),
    ]
    for w in report.warnings:
        lines.append(f"  WARNING: {w}")
    if report.clean:
        lines.append("  CLEAN: no findings")
        return "\n".join(lines)
    lines.append(f"  {len(report.findings)} finding(s)")
    counts = Counter(f.kind for f in report.findings)
    for kind in Kind:
        if counts[kind]:
            lines.append(f"    {counts[kind]:3d}  {TITLES[kind]}")
    lines.append("")
    for f in report.findings:
        when = format_local(f.utc, tz) if f.utc else "-"
        lines.append(f"[{f.article}] {f.title}: {_where(f)}; at {when}")
        lines.append(f"    {f.detail}")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:1.5rem;color:#1b1b1b}
body{max-width:72rem}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:1.6rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f2f2}
.warn{background:#fff4ce;border:1px solid #e0b000;padding:.5rem;margin:.3rem 0}
.clean{background:#e3f6e3;border:1px solid #5a5;padding:.6rem;font-weight:bold}
.art{font-weight:bold;white-space:nowrap}summary{cursor:pointer;font-weight:bold;margin:.4rem 0}
.late{fill:#c62828}.ok{fill:#2e7d32}.due{stroke:#1b1b1b;stroke-width:2}
.num{text-align:right}
"""


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _summary(title: str, groups: dict[str, Counter[str]]) -> str:
    kinds = [k for k in Kind if any(c[k.value] for c in groups.values())]
    rows = [
        [escape(name)]
        + [f'<span class="num">{c[k.value] or ""}</span>' for k in kinds]
        + [str(sum(c.values()))]
        for name, c in groups.items()
    ]
    return f"<h2>{escape(title)}</h2>" + _table(
        [title.split(" ")[1].capitalize()] + [k.value for k in kinds] + ["total"], rows
    )


def _chart(rows: list[StorageRow]) -> str:
    """Storage delay (bar) against the Art. 14 allowance (tick) per recording, inline SVG."""
    if not rows:
        return "<p>No recordings in scope.</p>"
    rows = sorted(rows, key=lambda r: r.ended_utc)[:60]
    scale_h = max(max(r.delay_h for r in rows), max(r.allowed_h for r in rows), 1.0)
    width, label_w, bar_h = 760, 190, 16
    plot = width - label_w - 60
    height = 30 + bar_h * len(rows) + 8 * len(rows)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="storage delay against the Art. 14 deadline">'
    ]
    for i, r in enumerate(rows):
        y = 20 + i * (bar_h + 8)
        w = max(1.0, plot * r.delay_h / scale_h)
        due_x = label_w + plot * r.allowed_h / scale_h
        cls = "late" if r.late else "ok"
        label = escape(f"{r.device} {r.session[:8]}")
        parts.append(f'<text x="0" y="{y + 12}" font-size="11">{label}</text>')
        parts.append(
            f'<rect class="{cls}" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}">'
            f"<title>{escape(r.session)}: stored after {r.delay_h:.1f} h, allowed "
            f"{r.allowed_h:.1f} h</title></rect>"
        )
        parts.append(
            f'<line class="due" x1="{due_x:.1f}" x2="{due_x:.1f}" '
            f'y1="{y - 2}" y2="{y + bar_h + 2}"/>'
        )
        parts.append(
            f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" font-size="10">{r.delay_h:.0f} h</text>'
        )
    parts.append(
        f'<text x="{label_w}" y="12" font-size="11">bar: hours from end to storage '
        f"(red: late); black tick: deadline (2 working days)</text></svg>"
    )
    return "".join(parts)


def _finding_rows(findings: list[Finding], tz: str) -> list[list[str]]:
    return [
        [
            f'<span class="art">{escape(f.article)}</span>',
            escape(f.case or "-"),
            escape(", ".join(f.officers) or "-"),
            escape(f.device or "-"),
            escape(f.session[:12] if f.session else "-"),
            escape(format_local(f.utc, tz) if f.utc else "-"),
            escape(f.detail),
        ]
        for f in findings
    ]


def html(report: Report) -> str:
    tz = report.options.tz
    s = report.scope_dict()
    scope = ", ".join(f"{k} {s[k]}" for k in ("case", "officer", "device", "unit") if s[k])
    out: list[str] = [
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">',
        "<title>Accountability report (Art. 25)</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Accountability report (Art. 25) · 执法全过程记录问责报告</h1>",
        f"<p>As of {escape(format_local(report.options.now, tz))}; period "
        f"{escape(s['from'] or 'start')} .. {escape(s['to'] or 'now')}"
        f"{escape('; ' + scope) if scope else ''}. Times in {escape(tz)}.</p>",
    ]
    out += [f'<div class="warn">WARNING: {escape(w)}</div>' for w in report.warnings]
    if report.clean:
        out.append('<div class="clean">Clean: no findings in this scope.</div>')
    else:
        counts = Counter(f.kind for f in report.findings)
        out.append(
            "<h2>Overview</h2>"
            + _table(
                ["finding", "count"],
                [[escape(TITLES[k]), str(counts[k])] for k in Kind if counts[k]],
            )
        )
        out.append(_summary("Per officer", report.by_officer()))
        out.append(_summary("Per unit", report.by_unit()))
    out.append("<h2>Storage delay against the deadline (Art. 14)</h2>" + _chart(report.storage))
    if not report.clean:
        out.append("<h2>Findings</h2>")
        head = ["article", "case", "officers", "device", "session", "time", "detail"]
        for kind in Kind:
            group = [f for f in report.findings if f.kind is kind]
            if group:
                out.append(
                    f"<details open><summary>{escape(TITLES[kind])} ({len(group)})</summary>"
                    + _table(head, _finding_rows(group, tz))
                    + "</details>"
                )
    out.append("</body></html>")
    return "\n".join(out)


def deadline_cell(deadline: dict[str, Any] | None) -> str:
    """A deadline for a listing column (local time, flagged when provisional)."""
    return str(deadline["due_local"]) if deadline else "-"
