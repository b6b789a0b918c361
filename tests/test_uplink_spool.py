"""The uplink's reading of the spool: upload order, and when media may be freed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agent.uplink.config import UplinkConfig
from agent.uplink.errors import UplinkConfigError
from agent.uplink.spool import UploadSpool
from evidence.chain import DeviceChain
from evidence.keys import generate_signing_key
from evidence.receipt import STATUS_STORED, Receipt
from evidence.testing import SteppingClock
from tests.support.spool import add_session


def test_records_go_in_seq_order_marked_or_not(tmp_path: Path, mpegts_clips: list[Path]) -> None:
    chain = DeviceChain(tmp_path, "BC-1", generate_signing_key())
    clock = SteppingClock()
    plain_old = add_session(chain, mpegts_clips[:1], clock, case=None, marker=False)
    marked = add_session(chain, mpegts_clips[:2], clock, case=None, marker=True)
    plain_new = add_session(chain, mpegts_clips[:1], clock, case=None, marker=False)

    order = [i.record.seq for i in UploadSpool(tmp_path, "BC-1").pending()]

    # the receiver stores only what continues the chain: a marked session cannot go first
    assert order == [r.seq for r in plain_old + marked + plain_new]


def test_media_freed_only_for_matching_stored_receipt_and_old_enough(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    chain = DeviceChain(tmp_path, "BC-1", generate_signing_key())
    records = add_session(chain, mpegts_clips[:1], SteppingClock(), case=None, marker=False)
    spool = UploadSpool(tmp_path, "BC-1")
    (item,) = [i for i in spool.pending() if i.is_segment]
    assert item.digest is not None
    assert item.media_path is not None
    rkey = generate_signing_key()

    digest = item.digest

    def receipt(media_sha256: str) -> Receipt:
        return Receipt.create(
            device="BC-1",
            record=item.hash,
            seq=item.record.seq,
            record_type="segment",
            status=STATUS_STORED,
            receiver_key=rkey,
            media_sha256=media_sha256,
            media_size=digest.size,
        )

    wrong = receipt(media_sha256="0" * 64)
    assert spool.free_media(item, wrong, min_age_s=0) == 0  # names other bytes: keep
    good = receipt(digest.sha256)
    # the test clock's segments end in 2026-11; a huge minimum age keeps them
    assert spool.free_media(item, good, min_age_s=1e12) == 0
    assert item.media_path.exists()
    assert spool.free_media(item, good, min_age_s=0) == item.digest.size
    assert not item.media_path.exists()
    assert len(records) == 3


def test_config_validation_names_the_bad_key() -> None:
    with pytest.raises(UplinkConfigError, match="retention"):
        replace(UplinkConfig(), retention="forever").validate()
    with pytest.raises(UplinkConfigError, match="cert_file"):
        replace(UplinkConfig(), cert_file="c.pem").validate()
    with pytest.raises(UplinkConfigError, match="ca_file"):
        replace(UplinkConfig(), cert_file="c.pem", key_file="k.pem").validate()


def test_agent_config_loader_accepts_the_uplink_table() -> None:
    # the agent's generic TOML loader must be able to map every field of UplinkConfig
    import typing

    hints = typing.get_type_hints(UplinkConfig)
    assert all(h in (str, int, float, bool, str | None) for h in hints.values()), hints
