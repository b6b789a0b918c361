"""A full disk, for real: a small private tmpfs (bench/smallfs.py) that the real spool, agent,
receiver and broker write to until ``ENOSPC``.

The focused tests run the real :class:`~agent.spool.RecordingSpool` in a child process inside
the namespace (the test process itself cannot see the mount); the short runs of
``bench/fault_disk.py`` fill the device's disk mid-recording and the receiver's mid-ingest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import smallfs
from fault_disk import defaults, device_ok, run
from fault_disk_receiver import receiver_ok

from agent.checks import Outcome, check_storage
from agent.config import ChecksConfig
from agent.hardware.storage import SimulatedStorage

ROOT = Path(__file__).resolve().parents[1]
HOW = smallfs.method()
needs_small_fs = pytest.mark.skipif(
    HOW is None, reason="no way to mount a private tmpfs here: " + "; ".join(smallfs.UNAVAILABLE)
)

# Runs inside the namespace: a 4 MiB tmpfs at WORK/disk holding a real spool.
PRELUDE = """
import json, sys
from pathlib import Path
sys.path.insert(0, {bench!r})
import smallfs
from agent.clock import SystemClock
from agent.errors import SealError
from agent.spool import RecordingSpool
from evidence.encryption import generate_encryption_key
from evidence.keys import generate_signing_key
from evidence.records import RecordType, format_utc
from evidence.testing import session_open_body
from evidence.verify import verify_tree

work = Path(sys.argv[1])
disk = work / "disk"
smallfs.mount_tmpfs(disk, 4 << 20)
out = {{}}
"""


def _inside(tmp_path: Path, body: str) -> dict[str, object]:
    script = PRELUDE.format(bench=str(ROOT / "bench")) + body + "\nprint(json.dumps(out))\n"
    assert HOW is not None
    done = smallfs.run_inside(
        HOW, [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@needs_small_fs
def test_the_reserve_lets_the_gap_and_close_be_written_on_a_full_card(tmp_path: Path) -> None:
    out = _inside(
        tmp_path,
        """
spool = RecordingSpool(disk / "spool", "DISKTEST-1", generate_signing_key(), SystemClock())
assert spool.keep_reserve()
spool.append(RecordType.SESSION_OPEN, "s1", session_open_body())
out["filled"] = smallfs.fill(disk / "filler")
now = format_utc(SystemClock().utc_now())
try:
    spool.append(RecordType.GAP, "s1", {"cause": "storage", "start_utc": now, "end_utc": now,
                 "spoken_reason": False, "detail": "storage ran out"})
    spool.append(RecordType.SESSION_CLOSE, "s1", {"reason": "stopped", "duration_us": 0,
                 "segments": 0, "frames": 0, "dropped_frames": 0, "gaps": 1})
    out["written"] = True
except Exception as exc:
    out["written"] = repr(exc)
out["reserve_left"] = spool.reserve_path.exists()
smallfs.release(disk / "filler")
out["reserve_again"] = spool.keep_reserve()
verdict = verify_tree(disk / "spool")
out["verifies"] = verdict.ok
out["violations"] = [str(v) for v in verdict.violations][:3]
""",
    )
    assert out["filled"]
    assert out["written"] is True, out
    assert out["reserve_left"] is False  # it was given up for the records
    assert out["reserve_again"] is True
    assert out["verifies"], out["violations"]


@needs_small_fs
def test_a_part_that_could_not_be_created_on_a_full_card_can_be_created_later(
    tmp_path: Path,
) -> None:
    # Encrypted: the header is written at once, so the part file exists before ENOSPC strikes.
    out = _inside(
        tmp_path,
        """
spool = RecordingSpool(disk / "spool", "DISKTEST-2", generate_signing_key(), SystemClock(),
                       recipient=generate_encryption_key().public_key())
smallfs.fill(disk / "filler")
try:
    spool.open_part("s1", 0)
    out["first"] = "opened"
except SealError as exc:
    out["first"] = str(exc)
smallfs.release(disk / "filler")
try:
    spool.open_part("s1", 0).close()
    out["second"] = "opened"
except SealError as exc:
    out["second"] = str(exc)
""",
    )
    assert "No space left" in str(out["first"])
    assert out["second"] == "opened", out


def test_the_storage_check_does_not_count_the_reserve(tmp_path: Path) -> None:
    cfg = ChecksConfig()
    per_min = cfg.estimated_bitrate_bits_per_s // 8 * 60
    storage = SimulatedStorage(tmp_path, int((cfg.min_recording_min + 5) * per_min))
    assert check_storage(storage, cfg).outcome != Outcome.FAIL
    # With the recorder's stop threshold held back, there is not enough recording time left.
    reserve = int(10 * per_min)
    result = check_storage(storage, cfg, reserve)
    assert result.outcome == Outcome.FAIL
    assert result.data["reserve_bytes"] == reserve


@pytest.mark.slow
@needs_small_fs
@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "encrypted"])
def test_device_disk_full_mid_recording(tmp_path: Path, encrypted: bool) -> None:
    result = run(tmp_path, defaults(side="device", fills=2, encrypted=encrypted, seed=3))
    assert result["sealed_segments_lost"] == 0
    assert result["chain_verifies_each_round"], result["violations"]
    assert result["fills_interrupting"] > 0
    assert result["unexplained_holes"] == 0  # each interruption explained by a signed gap
    assert result["resumed_after_fill"] == result["fills_interrupting"]
    assert result["parts_left_unsealed"] == 0  # the cut segment sealed as far as it got
    assert result["agent_bad_exits"] == 0
    assert result["tracebacks"] == 0
    assert device_ok(result), result


@pytest.mark.slow
@needs_small_fs
def test_receiver_disk_full_mid_ingest(tmp_path: Path) -> None:
    result = run(tmp_path, defaults(side="receiver", fills=2, seed=2))
    assert result["receipts_without_data"] == 0
    assert result["bad_objects"] == 0
    assert result["reverify_ok"]
    assert result["not_receipted"] == 0  # ingest resumed once space was freed
    assert result["other_device_receipts_kept"]
    assert result["tracebacks"] == 0
    assert receiver_ok(result), result


def test_smallfs_probe_reports_why_when_unavailable() -> None:
    # The skip reason above must say something when no method works.
    assert HOW is not None or smallfs.UNAVAILABLE


@needs_small_fs
def test_a_registry_sync_that_hit_a_full_disk_is_retried(tmp_path: Path) -> None:
    # Without the retry the device stays "unknown" after space is freed, until the dock's
    # registry file happens to change again.
    out = _inside(
        tmp_path,
        """
from provisioning import device
from provisioning.dock import Dock as ProvisioningDock
from receiver.registry import DeviceRegistry, DockRegistryFollower
from receiver.store import connect

pdock = ProvisioningDock.init(work / "dock")
pdock.enrol(device.create_request(work / "dev", "cam-1", work / "req"))
conn = connect(disk / "rx.db")
follower = DockRegistryFollower(DeviceRegistry(conn), pdock.paths.registry)
smallfs.fill(disk / "filler")
try:
    follower.refresh()
    out["first"] = "applied"
except Exception as exc:
    out["first"] = str(exc)
smallfs.release(disk / "filler")
again = follower.refresh()
out["second"] = again.added if again is not None else None
out["known"] = DeviceRegistry(conn).get("cam-1") is not None
""",
    )
    assert "full" in str(out["first"]), out
    assert out["second"] == ["cam-1"]
    assert out["known"]
