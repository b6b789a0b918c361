"""Uplink settings: one dataclass that plugs into the agent's TOML tree as ``[uplink]``.

All fields are plain TOML types (paths are strings) so the project's one loader
(:mod:`evidence.tomlconfig`, through the agent's config) maps them.
Example::

    [uplink]
    broker_host = "dock.local"
    broker_port = 8883
    ca_file = "/etc/bodycam/ca.pem"          # mutual TLS: all three are required
    cert_file = "/etc/bodycam/device.pem"
    key_file = "/etc/bodycam/tls.key"
    allow_insecure = false                   # true: plain TCP, development brokers only
    receiver_key_file = "/etc/bodycam/receiver.pub"   # verifies receipts
    window_bytes = 33554432
    retention = "delete-after-receipt"        # or "keep"

Failure posture: :meth:`UplinkConfig.validate` raises :class:`UplinkConfigError` naming the key
before anything connects; no setting is guessed. There is no anonymous default: without the
three mutual-TLS files the uplink refuses to start unless ``allow_insecure`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.uplink.errors import UplinkConfigError

RETENTION_KEEP = "keep"
RETENTION_DELETE = "delete-after-receipt"
RETENTIONS = (RETENTION_KEEP, RETENTION_DELETE)


@dataclass
class UplinkConfig:
    broker_host: str = "127.0.0.1"
    broker_port: int = 8883
    client_id: str = ""
    """MQTT client id; empty: ``bodycam-<device id>`` (stable, so the session persists)."""
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    receiver_key_file: str = ""
    """The receiver's receipt public key (PEM); empty: ``<spool>/state/receiver.pub``."""
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    window_bytes: int = 32 * 1024 * 1024
    """Bytes sent but not yet receipted, at most (at least one record always goes)."""
    receipt_timeout_s: float = 15.0
    """No receipt this long after the last send of a record: ask the receiver what it lacks."""
    probe_timeout_s: float = 5.0
    """At start, wait this long for the receiver to say what it already has before sending."""
    retention: str = RETENTION_DELETE
    retention_min_age_s: float = 0.0
    """Receipted media younger than this (by segment end time) stay on the device."""
    rescan_interval_s: float = 2.0
    retry_backoff_s: float = 10.0
    """A record the receiver cannot take yet (device not registered, its disk full) or the broker
    refused is sent again after this long; while the receiver keeps saying "later", the pause
    doubles up to ``retry_backoff_max_s`` (so a large spool is not re-sent every few seconds)."""
    retry_backoff_max_s: float = 300.0
    connect_timeout_s: float = 10.0
    """TCP connect plus TLS handshake, at most; then the connection is given up and retried."""
    allow_insecure: bool = False
    """Plain TCP without certificates: only for a development broker on a trusted host."""

    def receiver_key_path(self, spool: Path) -> Path:
        return (
            Path(self.receiver_key_file)
            if self.receiver_key_file
            else (spool / "state" / "receiver.pub")
        )

    def validate(self) -> None:
        if self.retention not in RETENTIONS:
            raise UplinkConfigError("retention", f"must be one of {', '.join(RETENTIONS)}")
        if self.window_bytes <= 0:
            raise UplinkConfigError("window_bytes", "must be > 0")
        if self.receipt_timeout_s <= 0:
            raise UplinkConfigError("receipt_timeout_s", "must be > 0")
        if self.retry_backoff_s <= 0:
            raise UplinkConfigError("retry_backoff_s", "must be > 0")
        if self.retry_backoff_max_s < self.retry_backoff_s:
            raise UplinkConfigError("retry_backoff_max_s", "must be >= retry_backoff_s")
        if self.connect_timeout_s <= 0:
            raise UplinkConfigError("connect_timeout_s", "must be > 0")
        if self.probe_timeout_s < 0:
            raise UplinkConfigError("probe_timeout_s", "must be >= 0")
        if (self.cert_file is None) != (self.key_file is None):
            raise UplinkConfigError("cert_file", "cert_file and key_file go together")
        if self.cert_file is not None and self.ca_file is None:
            raise UplinkConfigError("ca_file", "a client certificate needs ca_file (TLS)")
        if not self.allow_insecure:
            missing = [n for n in ("ca_file", "cert_file", "key_file") if not getattr(self, n)]
            if missing:
                raise UplinkConfigError(
                    missing[0],
                    "the dock upload uses mutual TLS: set ca_file, cert_file and key_file"
                    " (bodycam-provision device-install writes them; allow_insecure = true only"
                    " for a development broker)",
                )
