"""Playback remux: MPEG-TS segments (real H.264 + AAC) into one MP4 a browser plays, without
re-encoding; cached by the segments' hashes; an unreadable segment is named, nothing cached."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import pytest

from receiver.web.media import PlaybackError, session_mp4


def probe(path: Path) -> dict:
    done = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "format=format_name,duration:stream=codec_name",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_segments_become_one_playable_mp4_with_their_start_times(
    mpegts_clips: list[Path], tmp_path: Path
) -> None:
    hashes = [f"{i:064x}" for i in range(len(mpegts_clips))]
    out = session_mp4(mpegts_clips, hashes, tmp_path / "cache")
    info = probe(out.path)
    assert "mp4" in info["format"]["format_name"]
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    # each segment starts where the previous ended; the whole runs as long as the parts
    assert out.starts_s[0] == 0.0
    assert all(b > a for a, b in zip(out.starts_s, out.starts_s[1:], strict=False))
    assert float(info["format"]["duration"]) == pytest.approx(out.duration_s, abs=0.2)

    # packets are copied, not re-encoded: as many video packets as the inputs hold
    def video_packets(path: Path) -> int:
        with av.open(str(path)) as c:
            return sum(1 for p in c.demux(video=0) if p.size)

    assert video_packets(out.path) == sum(video_packets(p) for p in mpegts_clips)
    # the second request is served from the cache (same file, not rebuilt)
    mtime = out.path.stat().st_mtime_ns
    again = session_mp4(mpegts_clips, hashes, tmp_path / "cache")
    assert again.path == out.path
    assert again.path.stat().st_mtime_ns == mtime
    assert again.starts_s == out.starts_s


def test_an_unreadable_segment_is_named_and_nothing_is_cached(
    mpegts_clips: list[Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.ts"
    bad.write_bytes(b"\x00not a transport stream" * 100)
    with pytest.raises(PlaybackError) as err:
        session_mp4([mpegts_clips[0], bad], ["a" * 64, "b" * 64], tmp_path / "cache")
    assert "bad.ts" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []
