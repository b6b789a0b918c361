"""The receiver side of bench/fault_disk.py: the dock's disk fills up mid-ingest.

Runs inside the private mount namespace that ``fault_disk.py`` makes: the receiver's data
directory (object store, evidence tree, database) is a small tmpfs. A first device uploads
before any fill (its state must come through untouched); then each round a new device docks
and, a random time into its upload, the filesystem is filled to the last byte; after the hold
it is freed and the device docks again until everything is receipted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import smallfs
from bench_upload import build_spool
from fault_disk import ROOT

from tests.support.dock import Dock, running_dock

SEGMENTS = 6
SEGMENT_BYTES = 1 << 20
UPLOAD_TIMEOUT_S = 60.0


def _uplink(dock: Dock, device: str, spool: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "agent.uplink", "--spool", str(spool), "--device", device,
        *dock.uplink_args(device), "--until-done", "--timeout-s", str(UPLOAD_TIMEOUT_S),
        "--receipt-timeout-s", "3", "--json", "--quiet",
    ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def _finish(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=UPLOAD_TIMEOUT_S + 60)
    try:
        result: dict[str, Any] = json.loads(out or b"{}")
    except ValueError:
        result = {}
    result["exit"] = proc.returncode
    return result


def _receipted(spool: Path) -> set[str]:
    return {p.stem for p in (spool / "state" / "receipts").glob("*.json")}


def _stored_hashes(data_dir: Path) -> set[str]:
    conn = sqlite3.connect(data_dir / "receiver.db", timeout=30)
    try:
        return {r[0] for r in conn.execute("SELECT hash FROM records")}
    finally:
        conn.close()


def _bad_objects(data_dir: Path) -> list[str]:
    """Objects whose bytes are not what their name (their SHA-256) says: a partial object."""
    bad = []
    for path in (data_dir / "objects").glob("*/*"):
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        if h.hexdigest() != path.name:
            bad.append(path.name)
    return bad


def _wait_stored(data_dir: Path, device: str, count: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the receiver holds ``count`` records of ``device`` (or the upload ended)."""
    deadline = time.monotonic() + UPLOAD_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        conn = sqlite3.connect(data_dir / "receiver.db", timeout=30)
        try:
            n = conn.execute("SELECT COUNT(*) FROM records WHERE device = ?", (device,)).fetchone()
        finally:
            conn.close()
        if int(n[0]) >= count:
            return
        time.sleep(0.01)


def _upload_to_end(dock: Dock, device: str, spool: Path, tries: int = 5) -> int:
    """Dock again until nothing is pending; the uploads it took."""
    for n in range(1, tries + 1):
        if int(_finish(_uplink(dock, device, spool)).get("pending", 1)) == 0:
            return n
    return tries + 1


def run_receiver(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    data_dir = work / "dock" / "receiver-data"
    size = (args.size_mib + 6 * (args.fills + 1)) << 20
    smallfs.mount_tmpfs(data_dir, size)
    filler = data_dir / "filler"
    devices: list[tuple[str, Path]] = []
    rounds: list[dict[str, Any]] = []
    with running_dock(work / "dock") as dock:
        assert dock.data_dir == data_dir

        def add(name: str) -> tuple[str, Path]:
            spool = work / f"spool-{name}"
            key, _files = build_spool(spool, SEGMENTS, SEGMENT_BYTES, device=name)
            dock.enrol(name, key)
            devices.append((name, spool))
            return name, spool

        first = add("DISK-OTHER")
        _upload_to_end(dock, *first)
        other_before = _receipted(first[1])
        for i in range(args.fills):
            device, spool = add(f"DISK-{i:02d}")
            proc = _uplink(dock, device, spool)
            try:
                # a random moment into the ingest: after 0..SEGMENTS of its records are stored
                _wait_stored(data_dir, device, rng.randint(0, SEGMENTS), proc)
                filled = smallfs.fill(filler)
                seen = _receipted(spool)
                time.sleep(rng.uniform(args.hold_min_s, args.hold_max_s))
                smallfs.release(filler)
                freed = time.monotonic()
                during = _finish(proc)  # the same docking goes on after the space is back
            finally:
                smallfs.release(filler)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(30)
            uploads = (
                1 if int(during.get("pending", 1)) == 0 else 1 + _upload_to_end(dock, device, spool)
            )
            rounds.append(
                {"filled_bytes": filled, "receipted_at_fill": len(seen),
                 "uploads_to_end": uploads,
                 "all_receipted_s_after_free": round(time.monotonic() - freed, 1)}
            )  # fmt: skip
        stored = _stored_hashes(data_dir)
        receipted = {h for _, spool in devices for h in _receipted(spool)}
        reverify = dock.cli_json("reverify")
        log_text = dock.rx.log_text()
        pending = sum(int(_finish(_uplink(dock, d, s)).get("pending", 1)) for d, s in devices)
    full_lines = [
        line for line in log_text.splitlines() if "No space" in line or "disk full" in line.lower()
    ]
    return {
        "side": "receiver",
        "fills": len(rounds),
        "devices": len(devices),
        "records": len(devices) * (SEGMENTS + 2),
        "fills_mid_ingest": sum(r["receipted_at_fill"] < SEGMENTS + 2 for r in rounds),
        "receipts_without_data": len(receipted - stored),
        "bad_objects": len(_bad_objects(data_dir)),
        "reverify_ok": bool(reverify.get("ok")),
        "not_receipted": len(devices) * (SEGMENTS + 2) - len(receipted),
        "final_pending": pending,
        "other_device_receipts_kept": other_before <= _receipted(first[1]),
        "log_lines_disk_full": len(full_lines),
        "log_disk_full_sample": full_lines[:3],
        "tracebacks": log_text.count("Traceback"),
        "all_receipted_s_after_free": _spread([r["all_receipted_s_after_free"] for r in rounds]),
        "rounds": rounds,
    }


def _spread(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    if not ordered:
        return {"median": None, "max": None}
    return {"median": ordered[len(ordered) // 2], "max": ordered[-1]}


def receiver_ok(result: dict[str, Any]) -> bool:
    return bool(
        result["fills"] > 0
        and result["receipts_without_data"] == 0
        and result["bad_objects"] == 0
        and result["reverify_ok"]
        and result["not_receipted"] == 0
        and result["other_device_receipts_kept"]
        and result["tracebacks"] == 0
    )
