"""Benchmark: CPU and memory of the Pi backend's pipeline (agent/media/pi.py) per board plan, on
the fake Picamera2, against ffmpeg encoding the same picture size and rate in the same run.

For each plan (``hw``: the V4L2-shaped encoder of a Pi 4 / Zero 2 W; ``pi5``: libx264 through
LibavH264Encoder, as on a Pi 5) the pipeline records ``--seconds`` of 1280x720 video with AAC
audio (pre-event buffer, overlay in ``pre_callback``, segments, fsync) and reports process CPU
seconds per media second and peak RSS; the baseline is ``ffmpeg -re`` encoding a test pattern
of the same size and rate with libx264 ultrafast/zerolatency + AAC into MPEG-TS. Medians over
``--rounds``; the ratio says what our Python pipeline costs on top of the bare encoder.

Here the fake camera encodes in software for BOTH plans (there is no V4L2 block on this
machine), so "hw" is an upper bound for a Pi 4 / Zero 2 W, where the encoder's work moves to
the hardware block; "pi5" is what a Pi 5 pays, on a faster core than an A76.

    python bench/bench_pi_fake.py [--seconds 10] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT, FPS = 1280, 720, 25
SINE = "sine=frequency=440:sample_rate=48000"
MODELS = {"hw": "Raspberry Pi 4 Model B Rev 1.5", "pi5": "Raspberry Pi 5 Model B Rev 1.0"}


def _pipeline_child(plan: str, seconds: float, out: str) -> None:
    from agent.clock import SystemClock
    from agent.media.pi import PiCapture
    from agent.media.sinks import DirectorySink

    model = Path(out) / "model"
    model.write_bytes(MODELS[plan].encode() + b"\x00")
    cap = PiCapture(
        SystemClock(),
        camera="fake",
        width=WIDTH,
        height=HEIGHT,
        fps=FPS,
        pre_event_s=5.0,
        audio_device=SINE,
        audio_input_format="lavfi",
        device_id="BENCH-1",
        model_path=model,
    )
    cap.start()
    time.sleep(1.0)
    t0 = time.process_time()
    cap.start_recording(DirectorySink(Path(out) / "seg"))
    time.sleep(seconds)
    cap.stop_recording()
    cap.stop()
    cpu = time.process_time() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"cpu_s": cpu, "rss_mb": rss_mb}))


def _pipeline(plan: str, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, __file__, "--child", plan, "--seconds", str(seconds), "--out", out],
            capture_output=True,
            text=True,
            check=True,
        )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"cpu_per_media_s": result["cpu_s"] / seconds, "rss_mb": result["rss_mb"]}


def _ffmpeg(seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i",
             f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}", "-f", "lavfi", "-i", SINE,
             "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
             "-b:v", "4M", "-c:a", "aac", "-f", "mpegts", f"{out}/x.ts"],
            check=True,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_per_media_s": cpu / seconds, "rss_mb": after.ru_maxrss / 1024}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--child")
    p.add_argument("--out")
    args = p.parse_args()
    if args.child:
        _pipeline_child(args.child, args.seconds, args.out)
        return 0
    if shutil.which("ffmpeg") is None:
        print("bench_pi_fake: ffmpeg is needed for the baseline", file=sys.stderr)
        return 2
    runs: dict[str, list[dict[str, float]]] = {"ffmpeg": [], "hw": [], "pi5": []}
    for _ in range(args.rounds):
        runs["ffmpeg"].append(_ffmpeg(args.seconds))
        for plan in ("hw", "pi5"):
            runs[plan].append(_pipeline(plan, args.seconds))
    summary: dict[str, Any] = {}
    for name, rs in runs.items():
        summary[name] = {
            "cpu_per_media_s": statistics.median(r["cpu_per_media_s"] for r in rs),
            "peak_rss_mb": statistics.median(r["rss_mb"] for r in rs),
        }
    base = summary["ffmpeg"]["cpu_per_media_s"]
    for plan in ("hw", "pi5"):
        summary[plan]["cpu_ratio_vs_ffmpeg"] = summary[plan]["cpu_per_media_s"] / base
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{WIDTH}x{HEIGHT}@{FPS} + AAC, {args.seconds:g} s x {args.rounds} rounds (medians)")
        for name, s in summary.items():
            ratio = s.get("cpu_ratio_vs_ffmpeg")
            extra = f"  ({ratio:.2f}x ffmpeg)" if ratio else ""
            print(
                f"  {name:7s} CPU {s['cpu_per_media_s']:.2f} s per media s, "
                f"peak RSS {s['peak_rss_mb']:.0f} MB{extra}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
