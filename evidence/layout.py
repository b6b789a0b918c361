"""Directory layout of an evidence tree: a device spool and an exported case file alike.

::

    ROOT/devices/<device>/records/<seq:010d>.json
    ROOT/devices/<device>/media/<file>
    ROOT/devices/<device>/device.pub      (informative; trust comes from --key)
    ROOT/keys/*.pub                       (informative public keys shipped with a case file)
    ROOT/manifest.json                    (case files: which seq ranges are included)
    ROOT/state/                           (device-private state; not evidence, never verified)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from evidence.values import SAFE_NAME_RE as SAFE_NAME_RE  # re-exported; ends in \Z

DEVICES = "devices"
RECORDS = "records"
MEDIA = "media"
MANIFEST = "manifest.json"
STATE = "state"
#: the device's signed chain head (``evidence.casefile.ChainHead``), rewritten at each append and
#: announced to the receiver when the device docks, so a cut-off tail is detectable there
CHAIN_HEAD_FILE = "chain-head.json"
DEVICE_PUBLIC_KEY = "device.pub"
RECORD_NAME_RE = re.compile(r"(\d{10})\.json\Z")


def device_dir(root: Path, device: str) -> Path:
    return Path(root) / DEVICES / device


def records_dir(root: Path, device: str) -> Path:
    return device_dir(root, device) / RECORDS


def media_dir(root: Path, device: str) -> Path:
    return device_dir(root, device) / MEDIA


def record_name(seq: int) -> str:
    return f"{seq:010d}.json"


def record_path(root: Path, device: str, seq: int) -> Path:
    return records_dir(root, device) / record_name(seq)


def media_path(root: Path, device: str, name: str) -> Path:
    if not SAFE_NAME_RE.fullmatch(name):
        raise ValueError(f"unsafe media file name {name!r}")
    return media_dir(root, device) / name


def iter_devices(root: Path) -> Iterator[str]:
    """Device directories (real directories, not links), sorted by name."""
    base = Path(root) / DEVICES
    if base.is_dir() and not base.is_symlink():
        for entry in sorted(base.iterdir()):
            # a link to a directory elsewhere (e.g. /etc) is not a device of this tree
            if entry.is_dir() and not entry.is_symlink():
                yield entry.name


def iter_record_files(root: Path, device: str) -> Iterator[Path]:
    """Record files of a device sorted by file name (which is the seq they claim); regular
    files only: links and special files are left out (the verifier reports them)."""
    base = records_dir(root, device)
    if base.is_dir() and not base.is_symlink():
        yield from sorted(p for p in base.iterdir() if p.is_file() and not p.is_symlink())


def seq_from_name(path: Path) -> int | None:
    m = RECORD_NAME_RE.fullmatch(path.name)
    return int(m.group(1)) if m else None
