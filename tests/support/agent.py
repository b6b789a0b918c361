"""Running ``bodycam-agent simulate`` as a separate process, for crash tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from evidence import layout
from evidence.errors import EvidenceError
from evidence.records import Record, RecordType


def start_simulate(spool: Path, config: Path, seconds: int, log: Path) -> subprocess.Popen[str]:
    """A real-time simulated session in its own process (stdout piped, stderr to ``log``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "simulate", "--spool", str(spool),
         "--seconds", str(seconds), "--config", str(config), "--realtime"],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )  # fmt: skip


def written_records(spool: Path) -> list[Record]:
    """The records a running agent has committed so far (its temporary files skipped)."""
    out = []
    for device in layout.iter_devices(spool):
        for path in layout.iter_record_files(spool, device):
            if layout.seq_from_name(path) is None:
                continue  # a record being written (temp file beside it)
            try:
                out.append(Record.load(path))
            except (OSError, EvidenceError):
                continue  # committed after we listed it, or not yet complete
    return out


def _bytes_per_media_s(spool: Path) -> float | None:
    """Bytes per second of media in the first sealed segment (None before one is sealed)."""
    for record in written_records(spool):
        if record.type == RecordType.SEGMENT:
            body = record.body
            seconds = (body["media_end_us"] - body["media_start_us"]) / 1e6
            return float(body["media"]["size"]) / seconds
    return None


def largest_unsealed_part(spool: Path) -> int:
    """Size of the largest part file whose segment has no record yet (a sealed segment's part
    stays until its rename, which a kill can interrupt)."""
    sealed = {
        f"{r.body['file']}.part" for r in written_records(spool) if r.type == RecordType.SEGMENT
    }
    sizes = []
    for path in (spool / "state" / "parts").glob("*.part"):
        if path.name in sealed:
            continue
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:
            continue  # sealed meanwhile
    return max(sizes, default=0)


def kill_mid_segment(spool: Path, config: Path, logs: Path, *, into_s: float = 2.5) -> datetime:
    """Start recording; once the first segment is sealed, SIGKILL the agent as soon as the next
    segment's part file holds about ``into_s`` of media (judged by the first segment's bytes per
    second). Returns the kill time (UTC). It waits for what is on the card, not for a time."""
    proc = start_simulate(spool, config, 60, logs / "first.log")
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while "recording:" not in line:
            assert time.monotonic() < deadline, "never started recording"
            assert proc.poll() is None, "the agent exited before recording"
            line = proc.stdout.readline()
        rate = None
        while rate is None:
            assert time.monotonic() < deadline, "no segment sealed"
            assert proc.poll() is None, "no segment sealed"
            time.sleep(0.01)
            rate = _bytes_per_media_s(spool)
        while largest_unsealed_part(spool) < into_s * rate:
            assert time.monotonic() < deadline, "the part never grew"
            assert proc.poll() is None, "the part never grew"
            time.sleep(0.01)
        killed_at = datetime.now(UTC)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return killed_at


def restart(spool: Path, config: Path, logs: Path) -> str:
    """Start the agent again on the same spool (it recovers first); its stdout."""
    second = start_simulate(spool, config, 1, logs / "second.log")
    try:
        out, _ = second.communicate(timeout=120)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    assert second.returncode == 0, (logs / "second.log").read_text()[-3000:]
    return out
