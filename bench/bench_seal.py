"""Benchmark: sealing segments as the device does it live, against the primitives it runs.

A segment is written into the spool the way the media pipeline writes it (one write per muxed
packet run, a flush + fsync once per second of media, close) and then sealed
(:meth:`agent.spool.RecordingSpool.seal`: digests, signed record, rename, directory fsyncs).
The baseline is the sum of the primitives on the same bytes in the same run:

* plaintext spool: ``openssl dgst -sha256`` over the media once per SHA-256 pass the code runs
  (two: the whole-file hash and the per-chunk hashes the record carries);
* encrypted spool: the same over the plaintext (two passes), ``openssl enc -chacha20`` of it
  into a file, and two ``openssl dgst -sha256`` passes over the ciphertext (``stored``).

Both wall time (fsyncs included: one per second of media, as the pipeline does, plus the
sealing's own) and CPU time (this process, all threads, against the children's) are reported.

Rounds alternate the contenders; the figures are medians over rounds. Goal (issue 14): sealing
<= 1.2x its primitives with encryption on.

    python bench/bench_seal.py [--segments 6] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.clock import SimulatedClock  # noqa: E402
from agent.media.base import SegmentStats  # noqa: E402
from agent.spool import EncryptedPart, RecordingSpool  # noqa: E402
from evidence.encryption import generate_encryption_key  # noqa: E402
from evidence.keys import generate_signing_key  # noqa: E402

DEVICE = "SIM-BENCH"
SEGMENT_S = 10
TS_PACKET = 188


def make_media(path: Path, seconds: int = SEGMENT_S) -> Path:
    """A real H.264/AAC MPEG-TS of about a body camera's bitrate (720p, ~4 Mbit/s)."""
    if not path.exists():
        subprocess.run(
            [
                "ffmpeg", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                "-b:v", "4M", "-g", "25", "-c:a", "aac", "-b:a", "64k",
                "-f", "mpegts", str(path),
            ],
            check=True,
        )  # fmt: skip
    return path


def packet_runs(data: bytes) -> list[bytes]:
    """The media split where a PES starts: the pieces a packet-flushing muxer writes."""
    starts = [
        off
        for off in range(0, len(data) - len(data) % TS_PACKET, TS_PACKET)
        if data[off + 1] & 0x40
    ]
    bounds = [*starts[1:], len(data)] if starts and starts[0] == 0 else [*starts, len(data)]
    out, prev = [], 0
    for end in bounds:
        if end > prev:
            out.append(data[prev:end])
            prev = end
    return out


def stats_for(index: int, frames: int) -> SegmentStats:
    t0 = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=index * SEGMENT_S)
    return SegmentStats(
        index, index * SEGMENT_S * 10**6, (index + 1) * SEGMENT_S * 10**6, t0,
        t0 + timedelta(seconds=SEGMENT_S), frames, 0, 0,
        {"codec": "h264"}, {"codec": "aac"},
    )  # fmt: skip


def seal_live(
    spool: RecordingSpool, runs: list[bytes], segments: int, tag: str
) -> tuple[float, float]:
    """Wall and CPU seconds to write ``segments`` segments live and seal them."""
    per_flush = max(1, len(runs) // SEGMENT_S)
    start, cpu0 = time.perf_counter(), time.process_time()
    for i in range(segments):
        fh = spool.open_part(tag, i)
        for n, piece in enumerate(runs, 1):
            fh.write(piece)
            if n % per_flush == 0:
                fh.flush()
                os.fsync(fh.fileno())
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        plaintext = encryption = stored = None
        if isinstance(fh, EncryptedPart):  # what SessionSink.close_segment hands over
            plaintext, encryption, stored = fh.plaintext, fh.encryption, fh.stored
        part = spool.part_path(tag, i)
        stats = stats_for(i, SEGMENT_S * 25)
        spool.seal(part, tag, i, stats, plaintext=plaintext, encryption=encryption, stored=stored)
    return time.perf_counter() - start, time.process_time() - cpu0


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def primitives(media: Path, segments: int, encrypted: bool, work: Path) -> tuple[float, float]:
    """Seconds for the primitives the sealing runs, on the same bytes (one process per pass over
    all segments, so process start-up does not weigh on the baseline)."""
    key, iv = "11" * 32, "00" * 16
    joined = work / "all.ts"
    if not joined.exists() or joined.stat().st_size != media.stat().st_size * segments:
        joined.write_bytes(media.read_bytes() * segments)
    start, cpu0 = time.perf_counter(), children_cpu_s()
    hash_passes = [joined, joined]
    if encrypted:
        out = work / "all.enc"
        subprocess.run(
            ["openssl", "enc", "-chacha20", "-K", key, "-iv", iv, "-in", str(joined),
             "-out", str(out)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        hash_passes += [out, out]
    for path in hash_passes:
        subprocess.run(["openssl", "dgst", "-sha256", str(path)], check=True, capture_output=True)
    return time.perf_counter() - start, children_cpu_s() - cpu0


def run(segments: int, rounds: int, work: Path) -> dict[str, Any]:
    media = make_media(work / "segment.ts")
    data = media.read_bytes()
    runs = packet_runs(data)
    recipient = generate_encryption_key().public_key()
    out: dict[str, Any] = {
        "segments": segments,
        "segment_bytes": len(data),
        "writes_per_segment": len(runs),
    }
    for encrypted in (False, True):
        name = "encrypted" if encrypted else "plaintext"
        seal: list[tuple[float, float]] = []
        base: list[tuple[float, float]] = []
        for r in range(rounds):
            root = work / f"spool-{name}-{r}"
            spool = RecordingSpool(
                root, DEVICE, generate_signing_key(), SimulatedClock(),
                recipient=recipient if encrypted else None,
            )  # fmt: skip
            seal.append(seal_live(spool, runs, segments, f"s{r}"))
            base.append(primitives(media, segments, encrypted, work))
            shutil.rmtree(root, ignore_errors=True)
        wall = statistics.median(s[0] for s in seal), statistics.median(b[0] for b in base)
        cpu = statistics.median(s[1] for s in seal), statistics.median(b[1] for b in base)
        out[name] = {
            "seal_ms_per_segment": round(wall[0] / segments * 1000, 2),
            "primitives_ms_per_segment": round(wall[1] / segments * 1000, 2),
            "ratio": round(wall[0] / wall[1], 2),
            "seal_cpu_ms_per_segment": round(cpu[0] / segments * 1000, 2),
            "primitives_cpu_ms_per_segment": round(cpu[1] / segments * 1000, 2),
            "cpu_ratio": round(cpu[0] / cpu[1], 2),
        }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--segments", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-seal-", dir=ROOT) as tmp:
        result = run(args.segments, args.rounds, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['segments']} segments of {result['segment_bytes'] / 1e6:.1f} MB "
        f"({result['writes_per_segment']} writes each), medians of {args.rounds} rounds"
    )
    for name in ("plaintext", "encrypted"):
        r = result[name]
        print(
            f"  {name:9}: seal {r['seal_ms_per_segment']} ms/segment vs primitives "
            f"{r['primitives_ms_per_segment']} ms -> {r['ratio']}x wall; CPU "
            f"{r['seal_cpu_ms_per_segment']} vs {r['primitives_cpu_ms_per_segment']} ms -> "
            f"{r['cpu_ratio']}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
