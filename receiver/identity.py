"""The receiver's identity: the Ed25519 key that signs receipts, and the X25519 media key.

Provisioning supplies the key; for development a missing key is generated on first run (logged
loudly) so a fresh data directory works. Failure posture: an unreadable or wrong-type key file
raises :class:`evidence.errors.KeyFileError`; an existing key is never replaced. The media key
is never generated here: it comes from provisioning (``bodycam-provision init``), and a
configured one that cannot be loaded raises :class:`ReceiverConfigError`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from evidence.errors import EvidenceError
from evidence.keys import (
    generate_signing_key,
    key_id,
    load_signing_key,
    save_public_key,
    save_signing_key,
)
from receiver.errors import ReceiverConfigError

log = logging.getLogger(__name__)


def load_receipt_key(path: Path, *, create: bool = True) -> Ed25519PrivateKey:
    if path.exists() or not create:
        return load_signing_key(path)
    key = generate_signing_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_signing_key(path, key)
    save_public_key(public_key_path(path), key.public_key())
    log.warning("generated a new receipt key %s at %s", key_id(key.public_key()), path)
    return key


def load_media_key(path: Path | None) -> X25519PrivateKey | None:
    """The X25519 key spool media are encrypted to (None when not configured)."""
    if path is None:
        return None
    from evidence.encryption import load_encryption_key

    try:
        return load_encryption_key(path)
    except EvidenceError as exc:
        raise ReceiverConfigError(path, f"encryption_key cannot be loaded: {exc}") from exc


def public_key_path(private_path: Path) -> Path:
    """Where the matching public key is written (devices are provisioned with it)."""
    return private_path.with_suffix(".pub")
