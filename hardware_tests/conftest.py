"""Shared rules of the hardware tests.

``BODYCAM_HARDWARE=1`` says "this is the device under test": then a missing camera, microphone,
speaker, battery gauge, GPIO or configuration is a FAILURE, never a skip (a skipped test on a
device that should have the part proves nothing). Without it (a development machine, CI) the
same tests skip with the reason.

They run with the device's production configuration (``$BODYCAM_AGENT_CONFIG`` or
``/etc/bodycam/agent.toml``: the 30 s pre-event buffer, the configured bitrate, microphone card,
speaker and encryption key), and are meant to run inside the agent unit's sandbox as the
``bodycam`` user: ``/usr/lib/bodycam-agent/hardware-test`` (see docs/technician.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from agent.config import AgentConfig, load_config

HARDWARE = os.environ.get("BODYCAM_HARDWARE") == "1"
MODEL = Path("/proc/device-tree/model")


def missing(what: str) -> NoReturn:
    """A part the test needs is not there: a failure on the device under test, else a skip."""
    if HARDWARE:
        pytest.fail(f"BODYCAM_HARDWARE=1 but {what}", pytrace=False)
    pytest.skip(what)


def is_pi() -> bool:
    try:
        return "Raspberry Pi" in MODEL.read_text(errors="replace")
    except OSError:
        return False


@pytest.fixture(scope="session")
def device_config() -> AgentConfig:
    path = Path(os.environ.get("BODYCAM_AGENT_CONFIG", "/etc/bodycam/agent.toml"))
    if not path.exists():
        if HARDWARE:
            pytest.fail(f"BODYCAM_HARDWARE=1 but no device configuration at {path}", pytrace=False)
        return AgentConfig()
    return load_config(path)


@pytest.fixture(scope="session", autouse=True)
def on_a_pi() -> None:
    if not is_pi():
        missing("not a Raspberry Pi (no /proc/device-tree/model)")
