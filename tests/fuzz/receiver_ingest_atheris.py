"""Coverage-guided fuzzing of the receiver's Ingest.handle with atheris (optional dependency).

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/receiver_ingest_atheris.py -max_total_time=600

Any exception escaping ``handle`` or a logged traceback is a crash. Failure posture: a script,
run by hand or a nightly job; the bounded CI fuzzing is tests/test_receiver_fuzz.py.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from evidence import transfer as wire
    from evidence.keys import generate_signing_key
    from receiver.identity import load_receipt_key
    from receiver.ingest import Ingest
    from receiver.store import EvidenceStore, connect

DEV = "BC-F"
KINDS = [*sorted(wire.UP_KINDS), "status", "x"]


class _Traceback(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            raise RuntimeError(f"traceback logged: {record.getMessage()}")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="rx-fuzz-"))
    store = EvidenceStore(tmp / "rdata")
    ingest = Ingest(store, connect(store.db_path), load_receipt_key(tmp / "r.key"))
    ingest.registry.add_key(DEV, generate_signing_key().public_key())
    logging.getLogger("receiver").addHandler(_Traceback())
    logging.getLogger("receiver").propagate = False

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        kind = KINDS[fdp.ConsumeIntInRange(0, len(KINDS) - 1)]
        device = DEV if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(12)
        topic = f"{wire.PREFIX}/{device}/up/{kind}"
        for out in ingest.handle(topic, fdp.ConsumeBytes(fdp.remaining_bytes())):
            assert out.topic.startswith(f"{wire.PREFIX}/{device}/down/")

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
