"""Reassembly of segment media: transfers, their temp files and chunk bookkeeping.

A transfer is keyed by (device, record hash): a device can only ever touch its own. Each chunk
is written at its offset into ``tmp/<hash>.part`` (memory does not grow with segment size) after
its hash matched the signed chunk hash; the whole-file hash runs over the in-order prefix as the
chunks arrive, so the usual in-order transfer is never re-read. Budgets are per device
(concurrent transfers, temporary bytes): a device beyond them is refused, and no device's
transfer is ever evicted to make room for another's.

Failure posture: chunk problems are remembered on the transfer (the first one wins) and turned
into a quarantine at ``fin``; an OS error writing a chunk propagates to the caller, which drops
the transfer and answers "later".
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evidence import transfer as wire
from evidence.media import FileDigest
from evidence.records import Record
from receiver.ingest.limits import Clock, Limits

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (device, record hash)


@dataclass
class Transfer:
    """A segment being received: its signed record and a temp file filled chunk by chunk."""

    record: Record
    record_hash: str
    digest: FileDigest
    file_name: str
    temp: Path
    fd: int
    last_activity: float
    received: set[int] = field(default_factory=set)
    problem: str | None = None  # first verification failure seen; quarantined at fin
    #: the fin came before all chunks (the broker may reorder across topics): the transfer
    #: completes with its last chunk
    fin_seen: bool = False
    running: Any = field(default_factory=hashlib.sha256)
    next_in_order: int = 0

    @property
    def device(self) -> str:
        return self.record.device

    @property
    def key(self) -> Key:
        return (self.record.device, self.record_hash)

    def missing(self, limit: int) -> list[int]:
        out: list[int] = []
        for i in range(len(self.digest.chunks)):
            if i not in self.received:
                out.append(i)
                if len(out) >= limit:
                    break
        return out

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def accept(self, chunk: wire.Chunk) -> None:
        """Check ``chunk`` against the signed digest and write it (OSError propagates)."""
        d = self.digest
        if self.problem is not None or chunk.index in self.received:
            return
        if chunk.index >= len(d.chunks):
            self.problem = f"chunk index {chunk.index} beyond the {len(d.chunks)} signed chunks"
            return
        expected_len = min(d.chunk_size, d.size - chunk.index * d.chunk_size)
        if chunk.offset != chunk.index * d.chunk_size or len(chunk.data) != expected_len:
            self.problem = f"chunk {chunk.index} has offset/length not matching the signed record"
            return
        if chunk.sha256 != d.chunks[chunk.index]:
            self.problem = f"chunk {chunk.index} does not match its signed hash (tampered)"
            return
        os.pwrite(self.fd, chunk.data, chunk.offset)
        self.received.add(chunk.index)
        if chunk.index == self.next_in_order:
            self.running.update(chunk.data)
            self.next_in_order += 1
            # chunks that arrived early and now continue the prefix are read back once
            while self.next_in_order in self.received and self.next_in_order < len(d.chunks):
                i = self.next_in_order
                size = min(d.chunk_size, d.size - i * d.chunk_size)
                self.running.update(os.pread(self.fd, size, i * d.chunk_size))
                self.next_in_order += 1

    def whole_file(self) -> tuple[str, int]:
        """SHA-256 and size of the assembled file (all chunks received)."""
        return self.running.hexdigest(), os.fstat(self.fd).st_size if self.fd >= 0 else -1


class Reassembly:
    """The open transfers, with per-device budgets."""

    def __init__(self, limits: Limits, clock: Clock) -> None:
        self.limits = limits
        self.clock = clock
        self.transfers: dict[Key, Transfer] = {}
        #: temp bytes held per device (open transfers and completed ones waiting to be stored)
        self.temp_bytes: dict[str, int] = {}

    def get(self, device: str, record_hash: str) -> Transfer | None:
        return self.transfers.get((device, record_hash))

    def refusal(self, device: str, size: int) -> str | None:
        """Why ``device`` cannot open one more transfer of ``size`` bytes now, or None."""
        lim = self.limits
        mine = [t for t in self.transfers.values() if t.device == device]
        if len(mine) >= lim.device_transfers:
            self.expire_idle(mine)
            mine = [t for t in self.transfers.values() if t.device == device]
            if len(mine) >= lim.device_transfers:
                return f"device has {len(mine)} transfers open (limit {lim.device_transfers})"
        if self.temp_bytes.get(device, 0) + size > lim.device_temp_bytes:
            return (
                f"device holds {self.temp_bytes.get(device, 0)} temporary bytes"
                f" (limit {lim.device_temp_bytes})"
            )
        if len(self.transfers) >= lim.max_transfers:
            return f"receiver has {len(self.transfers)} transfers open (limit {lim.max_transfers})"
        return None

    def open(
        self, record: Record, record_hash: str, digest: FileDigest, name: str, temp: Path
    ) -> Transfer:
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        tr = Transfer(record, record_hash, digest, name, temp, fd, self.clock())
        self.transfers[tr.key] = tr
        self.hold(record.device, digest.size)
        return tr

    def hold(self, device: str, size: int) -> None:
        self.temp_bytes[device] = self.temp_bytes.get(device, 0) + size

    def release(self, device: str, size: int) -> None:
        left = self.temp_bytes.get(device, 0) - size
        if left > 0:
            self.temp_bytes[device] = left
        else:
            self.temp_bytes.pop(device, None)

    def detach(self, tr: Transfer) -> None:
        """Forget ``tr`` (its temp file stays; its bytes stay held until :meth:`release`)."""
        tr.close()
        self.transfers.pop(tr.key, None)

    def drop(self, tr: Transfer) -> None:
        """Forget ``tr`` and delete its temp file."""
        self.detach(tr)
        self.release(tr.device, tr.digest.size)
        with contextlib.suppress(FileNotFoundError):
            tr.temp.unlink()

    def expire_idle(self, candidates: list[Transfer] | None = None) -> int:
        limit = self.clock() - self.limits.transfer_timeout_s
        pool = list(self.transfers.values()) if candidates is None else candidates
        stale = [t for t in pool if t.last_activity < limit]
        for tr in stale:
            log.info("transfer %s of %s idle too long, dropped", tr.record_hash[:16], tr.device)
            self.drop(tr)
        return len(stale)

    def close(self) -> None:
        for tr in list(self.transfers.values()):
            tr.close()
