"""Working-day deadlines (Art. 14, 21) on the Chinese calendar, printed in local time; the
administrator's holiday file, the provisional and weekends-only years; bad input."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from receiver.cli import main
from receiver.compliance.calendar import Basis, WorkCalendar, load_holiday_file
from receiver.compliance.deadlines import case_file_deadline, storage_deadline
from receiver.compliance.errors import DateRangeError, HolidayFileError
from receiver.compliance.facts import AssignmentFact, Facts, SessionFact
from receiver.compliance.findings import Kind, Options, evaluate

TZ = "Asia/Shanghai"

BOTH = '[years.2027]\nsource = "x"\nholidays = ["2027-02-14"]\nworkdays = ["2027-02-14"]\n'
HOLIDAYS_2027 = """\
# a schedule as an administrator would copy it from the State Council's notice
[years.2027]
source = "test schedule"
holidays = ["2027-01-01", "2027-02-05..2027-02-11"]
workdays = ["2027-02-14", "2027-02-20"]
"""


def cli(*args: str, config: Path | None = None, data: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    argv = (["--config", str(config)] if config else []) + (
        ["--data-dir", str(data)] if data else []
    )
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*argv, *args])
        except SystemExit as exc:  # argparse refusing a value
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def config_file(tmp_path: Path, *, holidays: str | None = None, rule_based: bool = True) -> Path:
    lines = ["[compliance]", f"rule_based_holidays = {'true' if rule_based else 'false'}"]
    if holidays is not None:
        (tmp_path / "holidays.toml").write_text(holidays, encoding="utf-8")
        lines.append('holiday_file = "holidays.toml"')
    path = tmp_path / "receiver.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def due(ended: str, *extra: str, config: Path | None = None) -> str:
    code, out, err = cli("compliance", "deadline", "--ended", ended, *extra, config=config)
    assert code == 0, out + err
    return out


@pytest.mark.parametrize(
    ("ended", "extra", "expected"),
    [
        # National Day 10-01..07: a Wednesday recording is due on the second day back
        ("2026-09-30 16:00", (), "ended 2026-09-30 16:00:00 CST -> due 2026-10-09 24:00 CST"),
        # the make-up working Saturday 10-10 counts
        ("2026-10-09 11:00", (), "-> due 2026-10-12 24:00 CST"),
        # Mid-autumn: the make-up working Sunday 09-20 counts; the holiday 09-25 does not
        ("2026-09-18 15:00", (), "-> due 2026-09-21 24:00 CST"),
        ("2026-09-24 15:00", (), "-> due 2026-09-29 24:00 CST"),
        # an ordinary weekend; the day of the event is not counted even if it is a working day
        ("2026-11-06 23:59", (), "-> due 2026-11-10 24:00 CST"),
        # local time decides the day: Thursday 17:30 UTC is Friday 01:30 in Beijing
        ("2026-11-05T17:30:00+00:00", (), "ended 2026-11-06 01:30:00 CST -> due 2026-11-10"),
        # remote work: counted from the officer's return (Thursday) -> Friday, Monday
        (
            "2026-11-02 10:00",
            ("--return-date", "2026-11-12"),
            "returned 2026-11-12 -> due 2026-11-16 24:00 CST",
        ),
    ],
)
def test_storage_deadlines_across_holidays_in_local_time(
    ended: str, extra: tuple[str, ...], expected: str
) -> None:
    out = due(ended, *extra)
    assert expected in out
    assert "WARNING" not in out


def test_case_file_deadline_counts_twenty_working_days() -> None:
    code, out, _ = cli("compliance", "deadline", "--concluded", "2026-09-15")
    assert code == 0
    # 09-20 (make-up Sunday) and 10-10 (make-up Saturday) count; 09-25 and 10-01..07 do not
    assert "Art. 21: concluded 2026-09-15 -> due 2026-10-19 24:00 CST" in out


def test_2027_with_the_administrators_file(tmp_path: Path) -> None:
    config = config_file(tmp_path, holidays=HOLIDAYS_2027)
    out = due("2027-02-04 10:00", config=config)
    # 02-05..11 off; Friday 02-12 (1); the administrator's make-up Sunday 02-14 (2)
    assert "-> due 2027-02-14 24:00 CST" in out
    assert "WARNING" not in out
    assert "-> due 2027-01-05 24:00 CST" in due("2026-12-31 10:00", config=config)
    code, out, _ = cli("compliance", "calendar", "2027", "--json", config=config)
    data = json.loads(out)
    assert code == 0
    assert data["basis"] == "admin"
    assert data["workdays"] == ["2027-02-14", "2027-02-20"]


def test_2027_without_the_file_is_provisional_and_says_so(tmp_path: Path) -> None:
    out = due("2027-02-04 10:00", config=config_file(tmp_path))
    # the holidays package's rule: 02-05..10 off, no make-up days known
    assert "-> due 2027-02-12 24:00 CST (provisional)" in out
    assert "WARNING: 2027: provisional calendar" in out


def test_2027_known_to_nobody_falls_back_to_weekends_with_a_warning(tmp_path: Path) -> None:
    out = due("2027-02-04 10:00", config=config_file(tmp_path, rule_based=False))
    assert "-> due 2027-02-08 24:00 CST (weekends-only)" in out
    assert "WARNING: 2027: no holiday schedule known — counted on weekends only" in out
    _, out, _ = cli(
        "compliance", "deadline", "--ended", "2027-02-04 10:00", "--json",
        config=config_file(tmp_path, rule_based=False),
    )  # fmt: skip
    data = json.loads(out)
    assert data["basis"] == "weekends-only"
    assert data["due_utc"] == "2027-02-08T16:00:00.000000Z"
    assert data["warnings"]


def test_both_libraries_agree_on_2026() -> None:
    official = WorkCalendar(rule_based=False).year(2026)
    assert official.basis is Basis.OFFICIAL
    assert official.source.startswith("chinese_calendar")
    from receiver.compliance.calendar import _from_holidays

    other = _from_holidays(2026)
    assert other is not None
    assert other.basis is Basis.OFFICIAL
    days = [date(2026, 1, 1).fromordinal(date(2026, 1, 1).toordinal() + i) for i in range(365)]
    assert [d for d in days if official.is_working_day(d) != other.is_working_day(d)] == []
    assert date(2026, 9, 20) in official.workdays
    assert date(2026, 10, 10) in official.workdays


def test_deadline_functions_keep_utc_and_reject_years_out_of_range() -> None:
    cal = WorkCalendar()
    d = storage_deadline(cal, TZ, datetime(2026, 9, 30, 8, tzinfo=UTC))
    assert d.to_dict()["due_utc"] == "2026-10-09T16:00:00.000000Z"
    assert case_file_deadline(cal, TZ, date(2026, 10, 8)).due_date == date(2026, 11, 4)
    with pytest.raises(DateRangeError, match="2101"):
        cal.add_working_days(date(2100, 12, 31), 2)


# -- the core, with typed facts (no I/O) ------------------------------------------------------


def _session(end: datetime, stored: datetime, **kw: object) -> SessionFact:
    base: dict[str, object] = {
        "session": "s1",
        "device": "D1",
        "case": "C1",
        "officers": ("王芳",),
        "stage": "start",
        "start_utc": end,
        "end_utc": end,
        "closed": True,
        "stored_utc": stored,
        "check_result": "pass",
        "preamble": True,
        "markers": (),
    }
    base.update(kw)
    return SessionFact(**base)  # type: ignore[arg-type]


def test_return_date_on_the_assignment_moves_the_storage_deadline() -> None:
    end = datetime(2026, 11, 2, 2, tzinfo=UTC)
    stored = datetime(2026, 11, 13, 2, tzinfo=UTC)  # 11 days later
    assign = AssignmentFact(1, "D1", "C1", ("王芳",), "start", datetime(2026, 11, 1, tzinfo=UTC))
    opts = Options(now=datetime(2026, 12, 1, tzinfo=UTC))
    late = evaluate(
        Facts(sessions=(_session(end, stored),), assignments=(assign,)), WorkCalendar(), opts
    )
    assert [f.kind for f in late.findings] == [Kind.STORED_LATE]
    remote = AssignmentFact(
        1, "D1", "C1", ("王芳",), "start", datetime(2026, 11, 1, tzinfo=UTC),
        return_date=date(2026, 11, 12),
    )  # fmt: skip
    ok = evaluate(
        Facts(sessions=(_session(end, stored),), assignments=(remote,)), WorkCalendar(), opts
    )
    assert ok.findings == []
    assert ok.storage[0].deadline.due_date == date(2026, 11, 16)


def test_window_with_a_recording_or_still_open_is_not_flagged() -> None:
    w0, w1 = datetime(2026, 11, 3, 1, tzinfo=UTC), datetime(2026, 11, 3, 3, tzinfo=UTC)
    assign = AssignmentFact(
        1, "D1", "C1", ("王芳",), "start", datetime(2026, 11, 1, tzinfo=UTC),
        window_start_utc=w0, window_end_utc=w1,
    )  # fmt: skip
    inside = _session(datetime(2026, 11, 3, 2, tzinfo=UTC), datetime(2026, 11, 3, 5, tzinfo=UTC))
    after = Options(now=datetime(2026, 11, 4, tzinfo=UTC))
    recorded = evaluate(Facts(sessions=(inside,), assignments=(assign,)), WorkCalendar(), after)
    assert recorded.findings == []
    missed = evaluate(Facts(assignments=(assign,)), WorkCalendar(), after)
    assert [f.kind for f in missed.findings] == [Kind.MISSED_WINDOW]
    during = Options(now=datetime(2026, 11, 3, 2, tzinfo=UTC))
    assert evaluate(Facts(assignments=(assign,)), WorkCalendar(), during).findings == []


# -- bad input: clear messages naming file and line, nothing half-written ----------------------


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('[years.2027]\nsource = "x"\nholidays = ["2027-01-01",\n', 3, "not valid TOML"),
        ('[years.2027]\nsource = "x"\nholidays = [2027-01-01 x]\n', 3, "not valid TOML"),
        ('[years.2027]\nsource = "x"\n\nholidays = ["2027-02-30"]\n', 4, "day is out of range"),
        ('[years.2027]\nsource = "x"\nholidays = ["2026-10-01"]\n', 3, "is not in 2027"),
        (BOTH, 3, "both a holiday and a workday"),
        (
            '[years.2027]\nsource = "x"\nholiday = ["2027-02-14"]\n',
            3,
            "years.2027.holiday: unknown key",
        ),
        ("[years.2027]\nholidays = []\n", 1, "source (where the schedule is from) is required"),
        ('[years.1850]\nsource = "x"\n', 1, "not a year in 2000..2100"),
        ('[years.2027]\nsource = "x"\nholidays = ["2027-03-05..2027-03-01"]\n', 3, "ends before"),
    ],
)
def test_malformed_holiday_file_names_file_and_line(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = tmp_path / "holidays.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HolidayFileError) as info:
        load_holiday_file(path)
    assert info.value.line == line
    assert reason in str(info.value)
    assert str(info.value).startswith(f"holiday file {path}:{line}: ")


def test_oversized_or_unreadable_holiday_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(HolidayFileError, match="larger than"):
        load_holiday_file(big)
    with pytest.raises(HolidayFileError, match="cannot read"):
        load_holiday_file(tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[years.2027]")
    with pytest.raises(HolidayFileError, match="not UTF-8"):
        load_holiday_file(binary)


def test_malformed_holiday_file_on_the_command_line_writes_nothing(tmp_path: Path) -> None:
    config = config_file(
        tmp_path, holidays='[years.2027]\nsource = "x"\nworkdays = ["2027-13-01"]\n'
    )
    out_file = tmp_path / "report.html"
    assert cli("case", "create", "--number", "C1", "--type", "other", "--title", "t",
               data=tmp_path / "rdata")[0] == 0  # fmt: skip
    code, out, err = cli(
        "compliance", "report", "--format", "html", "--out", str(out_file),
        config=config, data=tmp_path / "rdata",
    )  # fmt: skip
    assert code == 2
    assert out == ""
    assert err.strip().splitlines()[-1] == (
        f"bodycam-receiver: holiday file {tmp_path / 'holidays.toml'}:3: years.2027.workdays: "
        "'2027-13-01': month must be in 1..12"
    )
    assert not out_file.exists()


def test_bad_dates_and_types_are_refused_and_change_nothing(tmp_path: Path) -> None:
    data = tmp_path / "rdata"
    code, _, err = cli(
        "case", "create", "--number", "C1", "--type", "raid", "--title", "t", data=data
    )
    assert code == 2
    assert "invalid choice: 'raid'" in err
    assert cli("case", "create", "--number", "C1", "--type", "sealing", "--title", "t",
               data=data)[0] == 0  # fmt: skip
    for bad, message in (
        ("1899-12-31", "--date: 1899-12-31 is outside 2000..2100"),
        ("2026-02-30", "--date: '2026-02-30' is not a date (YYYY-MM-DD)"),
    ):
        code, _, err = cli("case", "conclude", "C1", "--date", bad, "--by", "clerk", data=data)
        assert code == 2
        assert err.strip().endswith(message)
    code, _, err = cli("compliance", "report", "--from", "2026-12-01", "--to", "2026-11-01",
                       data=data)  # fmt: skip
    assert code == 2
    assert "--to is before --from" in err
    code, _, err = cli("compliance", "deadline", "--ended", "2150-01-01 10:00")
    assert code == 2
    assert "--ended: 2150-01-01 10:00 is outside 2000..2100" in err
    code, out, _ = cli("cases", "--json", data=data)
    assert json.loads(out)[0]["concluded"] is None


def test_mandatory_case_without_recording_needs_a_supervisor_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "rdata"
    assert cli("case", "create", "--number", "S1", "--type", "seizure", "--title", "t",
               data=data)[0] == 0  # fmt: skip
    monkeypatch.setenv("BODYCAM_NEW_PASSWORD", "correct horse battery")
    assert cli("user", "add", "admin", "--role", "administrator", data=data)[0] == 0
    monkeypatch.setenv("BODYCAM_PASSWORD", "correct horse battery")
    for name, role in (("zhang.san", "supervisor"), ("li.si", "clerk")):
        assert cli("--user", "admin", "user", "add", name, "--role", role, data=data)[0] == 0
    code, _, err = cli("case", "conclude", "S1", "--date", "2026-11-30", "--by", "li.si", data=data)
    assert code == 2
    assert "AV recording is mandatory (Art. 8) and none is filed" in err
    reason = ("--override", "--reason", "记录仪故障，改用书面记录")
    code, _, err = cli("--user", "li.si", "case", "conclude", "S1", "--date", "2026-11-30",
                       "--by", "li.si", *reason, data=data)  # fmt: skip
    assert code == 2
    assert "role clerk may not override" in err
    code, out, _ = cli("--user", "zhang.san", "case", "conclude", "S1", "--date", "2026-11-30",
                       "--by", "li.si", *reason, data=data)  # fmt: skip
    assert code == 0
    assert "override by zhang.san recorded" in out
    code, out, _ = cli("compliance", "report", "--case", "S1", "--format", "json", data=data)
    (finding,) = json.loads(out)["findings"]
    assert finding["kind"] == "no-recording"
    assert "override by zhang.san" in finding["detail"]
    code, _, err = cli("case", "conclude", "S1", "--date", "2026-12-01", "--by", "x", data=data)
    assert code == 2
    assert "already concluded on 2026-11-30" in err
    # both the refusal and the override are in the custody log
    from receiver.store import connect

    conn = connect(data / "receiver.db")
    kinds = [json.loads(r[0])["kind"] for r in conn.execute("SELECT entry FROM custody_log")]
    assert "access-refused" in kinds
    assert "case-concluded" in kinds


def test_assignment_with_a_bad_window_is_not_created(tmp_path: Path) -> None:
    data = tmp_path / "rdata"
    pub = tmp_path / "d.pub"
    from evidence.keys import generate_signing_key, save_public_key

    save_public_key(pub, generate_signing_key().public_key())
    assert cli("device", "add", "--id", "D1", "--key", str(pub), data=data)[0] == 0
    assert cli("case", "create", "--number", "C1", "--type", "inspection", "--title", "t",
               "--major-inspection", data=data)[0] == 0  # fmt: skip
    args = ["assign", "--device", "D1", "--case", "C1", "--officer", "A", "--place", "P",
            "--reason", "R", "--target", "T", "--stage", "inspection"]  # fmt: skip
    code, _, err = cli(*args, "--window-start", "2026-12-03 10:00", "--window-end",
                       "2026-12-03 09:00", data=data)  # fmt: skip
    assert code == 2
    assert "--window-end is not after --window-start" in err
    code, out, _ = cli("cases", "--json", data=data)
    assert json.loads(out)[0]["av_level"] == "mandatory"  # a major inspection (Art. 18)
    from receiver.store import connect

    assert (
        connect(data / "receiver.db").execute("SELECT COUNT(*) FROM assignments").fetchone()[0] == 0
    )


@pytest.mark.parametrize(("formed", "late"), [("2026-11-04", False), ("2026-11-05", True)])
def test_case_file_formed_on_or_after_its_deadline(tmp_path: Path, formed: str, late: bool) -> None:
    data = tmp_path / "rdata"
    assert cli("case", "create", "--number", "F1", "--type", "licensing", "--title", "t",
               data=data)[0] == 0  # fmt: skip
    assert cli("case", "profile", "F1", "--unit", "科室一", data=data)[0] == 0
    code, out, _ = cli("case", "conclude", "F1", "--date", "2026-10-08", "--by", "clerk", data=data)
    assert code == 0
    assert "case file due 2026-11-04 24:00 CST (Art. 21)" in out
    assert cli("case", "file-formed", "F1", "--date", formed, "--by", "clerk", data=data)[0] == 0
    code, out, _ = cli("compliance", "report", "--unit", "科室一", "--format", "json", data=data)
    findings = json.loads(out)["findings"]
    if late:
        assert code == 1
        assert [f["kind"] for f in findings] == ["case-file-overdue"]
        assert f"case file formed {formed}" in findings[0]["detail"]
        assert findings[0]["unit"] == "科室一"
    else:
        assert code == 0
        assert findings == []
