"""Benchmark: N devices docking at once against one real Mosquitto and the real receiver.

Each device is enrolled through the provisioning code (its own certificate, signing key and
chain) and gets a spool of random, non-deduplicable segments; each uploads in its own process
(``python -m agent.uplink``, as a docked device would), all started together. Reported per N:

* **lost**: records in the spools without a stored record at the receiver after every uplink
  finished; **stored twice**: receiver rows beyond one per record;
* **duplicate chunks**: chunk bytes sent beyond the media size (resends), in chunks;
* **resends / queries**: summed over the devices (the uplink's own counters);
* **receiver / broker peak RSS** (VmHWM) and broker "dropped" log lines (queue overflows);
* **aggregate throughput**: all media bytes / wall time from start to the last receipt, and its
  ratio to one device docking alone (the N=1 run of the same invocation).

    python bench/bench_docks.py [--devices 1,10,25,50] [--segments 4] [--segment-mib 2] [--json]

Goal (issue 14): 0 loss, 0 duplicates, receiver and broker memory flat in N, aggregate >= 0.8x
one device. The device side honours a window the receiver grants (``window_bytes`` in its clock
reply); until the receiver sends one, each device uses its configured window.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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

from bench_upload import TUNED, build_spool, peak_rss_bytes, uplink_tunables  # noqa: E402

from evidence.media import CHUNK_SIZE  # noqa: E402
from tests.support.dock import Dock, running_dock  # noqa: E402


def one_run(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    with running_dock(work / f"dock-{n}") as dock:
        spools = []
        for i in range(n):
            device = f"BENCH-{i:03d}"
            root = work / f"spool-{n}-{i}"
            key, files = build_spool(root, args.segments, args.segment_mib << 20, device=device)
            dock.enrol(device, key)
            spools.append((device, root, files))
        total = sum(f.stat().st_size for _, _, files in spools for f in files)
        expected_records = sum(args.segments + 2 for _ in spools)  # open + segments + close
        start = time.perf_counter()
        procs = [_uplink(dock, device, root, args) for device, root, _ in spools]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=args.timeout_s + 60)
            try:
                results.append(json.loads(out))
            except json.JSONDecodeError:
                results.append({"errors": [err.decode()[-300:]], "pending": -1})
        wall = time.perf_counter() - start
        assert dock.rx.proc is not None
        rx_rss = peak_rss_bytes(dock.rx.proc.pid)
        broker_pid = dock.broker.pid
        broker_rss = peak_rss_bytes(broker_pid) if broker_pid else 0
        stored, rows = _stored(dock)
        sent = sum(int(r.get("bytes_sent", 0)) for r in results)
        return {
            "devices": n,
            "media_bytes": total,
            "wall_s": round(wall, 2),
            "aggregate_mib_per_s": round(total / 2**20 / wall, 2),
            "lost": expected_records - stored,
            "stored_twice": rows - stored,
            "pending_at_devices": sum(int(r.get("pending", 0)) for r in results),
            "duplicate_chunks": round(max(0, sent - total) / CHUNK_SIZE, 1),
            "resends": sum(int(r.get("resends", 0)) for r in results),
            "queries": sum(int(r.get("queries", 0)) for r in results),
            "receiver_peak_rss_mib": round(rx_rss / 2**20, 1),
            "broker_peak_rss_mib": round(broker_rss / 2**20, 1),
            "broker_dropped_lines": dock.broker.log_tail(1 << 22).count("dropped"),
            "errors": sorted({e for r in results for e in r.get("errors", [])})[:5],
        }


def _uplink(dock: Dock, device: str, root: Path, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "agent.uplink", "--spool", str(root), "--device", device,
        *dock.uplink_args(device), "--until-done", "--timeout-s", str(args.timeout_s),
        "--json", "--quiet",
    ]  # fmt: skip
    if args.window_mib:
        cmd += ["--window-bytes", str(args.window_mib << 20)]
    env = {**os.environ, TUNED: uplink_tunables()}  # as the uplink's unit starts it
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _stored(dock: Dock) -> tuple[int, int]:
    """(distinct records stored, rows) at the receiver."""
    conn = sqlite3.connect(dock.data_dir / "receiver.db", timeout=30)
    try:
        rows = int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        distinct = int(
            conn.execute(
                "SELECT COUNT(*) FROM (SELECT DISTINCT device, seq FROM records)"
            ).fetchone()[0]
        )
    finally:
        conn.close()
    return distinct, rows


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="1,10,25,50", help="comma-separated device counts")
    p.add_argument("--segments", type=int, default=4, help="segments per device")
    p.add_argument("--segment-mib", type=int, default=2)
    p.add_argument("--window-mib", type=int, default=0, help="uplink window (0: its default)")
    p.add_argument("--timeout-s", type=float, default=900.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    counts = sorted({int(c) for c in args.devices.split(",")} | {1})
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-docks-") as tmp:
        for n in counts:
            if not args.json:
                print(f"[docks] {n} device(s) ...", file=sys.stderr, flush=True)
            runs.append(one_run(n, args, Path(tmp)))
    single = runs[0]["aggregate_mib_per_s"]
    for r in runs:
        r["aggregate_vs_single"] = round(r["aggregate_mib_per_s"] / single, 2) if single else None
    report = {
        "segments_per_device": args.segments,
        "segment_mib": args.segment_mib,
        "single_mib_per_s": single,
        "runs": runs,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cols = ("devices", "aggregate_mib_per_s", "aggregate_vs_single", "lost", "stored_twice",
            "duplicate_chunks", "resends", "receiver_peak_rss_mib", "broker_peak_rss_mib",
            "broker_dropped_lines")  # fmt: skip
    print("  ".join(cols))
    for r in runs:
        print("  ".join(str(r[c]).rjust(len(c)) for c in cols))
        for e in r["errors"]:
            print(f"    error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
