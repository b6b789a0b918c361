"""Shared fixtures. Keep this small: helpers live in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dock import Dock
from tests.support.media import make_clips


@pytest.fixture(scope="session")
def mpegts_clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three distinct 1-second H.264/AAC MPEG-TS clips, made once per test session."""
    return make_clips(tmp_path_factory.mktemp("clips"), 3)


@pytest.fixture
def dock(tmp_path: Path) -> Iterator[Dock]:
    """A provisioned dock: Mosquitto with the generated mutual-TLS config, ACL and CRL, and the
    receiver service (a child process) with the generated receiver.toml; stopped after the test.
    Enrol devices with ``dock.register(spool)`` / ``dock.enrol(id)``."""
    d = Dock(tmp_path / "dock")
    try:
        yield d.start()
    finally:
        d.stop()
