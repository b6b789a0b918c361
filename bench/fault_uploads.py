"""Fault counts during dock uploads: SIGKILL the uplink, the receiver or the broker at random
moments, many times; then let the upload finish and count what was lost or stored twice.

One dock (real Mosquitto with the provisioned mutual-TLS config, the real receiver), an enrolled
device with a spool of random segments (another one docks whenever an upload finished before
all kills were done, so every kill hits an upload in progress). Each round (``--kills``) kills
the chosen ``--target`` a random time (seeded, uniform in ``[--min-s, --max-s]``) into a running
upload:

* ``uplink``: ``python -m agent.uplink`` is SIGKILLed and started again at once;
* ``receiver``: the receiver process is SIGKILLed and restarted at once (the uplink runs on);
* ``broker``: Mosquitto is SIGKILLed and restarted (the uplink and receiver reconnect).

After the last kill one uplink runs until nothing is pending. Reported: **receipted lost**
(a receipt the device saved whose record the receiver does not hold), **stored twice** (rows
beyond one per record), **not receipted** at the end, the receiver's ``reverify`` verdict, and
the bytes sent beyond the media size (resends). Loopback only; bounded by ``--kills`` rounds of
at most ``--max-s`` each plus the final upload's ``--timeout-s``.

    python bench/fault_uploads.py --target uplink --kills 50 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_upload import build_spool  # noqa: E402

from tests.support.dock import Dock, running_dock  # noqa: E402

TARGETS = ("uplink", "receiver", "broker")


def _uplink(dock: Dock, device: str, spool: Path, timeout_s: float) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "agent.uplink", "--spool", str(spool), "--device", device,
        *dock.uplink_args(device), "--until-done", "--timeout-s", str(timeout_s),
        "--receipt-timeout-s", "3", "--json", "--quiet",
    ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def _receipted(spool: Path) -> set[str]:
    return {p.stem for p in (spool / "state" / "receipts").glob("*.json")}


def _stored(dock: Dock) -> tuple[set[str], int]:
    """(hashes of the records the receiver holds, rows beyond one per device and seq)."""
    conn = sqlite3.connect(dock.data_dir / "receiver.db", timeout=30)
    try:
        hashes = {r[0] for r in conn.execute("SELECT hash FROM records")}
        rows = int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        distinct = int(
            conn.execute(
                "SELECT COUNT(*) FROM (SELECT DISTINCT device, seq FROM records)"
            ).fetchone()[0]
        )
    finally:
        conn.close()
    return hashes, rows - distinct


def _reverify(dock: Dock) -> Any:
    return dock.cli_json("reverify")


class _Devices:
    """The devices of one run: a new one (own identity, key, chain, spool) joins whenever the
    upload finished before every kill was done, so each kill hits an upload in progress."""

    def __init__(self, dock: Dock, work: Path, args: argparse.Namespace) -> None:
        self.dock, self.work, self.args = dock, work, args
        self.spools: list[tuple[str, Path]] = []
        self.media = self.records = self.sent = 0

    def add(self) -> tuple[str, Path]:
        device = f"FAULT-{len(self.spools):02d}"
        spool = self.work / f"spool-{device}"
        args = self.args
        key, files = build_spool(spool, args.segments, args.segment_mib << 20, device=device)
        self.dock.enrol(device, key)
        self.media += sum(f.stat().st_size for f in files)
        self.records += args.segments + 2
        self.spools.append((device, spool))
        return device, spool

    def receipted(self) -> set[str]:
        return {h for _, spool in self.spools for h in _receipted(spool)}

    def finish(self, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        out, _ = proc.communicate(timeout=self.args.timeout_s + 60)
        result: dict[str, Any] = json.loads(out or b"{}")
        self.sent += int(result.get("bytes_sent", 0))
        return result


def run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with running_dock(work / "dock") as dock:
        devices = _Devices(dock, work, args)
        device, spool = devices.add()
        seen_receipted: set[str] = set()
        kills = 0
        uplink = _uplink(dock, device, spool, args.timeout_s)
        while kills < args.kills:
            if uplink.poll() is not None:  # finished: the next device docks
                devices.finish(uplink)
                device, spool = devices.add()
                uplink = _uplink(dock, device, spool, args.timeout_s)
            time.sleep(rng.uniform(args.min_s, args.max_s))
            if args.target == "uplink":
                os.kill(uplink.pid, signal.SIGKILL)
                uplink.wait(30)
            elif args.target == "receiver":
                dock.rx.kill()
                dock.rx.start()
            else:
                dock.broker.restart(hard=True)
            kills += 1
            seen_receipted |= devices.receipted()
            if args.target == "uplink":
                uplink = _uplink(dock, device, spool, args.timeout_s)
        devices.finish(uplink)
        pending = 0
        for device, spool in devices.spools:  # whatever is left, to the end
            pending += int(devices.finish(_uplink(dock, device, spool, args.timeout_s))["pending"])
        receipted = devices.receipted()
        stored, twice = _stored(dock)
        return {
            "target": args.target,
            "kills": kills,
            "devices": len(devices.spools),
            "records": devices.records,
            "media_bytes": devices.media,
            "receipted_lost": len((seen_receipted | receipted) - stored),
            "stored_twice": twice,
            "not_receipted": devices.records - len(receipted),
            "final_pending": pending,
            "reverify": _reverify(dock),
            "bytes_sent": devices.sent,
            "bytes_sent_note": "runs that were SIGKILLed do not report what they sent",
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", choices=TARGETS, default="uplink")
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--segments", type=int, default=100, help="segments per device")
    p.add_argument("--segment-mib", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min-s", type=float, default=0.3)
    p.add_argument("--max-s", type=float, default=2.0)
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault-uploads-") as tmp:
        result = run(Path(tmp), args)
    result["wall_s"] = round(time.monotonic() - started)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['kills']} kills of the {args.target} during uploads ({result['wall_s']} s): "
            f"receipted lost {result['receipted_lost']}, stored twice {result['stored_twice']}, "
            f"not receipted at the end {result['not_receipted']} of {result['records']}, "
            f"reverify ok {result['reverify'].get('ok')}"
        )
    bad = result["receipted_lost"] or result["stored_twice"] or result["not_receipted"]
    return 1 if bad or not result["reverify"].get("ok") else 0


if __name__ == "__main__":
    sys.exit(main())
