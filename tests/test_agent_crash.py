"""SIGKILL mid-segment, restart: the chain verifies, the interrupted part is sealed as
recovered, a crash gap is recorded, and at most about one second of media is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from evidence import layout
from evidence.records import Record, RecordType, parse_utc
from evidence.verify import verify_tree
from tests.support.agent import kill_mid_segment, restart

CONFIG = """
[hardware]
backend = "simulated"
[capture]
backend = "simulated"
width = 640
height = 360
fps = 15
pre_event_s = 2.0
segment_duration_s = 4.0
[speech]
enabled = false
"""


def _records(spool: Path) -> list[Record]:
    [device] = list(layout.iter_devices(spool))
    return [Record.load(p) for p in layout.iter_record_files(spool, device)]


@pytest.mark.slow
def test_sigkill_mid_segment_then_restart_recovers(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG, encoding="utf-8")
    # segment 0 = 2 s pre-event + 4 s; kill 2.5 s into segment 1
    killed_at = kill_mid_segment(spool, config, tmp_path)
    parts = list((spool / "state" / "parts").glob("*.part"))
    assert len(parts) == 1, parts  # the interrupted segment is on disk, unsealed

    out = restart(spool, config, tmp_path)
    assert "crash recovery" in out
    assert "1 segment(s) sealed as recovered" in out

    report = verify_tree(spool)
    assert report.ok, [str(v) for v in report.violations]
    assert not list((spool / "state" / "parts").glob("*.part"))

    records = _records(spool)
    first_session = records[0].session
    mine = [r for r in records if r.session == first_session]
    [recovered] = [r for r in mine if r.type == RecordType.SEGMENT and r.body["recovered"]]
    [gap] = [r for r in mine if r.type == RecordType.GAP]
    close = mine[-1]
    assert gap.body["cause"] == "crash"
    assert close.type == RecordType.SESSION_CLOSE
    assert close.body["reason"] == "crash-recovery"
    assert gap.seq > recovered.seq
    assert close.seq > gap.seq
    # the gap describes the lost interval: from the end of the recovered media to the restart
    gap_start, gap_end = parse_utc(gap.body["start_utc"]), parse_utc(gap.body["end_utc"])
    assert gap_start == parse_utc(recovered.body["utc_end"])
    assert gap_end > gap_start
    assert gap_end >= killed_at
    # the session-close counts are what the session's records show
    segments = [r for r in mine if r.type == RecordType.SEGMENT]
    assert close.body["segments"] == len(segments)
    assert close.body["gaps"] == 1
    assert close.body["frames"] == sum(r.body["frames"] for r in segments)
    assert recovered.body["index"] == 1
    assert recovered.body["frames"] > 20
    assert recovered.body["media_start_us"] == mine[1].body["media_end_us"]
    assert recovered.body["media"]["size"] % 188 == 0
    lost_s = (killed_at - parse_utc(recovered.body["utc_end"])).total_seconds()
    print(f"media lost at SIGKILL: {lost_s:.2f} s")
    assert lost_s <= 1.5, f"{lost_s:.2f} s of media lost"
    # the new session after recovery is complete and in the same chain
    assert records[-1].type == RecordType.SESSION_CLOSE
    assert records[-1].session != first_session
