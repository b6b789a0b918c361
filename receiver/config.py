"""The receiver's configuration: a TOML file mapped onto a small dataclass tree.

Example (``bodycam-provision broker-config`` writes the dock-specific part)::

    data_dir = "/var/lib/bodycam-receiver"
    receipt_key = "/srv/bodycam/dock/receiver/receipt.key"  # default: <data_dir>/receipt.key
    encryption_key = "/srv/bodycam/dock/receiver/encryption.key"  # decrypts spool media
    dock_registry = "/srv/bodycam/dock/devices/registry.json"   # devices enrolled/revoked

    [broker]
    host = "127.0.0.1"
    port = 8883
    client_id = "bodycam-receiver"
    keepalive_s = 30
    session_expiry_s = 604800
    ca_file = "/srv/bodycam/dock/ca/ca.pem"         # mutual TLS: all three are required
    cert_file = "/srv/bodycam/dock/receiver/client.pem"
    key_file = "/srv/bodycam/dock/receiver/client.key"
    allow_insecure = false   # true: plain TCP without certificates, for development only

    [limits]                 # per-device budgets; every key optional (see receiver/README.md)
    max_segment_bytes = 2147483648
    max_transfers = 256
    device_transfers = 64
    device_temp_bytes = 1073741824
    device_message_rate = 2000.0
    device_quarantine_count = 200

    [compliance]             # deadlines and the accountability report (docs/compliance.md)
    timezone = "Asia/Shanghai"
    holiday_file = "/etc/bodycam/holidays.toml"   # the administrator's holiday schedule
    rule_based_holidays = true     # use the holidays package's computed years (provisional)
    device_unseen_days = 7
    clock_offset_limit_s = 2.0
    inspection_tolerance_s = 300

Failure posture: unknown keys and wrong types raise :class:`ReceiverConfigError` naming the
file and the dotted key (the project's one loader, :mod:`evidence.tomlconfig`), so a typo is never
silently ignored. There is no anonymous default:
:meth:`BrokerConfig.check_tls` refuses to connect without the mutual-TLS files unless
``allow_insecure`` is set explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evidence import tomlconfig
from receiver.errors import ReceiverConfigError
from receiver.ingest.limits import Limits


@dataclass
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 8883
    client_id: str = "bodycam-receiver"
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    #: plain TCP without certificates; for development against a throw-away broker only
    allow_insecure: bool = False

    def check_tls(self) -> None:
        """Raise :class:`ReceiverConfigError` unless mutual TLS is set up (or explicitly waived)."""
        if self.allow_insecure:
            return
        missing = [n for n in ("ca_file", "cert_file", "key_file") if getattr(self, n) is None]
        if missing:
            raise ReceiverConfigError(
                None,
                f"broker.{', broker.'.join(missing)} not set: the receiver connects only with"
                " mutual TLS (bodycam-provision broker-config writes these settings; set"
                " broker.allow_insecure = true only for a development broker)",
            )


#: the ``[limits]`` table: per-device budgets of the ingest (defaults and meaning documented in
#: :class:`receiver.ingest.limits.Limits` and receiver/README.md)
LimitsConfig = Limits


@dataclass
class ComplianceConfig:
    timezone: str = "Asia/Shanghai"
    holiday_file: Path | None = None
    rule_based_holidays: bool = True
    device_unseen_days: int = 7
    clock_offset_limit_s: float = 2.0
    inspection_tolerance_s: float = 300.0


@dataclass
class ReceiverConfig:
    data_dir: Path = Path("receiver-data")
    receipt_key: Path | None = None
    #: X25519 key that spool media are encrypted to: segments are decrypted and their plaintext
    #: checked on arrival (and by ``reverify``)
    encryption_key: Path | None = None
    #: the provisioning dock's ``devices/registry.json``: enrolled devices are trusted and revoked
    #: ones refused without ``bodycam-receiver device add/revoke``
    dock_registry: Path | None = None
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    limits: Limits = field(default_factory=Limits)
    compliance: ComplianceConfig = field(default_factory=ComplianceConfig)

    @property
    def receipt_key_path(self) -> Path:
        return self.receipt_key or self.data_dir / "receipt.key"


def load_config(path: Path | None) -> ReceiverConfig:
    """Defaults, overridden by the TOML file when given (relative paths are file-relative)."""
    if path is None:
        return ReceiverConfig()
    try:
        return tomlconfig.load(ReceiverConfig, Path(path), relative_to_file=True)
    except tomlconfig.ConfigFileError as exc:
        reason = f"{exc.key}: {exc.detail}" if exc.key else exc.detail
        raise ReceiverConfigError(Path(path), reason) from None
