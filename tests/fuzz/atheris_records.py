"""Coverage-guided fuzzing of the verifier's parsing with atheris (not run by pytest).

    pip install atheris
    .venv/bin/python tests/fuzz/atheris_records.py -max_total_time=600

Feeds arbitrary bytes to record, body, receipt and wire-message parsing; anything but the
format's own errors is a crash that atheris reports with the input that caused it.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from evidence import transfer
    from evidence.errors import RecordFormatError
    from evidence.receipt import Receipt, ReceiptError
    from evidence.records import Record


def one_input(data: bytes) -> None:
    try:
        record = Record.parse(data)
        record.hash()
        record.typed_body()
    except RecordFormatError:
        pass
    with contextlib.suppress(ReceiptError):
        Receipt.parse(data)
    for message in (transfer.Hello, transfer.Fin, transfer.Query, transfer.Need, transfer.Init):
        with contextlib.suppress(transfer.WireError):
            message.parse(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
