"""Ed25519 signatures over the RFC 8785 canonical bytes of a JSON object without its ``sig``.

Records and receipts are signed the same way: ``sig`` is the base64 Ed25519 signature over the
canonical bytes of every other field. :class:`CanonicallySigned` holds that scheme once.

Failure posture: :func:`signature_valid` returns False for any signature that is malformed or does
not verify, never raises for it; :func:`canonical_bytes` errors (floats, unsafe integers) raise
:class:`evidence.errors.RecordFormatError` as everywhere else.
"""

from __future__ import annotations

import base64
import binascii
from abc import ABC, abstractmethod
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from evidence.canonical import canonical_bytes
from evidence.errors import RecordFormatError


def sign_canonical(unsigned: dict[str, Any], key: Ed25519PrivateKey) -> str:
    """The base64 signature of ``unsigned``'s canonical bytes."""
    return base64.b64encode(key.sign(canonical_bytes(unsigned))).decode("ascii")


def signature_valid(unsigned: dict[str, Any], sig: str, public_key: Ed25519PublicKey) -> bool:
    """True when base64 ``sig`` is ``public_key``'s signature of ``unsigned``'s canonical bytes
    (False, never an exception, when ``unsigned`` cannot even be canonicalised)."""
    try:
        signed = canonical_bytes(unsigned)
    except RecordFormatError:
        return False
    return signature_valid_bytes(signed, sig, public_key)


def signature_valid_bytes(signed: bytes, sig: str, public_key: Ed25519PublicKey) -> bool:
    """True when base64 ``sig`` is ``public_key``'s signature of the bytes ``signed``."""
    try:
        raw = base64.b64decode(sig, validate=True)
        public_key.verify(raw, signed)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


class CanonicallySigned(ABC):
    """A JSON object whose ``sig`` signs the canonical bytes of all its other fields.

    Subclasses must override :meth:`unsigned_dict` (every field but ``sig``) and provide a ``sig``
    attribute (base64, empty while unsigned). They may extend the other methods.
    """

    sig: str

    @abstractmethod
    def unsigned_dict(self) -> dict[str, Any]:
        """Every field but ``sig``, as JSON values."""

    def to_dict(self) -> dict[str, Any]:
        return {**self.unsigned_dict(), "sig": self.sig}

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers: canonical encoding of everything but ``sig``."""
        return canonical_bytes(self.unsigned_dict())

    def canonical(self) -> bytes:
        return canonical_bytes(self.to_dict())

    def signature_valid(self, public_key: Ed25519PublicKey) -> bool:
        return signature_valid(self.unsigned_dict(), self.sig, public_key)
