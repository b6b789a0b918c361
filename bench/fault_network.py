"""Fault counts on the network: a TCP proxy between the device and the broker delays, throttles,
stalls, cuts and half-kills the connection during uploads; then the upload finishes and we count
what was lost or stored twice.

One dock (real Mosquitto with the provisioned mutual-TLS config, the real receiver), an enrolled
device with a spool of random segments whose uplink connects to the broker through
:class:`tests.support.netfault.FaultProxy` (TLS passes through it untouched). ``--cuts N``
faults in all, spread evenly over the kinds (``delay``, ``throttle``, ``stall``, ``cut``,
``drop``; see the proxy's docstring) in a seeded random order with seeded random sizes. Each
fault waits for the upload to make progress first (a seeded random number of bytes forwarded to
the broker since the previous one), so every fault hits a running upload and the next one comes
only once the upload recovered; another device docks whenever an upload finished before all
faults were done. No progress for ``--stuck-s`` ends the run: that is a transfer stuck forever,
reported as ``stuck``.

After the last fault each device's uplink runs until nothing is pending (through the proxy, no
more faults). Reported: faults injected by kind, connections (reconnects), **receipted lost** (a
receipt the device saved whose record the receiver does not hold), **stored twice** (rows beyond
one per record), **not receipted** at the end, the receiver's ``reverify`` verdict, bytes sent
beyond the media (resends), the time from each fault to the next receipt (median and max per
kind) and wall time. Loopback only; bounded by ``--timeout-s`` per fault and per final upload
(less when nothing moves for ``--stuck-s``).

    python bench/fault_network.py --cuts 50 [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_upload import build_spool  # noqa: E402

from agent.uplink import UploadResult, run_dock_upload  # noqa: E402
from tests.support.dock import Dock, running_dock  # noqa: E402
from tests.support.netfault import FAULT_KINDS, FaultKind, FaultProxy  # noqa: E402


class _Upload:
    """One device's uplink, run in a thread through the proxy until nothing is pending."""

    def __init__(self, dock: Dock, device: str, spool: Path, port: int, args: Any) -> None:
        cfg = dock.uplink_config(
            device,
            broker_port=port,
            keepalive_s=args.keepalive_s,
            receipt_timeout_s=3.0,
            probe_timeout_s=2.0,
        )
        self.results: list[UploadResult] = []
        self.stop = threading.Event()

        def run() -> None:
            self.results.append(
                run_dock_upload(
                    spool, cfg, self.stop, device=device, until_done=True, timeout_s=args.timeout_s
                )
            )

        self.thread = threading.Thread(target=run, name=f"uplink-{device}", daemon=True)
        self.thread.start()

    def finish(self) -> UploadResult:
        self.thread.join()
        return self.results[0]


class _Run:
    def __init__(self, dock: Dock, proxy: FaultProxy, work: Path, args: Any) -> None:
        self.dock, self.proxy, self.work, self.args = dock, proxy, work, args
        self.spools: list[tuple[str, Path]] = []
        self.results: list[UploadResult] = []
        self.media = self.records = 0
        self.measuring: tuple[str, float, int] | None = None
        #: per fault kind: seconds from the injection to the next receipt the device saved
        self.recovery: dict[str, list[float]] = {}
        self.upload = self._dock_next()

    def _dock_next(self) -> _Upload:
        device = f"NET-{len(self.spools):02d}"
        spool = self.work / f"spool-{device}"
        a = self.args
        key, files = build_spool(spool, a.segments, a.segment_mib << 20, device=device)
        self.dock.enrol(device, key)
        self.media += sum(f.stat().st_size for f in files)
        self.records += a.segments + 2
        self.spools.append((device, spool))
        return _Upload(self.dock, device, spool, self.proxy.port, a)

    def injected(self, kind: str) -> None:
        """A fault went in: time it until the devices hold one more receipt."""
        self.measuring = (kind, time.monotonic(), len(self.receipted()))

    def _measure(self, now: float) -> None:
        if self.measuring is not None:
            kind, since, count = self.measuring
            if len(self.receipted()) > count:
                self.recovery.setdefault(kind, []).append(now - since)
                self.measuring = None

    def progress(self, nbytes: int) -> bool:
        """Wait until ``nbytes`` more went to the broker and the last fault's recovery is timed
        (a new device docks if the upload finished); False if nothing moved for ``--stuck-s``
        or the wait took ``--timeout-s``."""
        stats = self.proxy.stats
        target = stats.bytes_up + nbytes
        started = last_moved = time.monotonic()
        last = stats.bytes_up
        while True:
            now = time.monotonic()
            self._measure(now)
            if stats.bytes_up >= target and self.measuring is None:
                return True
            if not self.upload.thread.is_alive():
                self.results.append(self.upload.finish())
                self.upload = self._dock_next()
                target = stats.bytes_up + nbytes
            if stats.bytes_up != last:
                last, last_moved = stats.bytes_up, now
            elif now - last_moved > self.args.stuck_s or now - started > self.args.timeout_s:
                return False
            time.sleep(0.02)

    def finish(self) -> int:
        """The running upload to its end, then each device's once more; returns pending."""
        self.results.append(self.upload.finish())
        pending = 0
        for device, spool in self.spools:
            result = _Upload(self.dock, device, spool, self.proxy.port, self.args).finish()
            self.results.append(result)
            pending += result.pending
        return pending

    def receipted(self) -> set[str]:
        return {p.stem for _, s in self.spools for p in (s / "state" / "receipts").glob("*.json")}


