"""Dock upload: the agent side of the MQTT transfer to the receiver (see evidence.transfer).

Public API: :func:`run_dock_upload`, :class:`UplinkConfig`, :class:`UploadResult`. The upload's
logic is :class:`agent.uplink.session.UplinkSession` (I/O-free: events in, publishes out, an
injected clock); :mod:`agent.uplink.uploader` is its paho adapter.
The uploader (and paho-mqtt) is imported on first use, so the recorder, which only reads
:class:`UplinkConfig` through the agent's configuration, never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.uplink.config import UplinkConfig

if TYPE_CHECKING:
    from agent.uplink.uploader import UploadResult, run_dock_upload

__all__ = ["UplinkConfig", "UploadResult", "run_dock_upload"]


def __getattr__(name: str) -> Any:
    if name in ("UploadResult", "run_dock_upload"):
        from agent.uplink import uploader

        return getattr(uploader, name)
    raise AttributeError(f"module 'agent.uplink' has no attribute {name!r}")
