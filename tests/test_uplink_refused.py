"""A publish the broker refuses (MQTT 5 'not authorized' in the PUBACK) is an error, not success."""

from __future__ import annotations

from pathlib import Path

from tests.support.broker import BrokerSettings
from tests.support.dock import running_dock
from tests.support.spool import build_spool

ACL = """\
topic readwrite bodycam/v1/receiver/status
topic read bodycam/v1/+/up/#
topic readwrite bodycam/v1/+/status
topic readwrite bodycam/v1/+/down/#
topic write bodycam/v1/BC-0001/up/#
"""


def test_refused_publishes_are_errors_and_nothing_is_freed(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    with running_dock(tmp_path / "dock", BrokerSettings(acl_file=acl)) as dock:
        allowed = build_spool(tmp_path / "ok", mpegts_clips[:1], device="BC-0001")
        denied = build_spool(tmp_path / "denied", mpegts_clips[:1], device="BC-0666")
        dock.register(allowed)
        dock.register(denied)

        result = dock.upload(denied, timeout_s=3)

        assert result.refused_publishes >= 1
        assert any("not authorized" in e.lower() for e in result.errors), result.errors
        assert result.receipted == 0 and result.pending == len(denied.records)
        assert all(denied.media_path(s).exists() for s in denied.segments())
        assert dock.stored_records() == 0
        # the same broker and receiver serve an authorised device normally
        ok = dock.upload(allowed)
        assert ok.pending == 0 and ok.refused_publishes == 0
