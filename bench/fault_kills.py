"""Fault counts: SIGKILL the recording agent at random moments, many times; report what was lost.

Each round starts ``bodycam-agent simulate --realtime`` on one spool (it first recovers what the
previous round left), waits until it records, sleeps a random time (uniform in
``[--min-s, --max-s]``, seeded) and SIGKILLs it. After the last kill one more start recovers and
records a short clean session. Then, on the spool:

* **sealed segments lost**: segment records (and their media files) seen on disk right after any
  kill that are gone at the end (must be 0);
* **chain**: :func:`evidence.verify.verify_tree` must pass; one ``gap`` record of cause ``crash``
  per kill, and every killed session closed by crash recovery;
* **media lost per kill**: kill time minus the end of the last segment (recovered or sealed) of
  the killed session; its distribution (median, p90, max) in seconds.

Loopback only, bounded in time (``--kills`` rounds of at most ``--max-s`` + start-up each).

    python bench/fault_kills.py --kills 100 [--encrypted] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evidence import layout  # noqa: E402
from evidence.encryption import generate_encryption_key, save_encryption_public_key  # noqa: E402
from evidence.records import Record, RecordType, parse_utc  # noqa: E402
from evidence.verify import verify_tree  # noqa: E402

CONFIG = """
[device]
{encryption}
[hardware]
backend = "simulated"
[capture]
backend = "simulated"
width = 320
height = 240
fps = 15
pre_event_s = 1.0
segment_duration_s = {segment_s}
[speech]
enabled = false
"""
START_TIMEOUT_S = 120.0


@dataclass
class KillReport:
    kills: int = 0
    killed_at: list[datetime] = field(default_factory=list)
    sealed_seen: dict[str, str] = field(default_factory=dict)
    """segment record file name -> media file name, as seen on disk after some kill."""
    start_failures: list[str] = field(default_factory=list)


def _simulate(spool: Path, config: Path, seconds: int, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "simulate", "--spool", str(spool),
         "--seconds", str(seconds), "--config", str(config), "--realtime"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log.open("a"),
        text=True,
    )  # fmt: skip


def _wait_recording(proc: subprocess.Popen[str]) -> bool:
    """Read the agent's stdout until it says it records (True) or it ends (False)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return False
        if "recording:" in line:
            return True
    return False


def _sealed(spool: Path) -> dict[str, str]:
    out = {}
    for device in layout.iter_devices(spool):
        for path in layout.iter_record_files(spool, device):
            if layout.seq_from_name(path) is None:
                continue
            record = Record.load(path)
            if record.type == RecordType.SEGMENT:
                out[f"{device}/{path.name}"] = f"{device}/{record.body['file']}"
    return out


def run_kills(
    work: Path, kills: int, *, encrypted: bool, seed: int, min_s: float, max_s: float,
    segment_s: float = 2.0,
) -> KillReport:  # fmt: skip
    rng = random.Random(seed)
    spool, logs = work / "spool", work / "agent.log"
    encryption = ""
    if encrypted:
        pub = work / "receiver-encryption.pub"
        save_encryption_public_key(pub, generate_encryption_key().public_key())
        encryption = f'encryption_key_file = "{pub}"'
    config = work / "agent.toml"
    config.write_text(CONFIG.format(encryption=encryption, segment_s=segment_s), "utf-8")
    report = KillReport()
    for _ in range(kills):
        proc = _simulate(spool, config, 3600, logs)
        try:
            if not _wait_recording(proc):
                report.start_failures.append(f"round {report.kills}: never recorded")
                continue
            time.sleep(rng.uniform(min_s, max_s))  # the random moment of the kill
            report.killed_at.append(datetime.now(UTC))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            report.kills += 1
            report.sealed_seen.update(_sealed(spool))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    last = _simulate(spool, config, 1, logs)  # recovers the last kill, records a clean session
    _out, _ = last.communicate(timeout=300)
    if last.returncode != 0:
        report.start_failures.append(f"final run exited {last.returncode}")
    return report


def analyse(spool: Path, report: KillReport) -> dict[str, Any]:
    now_sealed = _sealed(spool)
    lost = [
        name
        for name, media in report.sealed_seen.items()
        if name not in now_sealed or not layout.media_path(spool, *media.split("/", 1)).exists()
    ]
    verdict = verify_tree(spool)
    records = [
        Record.load(p)
        for d in layout.iter_devices(spool)
        for p in layout.iter_record_files(spool, d)
        if layout.seq_from_name(p) is not None
    ]
    sessions: list[str] = []
    for r in records:
        if r.type == RecordType.SESSION_OPEN and r.session not in sessions:
            sessions.append(r.session)
    crash_gaps = [r for r in records if r.type == RecordType.GAP and r.body.get("cause") == "crash"]
    recovered_closes = {
        r.session
        for r in records
        if r.type == RecordType.SESSION_CLOSE and r.body.get("reason") == "crash-recovery"
    }
    lost_s = []
    for killed_at, session in zip(report.killed_at, sessions, strict=False):
        mine = [r for r in records if r.session == session]
        ends = [parse_utc(r.body["utc_end"]) for r in mine if r.type == RecordType.SEGMENT]
        opened = next(r.time.datetime for r in mine if r.type == RecordType.SESSION_OPEN)
        lost_s.append(max(0.0, (killed_at - max(ends, default=opened)).total_seconds()))
    killed_sessions = sessions[: report.kills]

    def q(p: float) -> float | None:
        if not lost_s:
            return None
        ordered = sorted(lost_s)
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

    return {
        "kills": report.kills,
        "start_failures": report.start_failures,
        "sealed_segments_seen": len(report.sealed_seen),
        "sealed_segments_lost": len(lost),
        "chain_verifies": verdict.ok,
        "violations": [str(v) for v in verdict.violations][:5],
        "crash_gaps": len(crash_gaps),
        "killed_sessions_closed_by_recovery": sum(s in recovered_closes for s in killed_sessions),
        "recovered_segments": sum(
            1 for r in records if r.type == RecordType.SEGMENT and r.body.get("recovered")
        ),
        "media_lost_s": {
            "median": round(statistics.median(lost_s), 3) if lost_s else None,
            "p90": q(0.9),
            "max": round(max(lost_s), 3) if lost_s else None,
        },
        "media_lost_s_each": [round(x, 3) for x in lost_s],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--encrypted", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min-s", type=float, default=0.2, help="earliest kill after recording starts")
    p.add_argument("--max-s", type=float, default=5.0, help="latest kill after recording starts")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault-kills-") as tmp:
        report = run_kills(
            Path(tmp), args.kills, encrypted=args.encrypted, seed=args.seed,
            min_s=args.min_s, max_s=args.max_s,
        )  # fmt: skip
        result = analyse(Path(tmp) / "spool", report)
    result |= {
        "encrypted": args.encrypted,
        "seed": args.seed,
        "wall_s": round(time.monotonic() - started),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        m = result["media_lost_s"]
        print(
            f"{result['kills']} kills ({'encrypted' if args.encrypted else 'plaintext'}, "
            f"{result['wall_s']} s): sealed segments lost {result['sealed_segments_lost']} of "
            f"{result['sealed_segments_seen']}, chain verifies {result['chain_verifies']}, "
            f"crash gaps {result['crash_gaps']}, recovered segments "
            f"{result['recovered_segments']}; media lost per kill: median {m['median']} s, "
            f"p90 {m['p90']} s, max {m['max']} s"
        )
    ok = (
        result["sealed_segments_lost"] == 0
        and result["chain_verifies"]
        and result["crash_gaps"] == result["kills"]
        and not result["start_failures"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
