"""Device bundles: the tar.gz the dock hands to a device (put on its SD card).

Contents (flat, no directories): ``manifest.json`` (device id, broker address, SHA-256 of every
other file), ``agent.toml`` (config skeleton), ``device.pem`` (the device's TLS certificate),
``ca.pem``, ``receiver-receipt.pub`` (Ed25519, verifies the receiver's receipts) and
``receiver-encryption.pub`` (X25519, spool media is encrypted to it). No private key is ever in a
bundle: the device's keys never left it.

Failure posture: :func:`read_bundle` never extracts to disk; it reads members into memory with
size and count limits, refuses links, directories, path tricks, unknown or missing members and
hash mismatches, and raises :class:`BundleError` listing every problem found.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evidence.fsutil import atomic_write
from provisioning.errors import BundleError

BUNDLE_FORMAT = "bodycam-device-bundle/1"
MANIFEST = "manifest.json"
AGENT_CONFIG = "agent.toml"
DEVICE_CERT = "device.pem"
CA_CERT = "ca.pem"
RECEIPT_PUB = "receiver-receipt.pub"
ENCRYPTION_PUB = "receiver-encryption.pub"
REQUIRED_FILES = (AGENT_CONFIG, DEVICE_CERT, CA_CERT, RECEIPT_PUB, ENCRYPTION_PUB)
MAX_MEMBER_SIZE_BYTES = 256 * 1024
MAX_MEMBERS = 16
MAX_BUNDLE_SIZE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    manifest: dict[str, Any]
    files: dict[str, bytes]

    @property
    def device_id(self) -> str:
        return str(self.manifest["device_id"])


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(path: Path, manifest: dict[str, Any], files: dict[str, bytes]) -> None:
    """Write a bundle atomically; ``manifest`` gets ``format`` and the file hashes added."""
    doc = dict(manifest)
    doc["format"] = BUNDLE_FORMAT
    doc["files"] = {name: sha256_hex(files[name]) for name in sorted(files)}
    members = {MANIFEST: (json.dumps(doc, indent=2) + "\n").encode("utf-8"), **files}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    atomic_write(Path(path), buf.getvalue())


def _read_members(path: Path) -> tuple[dict[str, bytes], list[str]]:
    problems: list[str] = []
    members: dict[str, bytes] = {}
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BundleError(path, ["the bundle file does not exist"]) from None
    except OSError as exc:
        raise BundleError(path, [f"cannot read the bundle: {exc.strerror or exc}"]) from exc
    if size > MAX_BUNDLE_SIZE_BYTES:
        raise BundleError(path, [f"{size} bytes is far too large for a device bundle"])
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for count, info in enumerate(tar):
                if count >= MAX_MEMBERS:
                    problems.append(f"more than {MAX_MEMBERS} members")
                    break
                name = info.name
                if not info.isfile():
                    problems.append(f"member {name!r} is not a regular file")
                    continue
                if "/" in name or "\\" in name or name.startswith("."):
                    problems.append(f"member {name!r} has a path; bundles are flat")
                    continue
                if info.size > MAX_MEMBER_SIZE_BYTES:
                    problems.append(f"member {name!r} is too large ({info.size} bytes)")
                    continue
                if name in members:
                    problems.append(f"member {name!r} appears twice")
                    continue
                f = tar.extractfile(info)
                if f is None:
                    problems.append(f"member {name!r} cannot be read")
                    continue
                members[name] = f.read()
    except FileNotFoundError:
        raise BundleError(path, ["the bundle file does not exist"]) from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise BundleError(
            path, [f"not a readable tar.gz bundle (corrupt or truncated: {exc})"]
        ) from exc
    return members, problems


def read_bundle(path: Path) -> Bundle:
    """Read and integrity-check a bundle; certificate checks are the installer's job."""
    path = Path(path)
    members, problems = _read_members(path)
    raw_manifest = members.pop(MANIFEST, None)
    if raw_manifest is None:
        raise BundleError(path, [*problems, f"{MANIFEST} is missing"])
    try:
        manifest = json.loads(raw_manifest.decode("utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(path, [*problems, f"{MANIFEST} is not valid JSON ({exc})"]) from exc
    if manifest.get("format") != BUNDLE_FORMAT:
        problems.append(f"{MANIFEST} format is {manifest.get('format')!r}, not {BUNDLE_FORMAT}")
    if not isinstance(manifest.get("device_id"), str):
        problems.append(f"{MANIFEST} has no device_id")
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        problems.append(f"{MANIFEST} has no file list")
        listed = {}
    for name in REQUIRED_FILES:
        if name not in members:
            problems.append(f"{name} is missing")
        elif name not in listed:
            problems.append(f"{name} is not listed in {MANIFEST}")
    for name, data in sorted(members.items()):
        if name not in listed:
            if name not in REQUIRED_FILES:
                problems.append(f"unexpected member {name!r}")
            continue
        if sha256_hex(data) != listed[name]:
            problems.append(f"{name} is corrupt (SHA-256 differs from {MANIFEST})")
    for name in sorted(set(listed) - set(members)):
        if name not in REQUIRED_FILES:
            problems.append(f"{name} is listed in {MANIFEST} but missing")
    if problems:
        raise BundleError(path, problems)
    return Bundle(manifest, members)