def _stored(dock: Dock) -> tuple[set[str], int]:
    """(hashes of the records the receiver holds, rows beyond one per device and seq)."""
    conn = sqlite3.connect(dock.data_dir / "receiver.db", timeout=30)
    try:
        hashes = {r[0] for r in conn.execute("SELECT hash FROM records")}
        rows = int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        distinct = int(
            conn.execute("SELECT COUNT(*) FROM (SELECT DISTINCT device, seq FROM records)")
            .fetchone()[0]
        )  # fmt: skip
    finally:
        conn.close()
    return hashes, rows - distinct


def _spread(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"median": round(statistics.median(v), 2), "max": round(v[-1], 2)}


def _schedule(args: Any, rng: random.Random) -> list[FaultKind]:
    kinds = [FAULT_KINDS[i % len(FAULT_KINDS)] for i in range(args.cuts)]
    rng.shuffle(kinds)
    return kinds


def _inject_all(r: _Run, args: Any, rng: random.Random) -> bool:
    """Every scheduled fault, each after some progress; False if the upload got stuck."""
    for kind in _schedule(args, rng):
        if not r.progress(rng.randint(args.min_gap_kib, args.max_gap_kib) << 10):
            return False
        fault = r.proxy.random_fault(kind, keepalive_s=args.keepalive_s)
        while not r.proxy.inject(fault):  # between connections: at the next one
            if not r.progress(1):
                return False
        r.injected(kind)
    return r.progress(0)  # the last fault's recovery


def run(work: Path, args: Any) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        dock = stack.enter_context(running_dock(work / "dock"))
        proxy = stack.enter_context(FaultProxy(dock.broker.host, dock.broker.port, seed=args.seed))
        r = _Run(dock, proxy, work, args)
        stuck = not _inject_all(r, args, rng)
        seen_receipted = r.receipted()
        pending = r.finish()
        receipted = r.receipted()
        stored, twice = _stored(dock)
        stats = proxy.stats.to_dict()
        reverify = dock.cli_json("reverify")
    sent = sum(x.bytes_sent for x in r.results)
    return {
        "faults": stats["faults"],
        "faults_missed": stats["missed"],
        "stuck": stuck,
        "connections": stats["connections"],
        "cuts_done": stats["cuts_done"],
        "half_dead_closed": stats["drops_closed"],
        "recovery_s": {k: _spread(v) for k, v in sorted(r.recovery.items())},
        "devices": len(r.spools),
        "records": r.records,
        "media_bytes": r.media,
        "receipted_lost": len((seen_receipted | receipted) - stored),
        "stored_twice": twice,
        "not_receipted": r.records - len(receipted),
        "final_pending": pending,
        "reverify": reverify,
        "bytes_sent": sent,
        "resent_ratio": round(sent / r.media - 1, 3) if r.media else 0.0,
        "upload_errors": sorted({e for x in r.results for e in x.errors}),
        "keepalive_s": args.keepalive_s,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--cuts", "--faults", dest="cuts", type=int, default=50,
                   help="faults in all, spread evenly over the kinds")  # fmt: skip
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--segments", type=int, default=40, help="segments per device")
    p.add_argument("--segment-mib", type=int, default=1)
    p.add_argument("--keepalive-s", type=int, default=5, help="the uplink's MQTT keepalive")
    p.add_argument("--min-gap-kib", type=int, default=64, help="progress before a fault, least")
    p.add_argument("--max-gap-kib", type=int, default=4096, help="progress before a fault, most")
    p.add_argument("--stuck-s", type=float, default=120.0, help="no progress this long: stuck")
    p.add_argument("--timeout-s", type=float, default=600.0, help="one upload, at most")
    p.add_argument("--json", action="store_true")
    return p


def main() -> int:
    args = parser().parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault-network-") as tmp:
        result = run(Path(tmp), args)
    result["wall_s"] = round(time.monotonic() - started)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        kinds = ", ".join(f"{k} {n}" for k, n in result["faults"].items())
        print(
            f"{sum(result['faults'].values())} network faults during uploads ({kinds}) over "
            f"{result['connections']} connections, {result['wall_s']} s: "
            f"receipted lost {result['receipted_lost']}, stored twice {result['stored_twice']}, "
            f"not receipted at the end {result['not_receipted']} of {result['records']}, "
            f"stuck {result['stuck']}, reverify ok {result['reverify'].get('ok')}"
        )
        for kind, spread in result["recovery_s"].items():
            print(f"  {kind}: next receipt after median {spread['median']}, max {spread['max']} s")
    bad = result["receipted_lost"] or result["stored_twice"] or result["not_receipted"]
    return 1 if bad or result["stuck"] or not result["reverify"].get("ok") else 0


if __name__ == "__main__":
    sys.exit(main())
