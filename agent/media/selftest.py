"""Camera/microphone/speaker self-test for technicians (Art. 11, Art. 24).

``python -m agent.media.selftest --backend pi --seconds 12 OUTDIR`` records a short clip with
the real pipeline, plays a tone through the speaker in the middle of it, and then reads the
segments back to check what an auditor would: MPEG-TS with H.264 (+ AAC), every file starting
on a keyframe, no frame lost or duplicated at the splits, and the tone audible in the recording
(speaker -> air -> microphone). It prints one line per check and exits 0 only if all passed.

Failure posture: every check is evaluated and reported, even after a failure; a pipeline that
cannot start at all is reported as a failed "start" check rather than a traceback.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.clock import Clock, SimulatedClock, SystemClock
from agent.media import BACKENDS, create_capture
from agent.media.audio import tone_s16le
from agent.media.base import CapturePipeline, MediaError
from agent.media.inspect import SegmentContents, SegmentReadError, read_segment
from agent.media.sinks import DirectorySink

log = logging.getLogger(__name__)

TONE_HZ = 1000.0
TONE_S = 0.6
TONE_RATE_HZ = 48000
AUDIBLE_MARGIN_DB = 12.0
"""The tone must stand this far above the quietest part of the recording."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class SelfTestReport:
    checks: list[Check] = field(default_factory=list)
    segments: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def lines(self) -> list[str]:
        return [f"{'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in self.checks]


def run_selftest(
    capture: CapturePipeline,
    directory: Path,
    *,
    record_s: float = 12.0,
    settle_s: float = 2.0,
    poll_s: float = 0.01,
) -> SelfTestReport:
    """Probe, record ``record_s`` with a tone in the middle, then check the files."""
    report = SelfTestReport()
    try:
        capture.start()
    except MediaError as exc:
        report.add("start", False, str(exc))
        return report
    try:
        health = capture.probe()
        report.add("camera", health.camera_ok, health.camera_detail)
        report.add("microphone", health.microphone_ok, health.microphone_detail)
        _wait_media(capture, capture.media_time_us + round(settle_s * 1e6), poll_s)
        sink = DirectorySink(directory)
        capture.start_recording(sink)
        press_us = capture.media_time_us
        _wait_media(capture, press_us + round(record_s * 1e6 / 2), poll_s)
        try:
            capture.play_audio(tone_s16le(TONE_HZ, TONE_S, TONE_RATE_HZ), TONE_RATE_HZ, 1)
        except MediaError as exc:
            # Keep recording: the video checks are still worth having.
            report.add("speaker", False, str(exc))
        _wait_media(capture, press_us + round(record_s * 1e6), poll_s)
        capture.stop_recording()
    except MediaError as exc:
        report.add("record", False, str(exc))
        return report
    finally:
        capture.stop()
    report.segments = sink.paths
    _check_segments(report, sink)
    return report


def _wait_media(capture: CapturePipeline, target_us: int, poll_s: float) -> None:
    if capture.stepped:
        capture.advance_to(target_us)  # a stepped capture gets there when told, exactly
        return
    deadline = time.monotonic() + 60.0 + target_us / 1e6
    while capture.media_time_us < target_us:
        if time.monotonic() > deadline:
            raise MediaError(f"capture stalled at media {capture.media_time_us} us")
        time.sleep(poll_s)


def _check_segments(report: SelfTestReport, sink: DirectorySink) -> None:
    stats = sink.stats
    report.add("segments", len(stats) > 0, f"{len(stats)} written to {sink.directory}")
    contents: list[SegmentContents] = []
    for path in sink.paths:
        try:
            contents.append(read_segment(path, decode_audio=True))
        except SegmentReadError as exc:
            report.add(f"read {path.name}", False, exc.detail)
    if not contents:
        return
    formats = {c.format_name for c in contents}
    codecs = {(c.video_codec, c.audio_codec) for c in contents}
    report.add("container", formats == {"mpegts"}, ", ".join(sorted(formats)))
    report.add(
        "codecs",
        codecs == {("h264", "aac")},
        "; ".join(f"{v}+{a}" for v, a in sorted(codecs, key=str)),
    )
    not_key = [c.path.name for c in contents if not c.starts_with_keyframe]
    report.add(
        "keyframes",
        not not_key,
        "every segment starts on a keyframe" if not not_key else f"not: {', '.join(not_key)}",
    )
    all_pts = [t for c in contents for t in c.video_pts_s]
    steps = [b - a for a, b in itertools.pairwise(all_pts)]
    if steps:
        nominal = sorted(steps)[len(steps) // 2]
        duplicated = sum(1 for s in steps if s <= 0)
        lost = sum(round(s / nominal) - 1 for s in steps if s > 1.5 * nominal)
        report.add(
            "continuity",
            duplicated == 0 and lost == 0,
            f"{len(all_pts)} frames, {lost} lost, {duplicated} duplicated "
            f"(frame step {nominal * 1000:.1f} ms)",
        )
    levels = [db for c in contents for _, db in c.audio_levels]
    if levels:
        loud, quiet = max(levels), min(levels)
        report.add(
            "speaker->microphone",
            loud - quiet >= AUDIBLE_MARGIN_DB,
            f"tone peak {loud:.1f} dBFS over room {quiet:.1f} dBFS",
        )
    else:
        report.add("speaker->microphone", False, "no audio in the recording")


def _clock_for(backend: str, realtime: bool) -> Clock:
    if backend == "simulated" and not realtime:
        return SimulatedClock()
    return SystemClock()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent.media.selftest", description=__doc__.splitlines()[0]
    )
    parser.add_argument("directory", type=Path, help="where to write the test segments")
    parser.add_argument("--backend", choices=BACKENDS, default="pi")
    parser.add_argument("--seconds", type=float, default=12.0, help="recording length")
    parser.add_argument("--segment-seconds", type=float, default=5.0)
    parser.add_argument("--fast", action="store_true", help="simulated backend: not realtime")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options: dict[str, object] = {"segment_duration_s": args.segment_seconds, "pre_event_s": 2.0}
    if args.backend == "simulated":
        options["realtime"] = not args.fast
    clock = _clock_for(args.backend, not args.fast)
    try:
        capture = create_capture(args.backend, clock, **options)
    except (MediaError, ValueError) as exc:
        print(f"FAIL  start: {exc}")
        return 1
    report = run_selftest(capture, args.directory, record_s=args.seconds)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
