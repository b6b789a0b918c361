"""The writer side of a device's hash chain.

One chain per device across all its sessions: every record gets the next ``seq`` and the hash of
the record before it, is signed, and is written durably (temp → fsync → rename → fsync dir)
before :meth:`DeviceChain.append` returns. Failure posture: if the newest record on disk cannot be
read the chain refuses to extend (raising :class:`ChainError`) rather than start a fork, and an
existing record file is never replaced (a second writer on the same chain fails loudly instead of
overwriting; the agent also holds an exclusive lock on its spool).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence import layout
from evidence.errors import ChainError, RecordFormatError
from evidence.fsutil import atomic_write, exclusive_write
from evidence.keys import key_id, public_pem
from evidence.records import DEVICE_ID_RE, GENESIS_PREV, Record, RecordTime

log = logging.getLogger(__name__)


class DeviceChain:
    def __init__(self, root: Path, device_id: str, key: Ed25519PrivateKey) -> None:
        if not DEVICE_ID_RE.match(device_id):
            raise ValueError(f"device id {device_id!r} is not valid")
        self.root = Path(root)
        self.device_id = device_id
        self._key = key
        self.key_id = key_id(key.public_key())
        self._lock = threading.Lock()
        self.head_seq, self.head_hash = self._find_head()
        pub = layout.device_dir(self.root, device_id) / layout.DEVICE_PUBLIC_KEY
        if not pub.exists():
            atomic_write(pub, public_pem(key.public_key()))

    def _find_head(self) -> tuple[int, str]:
        newest: Path | None = None
        for path in layout.iter_record_files(self.root, self.device_id):
            if layout.seq_from_name(path) is not None:
                newest = path
        if newest is None:
            return -1, GENESIS_PREV
        try:
            record = Record.load(newest)
        except RecordFormatError as exc:
            raise ChainError(self.device_id, f"newest record is unreadable: {exc}") from exc
        return record.seq, record.hash()

    def append(self, type: str, session: str, body: dict[str, Any], time: RecordTime) -> Record:
        with self._lock:
            record = Record.create(
                type=type,
                device=self.device_id,
                session=session,
                seq=self.head_seq + 1,
                prev=self.head_hash,
                time=time,
                public_key=self._key.public_key(),
                body=body,
            ).sign(self._key)
            path = layout.record_path(self.root, self.device_id, record.seq)
            try:
                exclusive_write(path, record.canonical())
            except FileExistsError as exc:
                raise ChainError(
                    self.device_id,
                    f"record seq {record.seq} already exists: refusing to replace it",
                ) from exc
            self.head_seq, self.head_hash = record.seq, record.hash()
            self._announce_head(record)
            return record

    def _announce_head(self, record: Record) -> None:
        """Sign the new head into ``state/chain-head.json`` for the dock.

        Not fsynced: the record itself is durable; after a power cut the file may name an older
        head (or be unreadable, and the uplink then sends none) until the next append.
        """
        from evidence.casefile import ChainHead  # casefile reads exports; import it when used

        head = ChainHead.create(
            self._key, self.device_id, record.seq, self.head_hash, record.time.utc
        )
        path = self.root / layout.STATE / layout.CHAIN_HEAD_FILE
        temp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(head.canonical())
            os.replace(temp, path)
        except OSError as exc:
            # The record is appended and durable: failing here (a full card) would make the
            # caller think it was not, and write it again. The dock reads an older head.
            temp.unlink(missing_ok=True)
            log.warning("chain head file not updated (seq %d): %s", record.seq, exc)
