"""Shared fixtures. Keep this small: helpers live in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import MosquittoBroker
from tests.support.dock import Dock
from tests.support.media import make_clips


@pytest.fixture
def mosquitto_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private Mosquitto (default limits, anonymous, plain TCP) on a free loopback port."""
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def mpegts_clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three distinct 1-second H.264/AAC MPEG-TS clips, made once per test session."""
    return make_clips(tmp_path_factory.mktemp("clips"), 3)


@pytest.fixture
def dock(tmp_path: Path) -> Iterator[Dock]:
    """Mosquitto + the receiver service (a child process), stopped after the test."""
    d = Dock(tmp_path / "dock")
    try:
        yield d.start()
    finally:
        d.stop()
