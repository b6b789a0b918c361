"""Fuzzing the verifier's record parsing with hypothesis: whatever the bytes, parsing raises only
the format's own errors (never a crash), and ``verify_tree`` on a tree holding them reports
violations instead of raising.

Bounded for CI (``BODYCAM_FUZZ_EXAMPLES``, default 150 per property, 2 s deadline). A longer run::

    BODYCAM_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/test_evidence_fuzz.py

and with atheris (coverage-guided, ``pip install atheris``)::

    .venv/bin/python tests/fuzz/atheris_records.py -max_total_time=600
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evidence import layout, transfer
from evidence.canonical import canonical_bytes
from evidence.errors import RecordFormatError
from evidence.keys import generate_signing_key
from evidence.receipt import Receipt, ReceiptError
from evidence.records import Record
from evidence.testing import build_chain
from evidence.verify import verify_tree

EXAMPLES = int(os.environ.get("BODYCAM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DEVICE = "BWC-FUZZ"

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.text(max_size=30),
    st.sampled_from(["2026-13-45T09:00:00.000000Z", "2026-02-29T00:00:00.000000Z", "\n", ""]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """A real tree and the canonical bytes of its records (the seeds that get mutated)."""
    root = tmp_path_factory.mktemp("fuzz") / "tree"
    media = root.parent / "m.ts"
    media.write_bytes(os.urandom(3000))
    build_chain(root, DEVICE, generate_signing_key(), [media, media], sessions=1)
    files = list(layout.iter_record_files(root, DEVICE))
    return root, [p.read_bytes() for p in files]


def _parse_only_format_errors(data: bytes) -> None:
    try:
        record = Record.parse(data)
    except RecordFormatError:
        return
    with contextlib.suppress(RecordFormatError):
        record.typed_body()
    record.hash()


@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_parse_or_raise_a_format_error(data: bytes) -> None:
    _parse_only_format_errors(data)


@FUZZ
@given(index=st.integers(0, 20), cut=st.integers(0, 4000), junk=st.binary(max_size=40))
def test_mutated_records_parse_or_raise_a_format_error(
    sample: tuple[Path, list[bytes]], index: int, cut: int, junk: bytes
) -> None:
    _, seeds = sample
    seed = seeds[index % len(seeds)]
    at = cut % (len(seed) + 1)
    _parse_only_format_errors(seed[:at] + junk + seed[at + len(junk) :])


@FUZZ
@given(member=st.sampled_from(["body", "time", "seq", "session", "type", "sig"]), value=json_values)
def test_records_with_any_json_in_a_member_parse_or_raise(
    sample: tuple[Path, list[bytes]], member: str, value: Any
) -> None:
    _, seeds = sample
    for seed in seeds[:3]:
        data = json.loads(seed)
        data[member] = value
        try:
            encoded = canonical_bytes(data)
        except RecordFormatError:
            encoded = json.dumps(data).encode()
        _parse_only_format_errors(encoded)


@FUZZ
@given(
    path=st.lists(
        st.sampled_from(
            ["media", "stored", "video", "audio", "encryption", "utc_start", "index", "file"]
        ),
        min_size=1,
        max_size=1,
    ),
    value=json_values,
)
def test_segment_bodies_with_any_member_value_parse_or_raise(
    sample: tuple[Path, list[bytes]], path: list[str], value: Any
) -> None:
    _, seeds = sample
    segment = next(json.loads(s) for s in seeds if b'"type":"segment"' in s)
    segment["body"][path[0]] = value
    with contextlib.suppress(RecordFormatError):
        Record.from_dict(json.loads(json.dumps(segment))).typed_body()


@settings(
    max_examples=max(10, EXAMPLES // 10), deadline=10_000, suppress_health_check=list(HealthCheck)
)
@given(index=st.integers(0, 20), cut=st.integers(0, 4000), junk=st.binary(max_size=40))
def test_verify_tree_reports_instead_of_raising(
    sample: tuple[Path, list[bytes]],
    tmp_path_factory: pytest.TempPathFactory,
    index: int,
    cut: int,
    junk: bytes,
) -> None:
    root, _seeds = sample
    copy = tmp_path_factory.mktemp("mut") / "tree"
    shutil.copytree(root, copy)
    files = list(layout.iter_record_files(copy, DEVICE))
    target = files[index % len(files)]
    seed = target.read_bytes()
    at = cut % (len(seed) + 1)
    target.write_bytes(seed[:at] + junk + seed[at + len(junk) :])
    report = verify_tree(copy)
    if target.read_bytes() != seed:
        assert not report.ok  # a changed record file is never "OK"
    shutil.rmtree(copy.parent)


WIRE_MEMBERS = (
    *("device_utc", "pending_segments", "oldest_pending_utc", "head_seq", "record"),
    *("size", "sha256", "chunks", "records", "what", "reason", "state", "instance"),
)
wire_like = st.fixed_dictionaries(
    {"v": st.just(1)},
    optional={k: json_values for k in WIRE_MEMBERS},
).map(lambda v: json.dumps(v).encode())


@FUZZ
@given(
    data=st.binary(max_size=1024) | json_values.map(lambda v: json.dumps(v).encode()) | wire_like
)
def test_receipts_and_wire_messages_parse_or_raise_their_errors(data: bytes) -> None:
    with contextlib.suppress(ReceiptError):
        Receipt.parse(data)
    for message in (transfer.Hello, transfer.Init, transfer.Fin, transfer.Query, transfer.Need):
        with contextlib.suppress(transfer.WireError):
            message.parse(data)
    for message in (transfer.ClockSync, transfer.Grant, transfer.Status):
        with contextlib.suppress(transfer.WireError):
            message.parse(data)
    for schema in (transfer.HELLO, transfer.FIN, transfer.QUERY, transfer.NEED, transfer.INIT):
        with contextlib.suppress(transfer.WireError):
            transfer.parse_json(data, schema)
    with contextlib.suppress(transfer.WireError):
        transfer.unpack_chunk(data)
