"""Ed25519 signing keys, their identifiers and key files.

A key id is ``ed25519:`` followed by the first 16 bytes (32 hex digits) of the SHA-256 of the raw
32-byte public key. Private keys are PEM/PKCS#8 files written with mode 0600; public keys are
PEM/SubjectPublicKeyInfo, which ``openssl pkey -pubin`` reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from evidence.errors import KeyFileError
from evidence.fsutil import atomic_write

PrivateKey = Ed25519PrivateKey | X25519PrivateKey
PublicKey = Ed25519PublicKey | X25519PublicKey

KEY_ID_PREFIX = "ed25519:"


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    return KEY_ID_PREFIX + hashlib.sha256(raw_public_bytes(public_key)).hexdigest()[:32]


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def save_private_pem(path: Path, key: PrivateKey) -> None:
    """A private key as PEM/PKCS#8, readable by its owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(Path(path), pem, mode=0o600)


def save_public_pem(path: Path, public_key: PublicKey) -> None:
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic_write(Path(path), pem, mode=0o644)


def read_key_file(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(Path(path), f"cannot read key file: {exc.strerror or exc}") from exc


def load_private_pem(path: Path, expected: type, what: str) -> Any:
    """A PEM private key of type ``expected``; ``what`` names it in errors ("an Ed25519 key")."""
    data = read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(Path(path), f"not a PEM private key: {exc}") from exc
    if not isinstance(key, expected):
        raise KeyFileError(Path(path), f"not {what} ({type(key).__name__})")
    return key


def load_public_pem(path: Path, expected: type, what: str) -> Any:
    data = read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(Path(path), f"not a PEM public key: {exc}") from exc
    if not isinstance(key, expected):
        raise KeyFileError(Path(path), f"not {what} ({type(key).__name__})")
    return key


def save_signing_key(path: Path, key: Ed25519PrivateKey) -> None:
    save_private_pem(path, key)


def save_public_key(path: Path, public_key: Ed25519PublicKey) -> None:
    save_public_pem(path, public_key)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key: Ed25519PrivateKey = load_private_pem(path, Ed25519PrivateKey, "an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM public key, a PEM private key or a certificate."""
    return public_key_from_pem(read_key_file(path), Path(path))


def public_key_from_pem(data: bytes, path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM bytes (public key, private key or certificate);
    ``path`` only names the source in errors."""
    key: object
    try:
        if b"CERTIFICATE" in data:
            from cryptography import x509

            key = x509.load_pem_x509_certificate(data).public_key()
        elif b"PRIVATE KEY" in data:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(Path(path), f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(Path(path), f"not an Ed25519 key ({type(key).__name__})")
    return key


class KeyRing:
    """The public keys a verifier trusts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for key in keys:
            self.add(key)

    def add(self, public_key: Ed25519PublicKey) -> str:
        kid = key_id(public_key)
        self._keys[kid] = public_key
        return kid

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def ids(self) -> list[str]:
        return sorted(self._keys)

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> KeyRing:
        return cls(load_public_key(Path(p)) for p in paths)


def private_key_mode_ok(path: Path) -> bool:
    """True when a private key file is not readable by group or others."""
    return (Path(path).stat().st_mode & 0o077) == 0
