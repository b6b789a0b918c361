"""A plain directory :class:`SegmentSink` for self-tests, tools and tests.

The agent's spool has its own sink (sealing, hashing, encryption); this one only writes
``segment-<index>.ts.part`` files, fsyncs and renames them to ``.ts`` on close, and keeps the
stats. Failure posture: I/O errors propagate to the pipeline, which reports a storage fault.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import BinaryIO

from agent.media.base import SegmentStats

log = logging.getLogger(__name__)


class DirectorySink:
    """Writes segments into ``directory``; ``closed`` lists (path, stats) in order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.closed: list[tuple[Path, SegmentStats]] = []
        self.open_files: dict[int, BinaryIO] = {}
        self._lock = threading.Lock()

    def part_path(self, index: int) -> Path:
        return self.directory / f"segment-{index:05d}.ts.part"

    def final_path(self, index: int) -> Path:
        return self.directory / f"segment-{index:05d}.ts"

    def open_segment(self, index: int) -> BinaryIO:
        fileobj = open(self.part_path(index), "xb")  # noqa: SIM115 - closed in close_segment
        with self._lock:
            self.open_files[index] = fileobj
        return fileobj

    def close_segment(self, index: int, stats: SegmentStats) -> None:
        with self._lock:
            fileobj = self.open_files.pop(index)
        fileobj.close()
        final = self.final_path(index)
        os.replace(self.part_path(index), final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        with self._lock:
            self.closed.append((final, stats))
        log.info("segment %d: %s (%d frames)", index, final.name, stats.frames)

    @property
    def stats(self) -> list[SegmentStats]:
        with self._lock:
            return [stats for _, stats in self.closed]

    @property
    def paths(self) -> list[Path]:
        with self._lock:
            return [path for path, _ in self.closed]
