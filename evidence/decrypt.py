"""Adapter from the verifier to encryption at rest: plaintext blocks of a stored media file."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evidence.errors import EvidenceError
from evidence.verify import MediaDecryptor


class DecryptionUnavailable(EvidenceError):
    """This installation cannot decrypt stored media (no encryption module)."""


def media_decryptor(private_key_path: Path) -> MediaDecryptor:
    try:
        # Looked up at run time: decryption is optional for a verifier.
        encryption: Any = importlib.import_module("evidence.encryption")
    except ImportError as exc:
        raise DecryptionUnavailable(f"media decryption is not available: {exc}") from exc
    key = encryption.load_private_key(private_key_path)

    def blocks(path: Path, info: dict[str, Any]) -> Iterator[bytes]:
        yield from encryption.decrypt_blocks(path, key)

    return blocks
