"""Config files provisioning writes for the other parts: the agent's and the receiver's.

They follow the schemas of ``agent/config.py`` (+ ``agent/uplink/config.py``) and
``receiver/config.py``, whose loaders refuse unknown keys; settings those parts do not read yet
are written as comments so the files still load.

Failure posture: pure string rendering; nothing here touches the disk.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Where a device keeps its identity; the agent's default config path lives here too.
DEVICE_CONFIG_ROOT = Path("/etc/bodycam")


def toml_str(value: object) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value))


def render_agent_config(
    device_id: str, broker_host: str, broker_port: int, *, root: Path = DEVICE_CONFIG_ROOT
) -> str:
    """The agent's TOML for a device whose provisioning files live in ``root`` on the device."""
    return "\n".join(
        [
            "# bodycam-agent configuration written by bodycam-provision.",
            "[device]",
            f"id = {toml_str(device_id)}",
            f"key_file = {toml_str(root / 'signing.key')}",
            '# spool_dir = "/var/lib/bodycam/spool"',
            "# Spool media are encrypted to the receiver's key; without it they stay plaintext.",
            f"encryption_key_file = {toml_str(root / 'receiver-encryption.pub')}",
            "",
            "[uplink]",
            f"broker_host = {toml_str(broker_host)}",
            f"broker_port = {broker_port}",
            f"ca_file = {toml_str(root / 'ca.pem')}",
            f"cert_file = {toml_str(root / 'device.pem')}",
            f"key_file = {toml_str(root / 'tls.key')}",
            f"receiver_key_file = {toml_str(root / 'receiver-receipt.pub')}",
            "",
        ]
    )
