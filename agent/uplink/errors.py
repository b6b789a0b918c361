"""Exceptions of the uplink. Each carries the data that explains it.

Failure posture: configuration errors are raised before connecting; problems met while
uploading are logged and counted in :class:`agent.uplink.uploader.UploadResult`, not raised.
"""

from __future__ import annotations

from agent.errors import AgentError


class UplinkError(AgentError):
    """Base of every error the uplink raises on purpose (a branch of the agent's tree)."""


class UplinkConfigError(UplinkError):
    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"uplink.{key}: {detail}")
        self.key = key
        self.detail = detail


class SpoolReadError(UplinkError):
    """The spool has no device or more than one and none was named."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
