"""Benchmark: the device agent over a long simulated session, and sealing vs ``sha256sum``.

Measures, in one run:

* **CPU per minute of recording**: process CPU seconds (user + system, all threads) per minute
  of media for a whole simulated session (fast mode: the simulated camera encodes H.264/AAC
  in software, which a Pi does in its hardware encoder, so this is an upper bound), and the
  agent's own share: CPU spent sealing (fsync, hash, sign, rename) per minute of media;
* **resident memory** (VmRSS) sampled every minute of media: it must stay flat;
* **sealing vs baseline**: the produced segments sealed again into a fresh spool
  (``RecordingSpool.seal``: fsync + SHA-256 whole and per chunk + Ed25519-signed record +
  rename + dir fsync) against ``sha256sum`` of the same files, same run, warm page cache for both.

    python bench/bench_agent.py [--minutes 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.clock import SimulatedClock  # noqa: E402
from agent.config import simulated_config  # noqa: E402
from agent.recorder import State  # noqa: E402
from agent.runtime import build_runtime  # noqa: E402
from agent.simulation import Simulation  # noqa: E402
from agent.spool import RecordingSpool, ensure_dev_key  # noqa: E402
from evidence import layout  # noqa: E402
from evidence.keys import generate_signing_key  # noqa: E402
from evidence.records import Record, RecordType  # noqa: E402

DEVICE = "SIM-BENCH"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class TimedSpool(RecordingSpool):
    """A spool that adds up the CPU time of its seals (instrumentation for this benchmark)."""

    seal_cpu_s = 0.0

    def seal(self, *args: Any, **kwargs: Any) -> Record:
        start = time.thread_time()
        try:
            return super().seal(*args, **kwargs)
        finally:
            TimedSpool.seal_cpu_s += time.thread_time() - start


def long_session(base: Path, minutes: float) -> dict[str, Any]:
    cfg = simulated_config(base / "spool")
    cfg.speech.enabled = False
    key, _ = ensure_dev_key(cfg.key_path)
    rt = build_runtime(
        cfg,
        clock=SimulatedClock(),
        key=key,
        device_id=DEVICE,
        with_controls=False,
        spool_cls=TimedSpool,
    )
    rec, cap = rt.recorder, rt.capture
    sim = Simulation(rt)  # stepped: the recorder reacts after every frame, in this thread
    sim.start()
    try:
        sim.advance_to(round(cfg.capture.pre_event_s * 1e6))
        cpu0, wall0, media0 = cpu_s(), time.monotonic(), cap.media_time_us
        rec.press_record()
        sim.settle()
        assert rec.state == State.RECORDING
        samples: list[tuple[float, int]] = []
        while cap.media_time_us < media0 + minutes * 60e6:
            samples.append((round((cap.media_time_us - media0) / 60e6, 2), rss_kib()))
            sim.advance_to(min(cap.media_time_us + 60_000_000, round(media0 + minutes * 60e6)))
        rec.hold_record()
        sim.settle()
        assert rec.state == State.IDLE
        cpu, wall = cpu_s() - cpu0, time.monotonic() - wall0
        media_min = (cap.media_time_us - media0) / 60e6
        samples.append((round(media_min, 2), rss_kib()))
    finally:
        sim.shutdown()
    steady = [kib for m, kib in samples if m >= 2] or [s[1] for s in samples]
    return {
        "media_minutes": round(media_min, 2),
        "wall_s": round(wall, 1),
        "cpu_s_per_media_min_total": round(cpu / media_min, 2),
        "cpu_s_per_media_min_sealing": round(TimedSpool.seal_cpu_s / media_min, 4),
        "rss_kib_samples": samples,
        "rss_kib_min_max_after_2_min": [min(steady), max(steady)],
        "rss_kib_change_2_min_to_end": steady[-1] - steady[0],
        "spool": str(cfg.spool_path),
    }


def sealing_vs_sha256sum(spool: Path) -> dict[str, Any]:
    records = [Record.load(p) for p in layout.iter_record_files(spool, DEVICE)]
    segments = [r for r in records if r.type == RecordType.SEGMENT]
    files = [layout.media_path(spool, DEVICE, r.body["file"]) for r in segments]
    total = sum(f.stat().st_size for f in files)
    with tempfile.TemporaryDirectory(prefix="bench-seal-") as tmp:
        target = RecordingSpool(Path(tmp), DEVICE, generate_signing_key(), SimulatedClock())
        from agent.media.base import SegmentStats
        from evidence.records import parse_utc

        parts = []
        for i, (f, r) in enumerate(zip(files, segments, strict=True)):
            part = target.part_path("bench", i)
            shutil.copyfile(f, part)
            parts.append((part, r))
        for f in files:  # warm the cache for both contenders
            f.read_bytes()
        start = time.perf_counter()
        for i, (part, r) in enumerate(parts):
            b = r.body
            stats = SegmentStats(
                i,
                b["media_start_us"],
                b["media_end_us"],
                parse_utc(b["utc_start"]),
                parse_utc(b["utc_end"]),
                b["frames"],
                b["dropped_frames"],
                b["pre_event_us"],
                b["video"],
                b["audio"],
            )
            target.seal(part, "bench", i, stats)
        seal_s = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
    sha_s = time.perf_counter() - start
    return {
        "segments": len(files),
        "bytes": total,
        "seal_s": round(seal_s, 4),
        "sha256sum_s": round(sha_s, 4),
        "seal_ms_per_segment": round(seal_s / len(files) * 1000, 2),
        "seal_vs_sha256sum": round(seal_s / sha_s, 2) if sha_s else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="media minutes after the press")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    try:
        session = long_session(base, args.minutes)
        sealing = sealing_vs_sha256sum(Path(session["spool"]))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = {"session": session, "sealing": sealing, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    s = session
    print(f"long session: {s['media_minutes']} media min in {s['wall_s']} s wall")
    print(
        f"  CPU per media minute: {s['cpu_s_per_media_min_total']} s total (simulated camera"
        f" encoding included), {s['cpu_s_per_media_min_sealing']} s sealing"
    )
    print(f"  RSS (media min, KiB): {s['rss_kib_samples']}")
    lo, hi = s["rss_kib_min_max_after_2_min"]
    print(
        f"  RSS after minute 2: {lo}..{hi} KiB, end minus minute 2: "
        f"{s['rss_kib_change_2_min_to_end']} KiB"
    )
    z = sealing
    print(
        f"sealing {z['segments']} segments ({z['bytes'] / 1e6:.1f} MB): {z['seal_s']} s "
        f"({z['seal_ms_per_segment']} ms/segment) vs sha256sum {z['sha256sum_s']} s "
        f"-> {z['seal_vs_sha256sum']}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
