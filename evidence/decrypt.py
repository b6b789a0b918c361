"""Adapter from the verifier to encryption at rest: plaintext blocks of a stored media file.

Failure posture: an unusable key file raises ``KeyFileError`` before any media is read; a file
that does not decrypt raises ``DecryptionError`` from the blocks iterator, which the verifier
reports as a violation of that segment. Recovered-prefix decryption (a stream cut by a crash)
is used only when the verifier asks for it (``info["recovered_prefix"]``). The verifier hands
over a file it opened safely (inside the tree, no links); a path is still accepted.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

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

    def blocks(src: Path | BinaryIO, info: dict[str, Any]) -> Iterator[bytes]:
        recovered = bool(info.get("recovered_prefix"))
        if isinstance(src, (str, Path)):
            yield from encryption.decrypt_blocks(Path(src), key, recovered_prefix=recovered)
        else:
            yield from encryption.iter_decrypted_chunks(src, key, recovered_prefix=recovered)

    return blocks
