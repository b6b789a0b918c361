"""The accountability report (Art. 25) on a seeded store: real SQLite, real signed chains over
real H.264/AAC media imported through the receiver's own ingest, one of each failure; each is
found once and attributed to the right case, officer, device and article; a clean case reports
clean; the HTML page renders in Debian's chromium without console errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from evidence import layout
from evidence.chain import DeviceChain
from evidence.keys import generate_signing_key, save_public_key
from receiver.cli import main
from receiver.registry import DeviceRegistry
from receiver.store import connect
from tests.support.compliance import Clock, Gap, Plan, write_session

TZ = ZoneInfo("Asia/Shanghai")
CHROMIUM = "/usr/bin/chromium"


def run(data: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--data-dir", str(data), *args])
    return code, out.getvalue(), err.getvalue()


def ok(data: Path, *args: str) -> str:
    code, out, err = run(data, *args)
    assert code == 0, f"{args}: {out}{err}"
    return out


def local(dt: datetime) -> str:
    return dt.astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S")


# (kind, case, officer, device, article): what the seeded store must yield, once each
EXPECTED = {
    ("stored-late", "LATE-1", "O-late", "DEV-LATE", "Art. 14"),
    ("still-on-device", None, "O-pending", "DEV-PENDING", "Art. 14"),
    ("no-recording", "NOREC-1", "O-norec", "DEV-NOREC", "Art. 8"),
    ("missed-window", "WIN-1", "O-win", "DEV-WIN", "Art. 9"),
    ("no-passing-check", "CHK-1", "O-chk", "DEV-CHK", "Art. 11"),
    ("no-preamble", "PRE-1", "O-pre", "DEV-PRE", "Art. 12"),
    ("unexplained-gap", "GAP-1", "O-gap", "DEV-GAP", "Art. 13"),
    ("missing-markers", "MARK-1", "O-mark", "DEV-MARK", "Art. 20"),
    ("inspection-times", "INSP-1", "O-insp", "DEV-INSP", "Art. 18"),
    ("case-file-overdue", "FILE-1", "O-file", "DEV-FILE", "Art. 21"),
    ("verification-failure", "VER-1", "O-ver", "DEV-VER", "Art. 23"),
    ("quarantined", "Q-1", "O-q", "DEV-Q", "Art. 23"),
    ("device-unseen", None, "O-unseen", "DEV-UNSEEN", "Art. 25"),
    ("clock-unsynced", None, "O-sync", "DEV-SYNC", "Art. 11"),
    ("clock-offset", None, "O-offset", "DEV-OFFSET", "Art. 11"),
}


@dataclass
class Seeded:
    data: Path
    now: datetime
    gap_sessions: dict[str, str]


def _device(root: Path, data: Path, device: str, *, register: bool = True) -> DeviceChain:
    key = generate_signing_key()
    pub = root / f"{device}.pub"
    root.mkdir(parents=True, exist_ok=True)
    save_public_key(pub, key.public_key())
    if register:
        ok(data, "device", "add", "--id", device, "--key", str(pub))
    return DeviceChain(root / device, device, key)


def _record(root: Path, data: Path, clips: list[Path], device: str, plan: Plan, **kw: Any) -> str:
    chain = _device(root, data, device, **kw)
    session, _ = write_session(chain, Clock(), clips, plan)
    return session


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, mpegts_clips: list[Path]) -> Seeded:
    base = tmp_path_factory.mktemp("compliance")
    data, spools = base / "rdata", base / "spools"
    now = datetime.now(UTC).replace(microsecond=0)
    recent = now - timedelta(hours=3)
    clips = mpegts_clips

    cases = [
        ("CLEAN-1", "inspection", "Unit-A"),
        ("LATE-1", "inspection", "Unit-B"),
        ("NOREC-1", "sealing", "Unit-B"),
        ("WIN-1", "inspection", "Unit-A"),
        ("CHK-1", "other", "Unit-A"),
        ("PRE-1", "other", "Unit-A"),
        ("GAP-1", "other", "Unit-A"),
        ("MARK-1", "penalty", "Unit-B"),
        ("INSP-1", "inspection", "Unit-B"),
        ("FILE-1", "other", "Unit-B"),
        ("VER-1", "other", "Unit-A"),
        ("Q-1", "other", "Unit-A"),
        ("SYNC-1", "other", "Unit-A"),
        ("MISC-1", "other", "Unit-A"),
    ]
    for number, kind, unit in cases:
        ok(data, "case", "create", "--number", number, "--type", kind, "--title", number,
           "--unit", unit)  # fmt: skip

    def plan(case: str, officer: str, stage: str, **kw: Any) -> Plan:
        return Plan(case=case, officers=(officer,), stage=stage, start=recent, **kw)

    arrive_leave = ("arrival", "departure")
    _record(spools, data, clips, "DEV-CLEAN",
            plan("CLEAN-1", "O-clean", "inspection", markers=arrive_leave))  # fmt: skip
    _record(spools, data, clips, "DEV-LATE", Plan(
        case="LATE-1", officers=("O-late",), stage="inspection", markers=arrive_leave,
        start=datetime(2026, 9, 30, 2, 0, tzinfo=UTC)))  # fmt: skip
    _record(spools, data, clips, "DEV-CHK", plan("CHK-1", "O-chk", "start", check=None))
    _record(spools, data, clips, "DEV-PRE", plan("PRE-1", "O-pre", "start", preamble=False))
    gaps = (Gap("manual-pause"), Gap("other"), Gap("camera-fault"), Gap("weather", spoken=True))
    gap_session = _record(
        spools, data, clips, "DEV-GAP", plan("GAP-1", "O-gap", "start", gaps=gaps)
    )
    _record(spools, data, clips, "DEV-MARK",
            plan("MARK-1", "O-mark", "service", markers=("id-shown",)))  # fmt: skip
    _record(spools, data, clips, "DEV-INSP",
            plan("INSP-1", "O-insp", "inspection", markers=arrive_leave))  # fmt: skip
    _record(spools, data, clips, "DEV-VER", plan("VER-1", "O-ver", "start"))
    _record(spools, data, clips, "DEV-SYNC", plan("SYNC-1", "O-sync", "start", unsynced_close=True))
    # DEV-Q is registered with one key but its spool is signed with another
    _device(spools / "registered-q", data, "DEV-Q")
    _record(spools, data, clips, "DEV-Q", plan("Q-1", "O-q", "start"), register=False)
    for device in ("DEV-NOREC", "DEV-WIN", "DEV-FILE", "DEV-UNSEEN", "DEV-OFFSET", "DEV-PENDING"):
        _device(spools / "keys-only", data, device)

    for device_dir in sorted(spools.iterdir()):
        if (device_dir / "devices").is_dir():
            run(data, "import", str(device_dir))  # DEV-Q's import is refused (quarantined)

    # the tamper: the newest stored record of DEV-VER altered on the receiver's disk (Art. 23)
    conn = connect(data / "receiver.db")
    last = conn.execute("SELECT MAX(seq) FROM records WHERE device = 'DEV-VER'").fetchone()[0]
    path = layout.record_path(data / "evidence", "DEV-VER", last)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes().replace(b'"stopped"', b'"STOPPED"'))

    # what devices reported at their last docking (the hello path's registry update)
    registry = DeviceRegistry(conn)
    for device in ("CLEAN", "LATE", "CHK", "PRE", "GAP", "MARK", "INSP", "VER", "SYNC", "Q",
                   "NOREC", "WIN", "FILE"):  # fmt: skip
        registry.seen(f"DEV-{device}", clock_offset_s=0.2, pending_segments=0, report=True)
    registry.seen("DEV-OFFSET", clock_offset_s=12.5, pending_segments=0, report=True)
    registry.seen(
        "DEV-PENDING",
        clock_offset_s=-0.3,
        pending_segments=3,
        oldest_pending_utc="2026-11-20T02:00:00.000000Z",
        report=True,
    )
    conn.close()

    def assign(device: str, case: str, officer: str, *extra: str) -> None:
        ok(data, "assign", "--device", device, "--case", case, "--officer", officer, "--place",
           "P", "--reason", "R", "--target", "T", "--stage", "inspection", *extra)  # fmt: skip

    assign("DEV-CLEAN", "CLEAN-1", "O-clean")
    assign("DEV-NOREC", "NOREC-1", "O-norec")
    window = (local(now - timedelta(hours=30)), local(now - timedelta(hours=29)))
    assign("DEV-WIN", "WIN-1", "O-win", "--window-start", window[0], "--window-end", window[1])
    assign("DEV-FILE", "FILE-1", "O-file")
    for device, officer in (("DEV-UNSEEN", "O-unseen"), ("DEV-OFFSET", "O-offset"),
                            ("DEV-PENDING", "O-pending")):  # fmt: skip
        assign(device, "MISC-1", officer)
    for device, case, officer in (("DEV-LATE", "LATE-1", "O-late"), ("DEV-CHK", "CHK-1", "O-chk"),
                                  ("DEV-SYNC", "SYNC-1", "O-sync")):  # fmt: skip
        assign(device, case, officer)

    # clerks' entries: an explanation for the "other" gap, the inspection documents, conclusions
    gaps = {
        json.loads(r)["cause"]: s
        for s, r in connect(data / "receiver.db").execute(
            "SELECT seq, body FROM records WHERE device = 'DEV-GAP' AND type = 'gap'"
        )
    }
    ok(data, "gap", "explain", "--device", "DEV-GAP", "--seq", str(gaps["other"]), "--by",
       "O-gap", "--text", "设备被围观群众遮挡，无法继续录像")  # fmt: skip
    ok(data, "case", "inspection-times", "CLEAN-1", "--start", local(recent), "--end",
       local(recent + timedelta(seconds=5)), "--by", "clerk")  # fmt: skip
    ok(data, "case", "inspection-times", "INSP-1", "--start", local(recent - timedelta(hours=3)),
       "--end", local(recent - timedelta(hours=2)), "--by", "clerk")  # fmt: skip
    ok(data, "case", "conclude", "CLEAN-1", "--date", now.astimezone(TZ).date().isoformat(),
       "--by", "clerk")  # fmt: skip
    ok(data, "case", "conclude", "FILE-1", "--date", "2026-10-08", "--by", "clerk")
    return Seeded(data, now, {"session": gap_session, **{k: str(v) for k, v in gaps.items()}})


def _report(data: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run(data, "compliance", "report", "--format", "json", *args)
    assert code in (0, 1), out + err
    return code, json.loads(out)


def test_each_failure_found_once_and_attributed(seeded: Seeded) -> None:
    code, report = _report(seeded.data)
    assert code == 1
    assert not report["clean"]
    got = [
        (f["kind"], f["case"], ", ".join(f["officers"]), f["device"], f["article"])
        for f in report["findings"]
    ]
    assert sorted(got, key=str) == sorted(EXPECTED, key=str), json.dumps(
        report["findings"], ensure_ascii=False, indent=1
    )
    by_kind = {f["kind"]: f for f in report["findings"]}
    # the unexplained gap is the manual pause, not the explained, self-explaining or spoken ones
    assert f"gap seq {seeded.gap_sessions['manual-pause']} (manual-pause)" in by_kind[
        "unexplained-gap"]["detail"]  # fmt: skip
    assert by_kind["missing-markers"]["detail"].startswith("stage service: missing document-served")
    assert by_kind["stored-late"]["deadline"]["due_local"] == "2026-10-09 24:00 CST"
    assert by_kind["stored-late"]["deadline"]["due_utc"] == "2026-10-09T16:00:00.000000Z"
    assert by_kind["case-file-overdue"]["deadline"]["due_date"] == "2026-11-04"
    assert by_kind["quarantined"]["session"] is not None
    assert report["by_unit"]["Unit-B"]["stored-late"] == 1
    assert report["by_officer"]["O-late"] == {"stored-late": 1}
    late_rows = [r for r in report["storage"] if r["late"]]
    assert [r["device"] for r in late_rows] == ["DEV-LATE"]


def test_clean_case_reports_clean(seeded: Seeded) -> None:
    code, report = _report(seeded.data, "--case", "CLEAN-1")
    assert code == 0
    assert report["clean"]
    assert report["findings"] == []
    assert [r["device"] for r in report["storage"]] == ["DEV-CLEAN"]
    code, out, _ = run(seeded.data, "compliance", "report", "--case", "CLEAN-1")
    assert code == 0
    assert "CLEAN: no findings" in out


def test_filters_by_case_officer_device_unit_and_period(seeded: Seeded) -> None:
    _, by_case = _report(seeded.data, "--case", "LATE-1")
    assert [f["kind"] for f in by_case["findings"]] == ["stored-late"]
    _, by_officer = _report(seeded.data, "--officer", "O-pending")
    assert [f["kind"] for f in by_officer["findings"]] == ["still-on-device"]
    _, by_device = _report(seeded.data, "--device", "DEV-GAP")
    assert [f["kind"] for f in by_device["findings"]] == ["unexplained-gap"]
    _, by_unit = _report(seeded.data, "--unit", "Unit-B")
    assert {f["case"] for f in by_unit["findings"]} == {
        "LATE-1", "NOREC-1", "MARK-1", "INSP-1", "FILE-1"}  # fmt: skip
    _, october = _report(seeded.data, "--from", "2026-10-01", "--to", "2026-10-31")
    assert "stored-late" not in {f["kind"] for f in october["findings"]}


def test_text_report_names_case_officer_device_time_and_article(seeded: Seeded) -> None:
    code, out, _ = run(seeded.data, "compliance", "report")
    assert code == 1
    line = next(x for x in out.splitlines() if x.startswith("[Art. 14] recording stored late"))
    assert "case LATE-1; officer O-late; device DEV-LATE" in line
    assert "at 2026-09-30 10:00:0" in line
    assert "CST" in line


def test_listings_show_deadlines_in_local_time(seeded: Seeded) -> None:
    out = ok(seeded.data, "sessions")
    late = next(x for x in out.splitlines() if "DEV-LATE" in x)
    assert "2026-09-30 10:00:00 CST" in late
    assert "2026-10-09 24:00 CST" in late
    assert late.rstrip().endswith("no")  # on_time
    _, out, _ = run(seeded.data, "sessions", "--json")
    row = next(r for r in json.loads(out) if r["device"] == "DEV-LATE")
    assert row["deadline"]["due_utc"] == "2026-10-09T16:00:00.000000Z"
    assert row["on_time"] is False
    cases = ok(seeded.data, "cases")
    assert "2026-11-04 24:00 CST" in next(x for x in cases.splitlines() if x.startswith("FILE-1"))
    devices = json.loads(ok(seeded.data, "devices", "--json"))
    pending = next(d for d in devices if d["device"] == "DEV-PENDING")
    assert pending["upload_by"] == "2026-11-24 24:00 CST"


def test_html_report_renders_in_chromium(seeded: Seeded, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: scripts/setup installs Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install '.[test]'")
    page_path = tmp_path / "report.html"
    code, out, err = run(seeded.data, "compliance", "report", "--format", "html",
                         "--out", str(page_path))  # fmt: skip
    assert code == 1, out + err
    assert page_path.is_file(), out + err
    html = page_path.read_text(encoding="utf-8")
    assert "<script" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            assert page.locator("h1").inner_text().startswith("Accountability report")
            assert page.locator("svg rect.late").count() == 1
            assert page.locator("details summary").count() == len({k for k, *_ in EXPECTED})
            assert page.get_by_text("DEV-LATE").count() >= 1
            shot = tmp_path / "compliance-report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith("file://")] == []
    assert shot.stat().st_size > 10_000
    artifacts = os.environ.get("BODYCAM_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
        shutil.copy(page_path, Path(artifacts) / "compliance-report.html")


def test_scheduled_window_travels_with_the_assignment(seeded: Seeded) -> None:
    from receiver.cases import CaseBook

    book = CaseBook(connect(seeded.data / "receiver.db"))
    scheduled = book.active_assignment("DEV-WIN")
    assert scheduled is not None
    window = scheduled.wire()["window"]
    start = datetime.strptime(window["start_utc"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert start == seeded.now - timedelta(hours=30)
    plain = book.active_assignment("DEV-CLEAN")
    assert plain is not None
    assert "window" not in plain.wire()


def test_report_api_for_the_web_console(seeded: Seeded) -> None:
    from receiver.compliance import render
    from receiver.compliance.report import report_for
    from receiver.config import ReceiverConfig
    from receiver.store import EvidenceStore

    report = report_for(
        ReceiverConfig(), EvidenceStore(seeded.data), connect(seeded.data / "receiver.db"),
        case="LATE-1",
    )  # fmt: skip
    assert [f.kind.value for f in report.findings] == ["stored-late"]
    assert "DEV-LATE" in render.text(report)
    assert "<svg" in render.html(report)
    assert report.to_dict()["scope"]["case"] == "LATE-1"
