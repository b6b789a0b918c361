"""Device id rules.

A device id becomes the certificate CN, hence the MQTT username that Mosquitto substitutes for
``%u`` in ACL patterns, a topic level under ``bodycam/v1/`` and a directory name. MQTT wildcards
(``+``, ``#``), the topic separator ``/``, whitespace and anything else that could widen an ACL
pattern or escape a directory are refused, with the offending characters named.

Failure posture: :func:`validate_device_id` either returns the id unchanged or raises
:class:`InvalidDeviceIdError`; it never "cleans up" an id, since a silently altered id would
name a different device.
"""

from __future__ import annotations

import re

from provisioning.errors import InvalidDeviceIdError

MAX_DEVICE_ID_LENGTH = 64
ALLOWED_DESCRIPTION = "letters A-Z a-z, digits 0-9, '.', '_' and '-'"
_ALLOWED = re.compile(r"[A-Za-z0-9._-]")

RECEIVER_CN = "receiver"
BROKER_CN = "bodycam-broker"
# Names the dock's own certificates use; a device with one of them would share their ACL rights.
RESERVED_IDS = frozenset({RECEIVER_CN, BROKER_CN})


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` unchanged if it is acceptable, else raise InvalidDeviceIdError."""
    if not device_id:
        raise InvalidDeviceIdError(device_id, "it is empty")
    bad = sorted({ch for ch in device_id if not _ALLOWED.fullmatch(ch)})
    if bad:
        shown = ", ".join(_describe(ch) for ch in bad)
        raise InvalidDeviceIdError(
            device_id, f"it contains {shown}; only {ALLOWED_DESCRIPTION} are allowed"
        )
    if len(device_id) > MAX_DEVICE_ID_LENGTH:
        raise InvalidDeviceIdError(
            device_id, f"it is {len(device_id)} characters long (at most {MAX_DEVICE_ID_LENGTH})"
        )
    if not device_id[0].isalnum():
        raise InvalidDeviceIdError(device_id, "it must start with a letter or a digit")
    if device_id.lower() in RESERVED_IDS:
        raise InvalidDeviceIdError(device_id, "the name is reserved for the dock's own identities")
    return device_id


def _describe(ch: str) -> str:
    if ch == "+":
        return "'+' (MQTT single-level wildcard)"
    if ch == "#":
        return "'#' (MQTT multi-level wildcard)"
    if ch == "/":
        return "'/' (MQTT topic separator)"
    if ch.isspace():
        return f"whitespace ({ch!r})"
    return repr(ch)
