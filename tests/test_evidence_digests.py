"""Hashing for verification: digests that share work, a bounded ordered pool, and a case file
whose media are read once."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from evidence.casefile import verify_case_file
from evidence.digests import digest_stream, ordered, sha256_stream
from evidence.keys import KeyRing
from evidence.media import StreamingDigest
from tests.support.seeded import CASE, seed


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 2048, 3 * 1024 + 5])
@pytest.mark.parametrize("piece", [1, 500, 1024, 5000])
def test_streaming_digest_around_the_first_chunk(size: int, piece: int) -> None:
    # the first chunk's hash is taken from the whole-file state: exact at every boundary
    data = os.urandom(size)
    d = StreamingDigest(1024)
    for i in range(0, size, piece):
        d.update(data[i : i + piece])
    got = d.finish()
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.size == size
    assert list(got.chunks) == [
        hashlib.sha256(data[i : i + 1024]).hexdigest() for i in range(0, size, 1024)
    ]


def test_whole_only_and_whole_with_chunks_agree() -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    assert sha256_stream(io.BytesIO(data)) == (hashlib.sha256(data).hexdigest(), len(data))
    full = digest_stream(io.BytesIO(data), 256 * 1024)
    assert (full.sha256, full.size) == sha256_stream(io.BytesIO(data))


def test_ordered_keeps_input_order_and_a_bounded_window() -> None:
    pulled = 0
    second_done = threading.Event()

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(20):
            pulled += 1
            yield i

    def work(i: int) -> int:
        if i == 0:  # the first item finishes only after the second: still yielded first
            assert second_done.wait(30)
        if i == 1:
            second_done.set()
        return i * i

    seen = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for item, future in ordered(pool, work, items(), window=3):
            assert pulled - item <= 3  # never more than the window submitted ahead
            seen.append((item, future.result()))
    assert seen == [(i, i * i) for i in range(20)]


def test_ordered_hands_back_exceptions_in_place() -> None:
    def work(i: int) -> int:
        if i == 2:
            raise OSError("unreadable")
        return i

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = [
            (i, type(f.exception()).__name__ if f.exception() else f.result())
            for i, f in ordered(pool, work, range(4), window=2)
        ]
    assert outcomes == [(0, 0), (1, 1), (2, "OSError"), (3, 3)]


def test_case_file_media_are_read_once_and_findings_keep_their_order(
    tmp_path: Path, mpegts_clips: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = seed(tmp_path, mpegts_clips, sessions=1)
    s.approve("export")
    s.ok("export", CASE, "--out", str(tmp_path / "export"), user="clara")
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "export", copy)
    media = sorted((copy / "devices" / s.spool.device / "media").iterdir())
    os.chmod(media[0], 0o644)
    with open(media[0], "r+b") as f:
        f.seek(100)
        f.write(b"\x55")
    names = {m.name for m in media}
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: object, *args: object, **kwargs: object) -> int:
        name = Path(str(path)).name
        if name in names:
            opened.append(name)
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    receiver = KeyRing.from_files([s.data / "receipt.pub"])
    report = verify_case_file(copy, receiver_keys=receiver)
    monkeypatch.undo()
    # an intact file once; the altered one a second time, for the chunks that say where
    assert sorted(opened) == sorted([*names, media[0].name])
    kinds = [p.kind for p in report.problems]
    assert "file-altered" in kinds
    assert "record-media-hash-mismatch" in kinds
    assert kinds.index("file-altered") < kinds.index("record-media-hash-mismatch")
    altered = next(p for p in report.problems if p.kind == "file-altered")
    assert media[0].name in altered.where
    assert hashlib.sha256(media[0].read_bytes()).hexdigest() in altered.detail
