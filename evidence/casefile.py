"""Case files (Art. 21): the receiver-signed manifest, device chain heads, and the offline check.

A case file is a directory (or a zip of one) that a reviewer or a court can check with
``bodycam-verify EXPORT`` and no access to the receiver::

    manifest.json                    receiver-signed: case, devices (ranges, heads, anchors),
                                     every other file's SHA-256 and size, the custody tree head
    devices/<dev>/records/*.json     the signed records of the case's sessions
    devices/<dev>/media/<file>       media in their signed stored form (ciphertext if encrypted)
    devices/<dev>/device.pub         the device's public key
    play/<dev>/<file>                the playable plaintext of encrypted segments
    receipts/<dev>/<seq>.json        receiver receipts for every record
    keys/receiver.pub                the receiver's public key (pin it with --receiver-key)
    custody/tree-head.json           the signed custody tree head the entries are proven against
    custody/entries.json             the case's custody entries with inclusion proofs
    report.json, index.html          the verification report at export, a page for people

The manifest member ``devices`` keeps the shape :mod:`evidence.verify` reads
(``{"<dev>": {"ranges": [[first, last], ...]}}``), so the chain check treats seqs outside the
ranges as outside the excerpt and every seq inside a range as required.

A :class:`ChainHead` is a device's signed statement "my chain reached ``seq`` with record
``hash``"; the receiver keeps the newest per device and ships them as anchors, so a cut-off tail
is detectable wherever an anchor exists.

Speed: the chain check (:func:`evidence.verify.verify_tree`) runs before the file check and
hands over the SHA-256 of every media file it hashed, so each media file is read and hashed
once; the other listed files of 1 MiB or more are hashed in a thread pool, in bounded batches,
and every finding is still reported in the order of the sorted file names.

Failure posture: :func:`verify_case_file` never raises for anything inside the case file: each
problem is a :class:`Problem` with its kind, and the rest is still checked. It opens only regular
files inside the root (``O_NOFOLLOW``, ``O_NONBLOCK``, a type check), reads JSON of bounded size
and nesting, and never follows a path out of the root. Only an unusable root itself raises
:class:`CaseFileError`. stdlib + cryptography only.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from evidence.canonical import canonical_bytes, parse_json
from evidence.digests import ordered, sha256_stream
from evidence.errors import EvidenceError
from evidence.keys import KeyRing, key_id
from evidence.merkle import (
    MerkleError,
    TreeHead,
    leaf_hash,
    parse_hash,
    parse_proof,
    verify_inclusion,
)
from evidence.signing import CanonicallySigned, sign_canonical, signature_valid

CASE_FILE_TYPE = "case-file"
CHAIN_HEAD_TYPE = "chain-head"
MANIFEST = "manifest.json"
RECEIVER_KEY_FILE = "keys/receiver.pub"
TREE_HEAD_FILE = "custody/tree-head.json"
ENTRIES_FILE = "custody/entries.json"
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 64
MAX_FILES = 200_000
MAX_ZIP_BYTES = 64 << 30
HASH_BLOCK = 1 << 20
#: Listed files at least this large are hashed in the pool; smaller ones cost less inline.
POOL_MIN_BYTES = 1 << 20
_TYPE_RE = re.compile(rb'"type"\s*:\s*"case-file"')
_STRUCTURE_RE = re.compile(rb'"(?:[^"\\]+|\\.)*"|[\[\]{}]', re.DOTALL)


class CaseFileError(EvidenceError):
    """The case file cannot be examined at all (no such directory, not a case file)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Problem:
    kind: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.detail}"


@dataclass
class ChainHead(CanonicallySigned):
    """A device's signed chain head: "my chain reached ``seq``, whose record hashes to
    ``hash``", sent when it docks. Signed with the device key like a record."""

    device: str
    seq: int
    hash: str
    utc: str
    key: str
    sig: str = ""

    def unsigned_dict(self) -> dict[str, Any]:
        return {
            "v": 1,
            "type": CHAIN_HEAD_TYPE,
            "device": self.device,
            "seq": self.seq,
            "hash": self.hash,
            "utc": self.utc,
            "key": self.key,
        }

    @classmethod
    def create(
        cls, key: Ed25519PrivateKey, device: str, seq: int, record_hash: str, utc: str
    ) -> ChainHead:
        head = cls(device, seq, record_hash, utc, key_id(key.public_key()))
        head.sig = sign_canonical(head.unsigned_dict(), key)
        return head

    @classmethod
    def from_dict(cls, d: Any) -> ChainHead:
        if not isinstance(d, dict) or d.get("v") != 1 or d.get("type") != CHAIN_HEAD_TYPE:
            raise MerkleError("not a version-1 chain head")
        extra = set(d) - {"v", "type", "device", "seq", "hash", "utc", "key", "sig"}
        if extra:
            raise MerkleError(f"chain head has unknown members {sorted(extra)}")
        seq = d.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**53:
            raise MerkleError("chain head seq is not a non-negative integer")
        parse_hash(d.get("hash"), "chain head hash")
        for name in ("device", "utc", "key", "sig"):
            if not isinstance(d.get(name), str):
                raise MerkleError(f"chain head {name} is not a string")
        return cls(d["device"], seq, d["hash"], d["utc"], d["key"], d["sig"])


def sign_manifest(unsigned: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The manifest with ``receiver_key`` and ``sig`` (over every other member) added."""
    body = {**unsigned, "receiver_key": key_id(key.public_key())}
    return {**body, "sig": sign_canonical(body, key)}


# -- safe reading -------------------------------------------------------------------------------
class _Reader:
    """Reads only regular files inside ``root``, never through a symlink, FIFO or device."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def resolve(self, rel: str) -> Path | None:
        """The path of ``rel`` inside the root, or None when ``rel`` could leave it."""
        p = PurePosixPath(rel)
        if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts):
            return None
        if "\\" in rel or "\x00" in rel:
            return None
        return self.root.joinpath(*p.parts)

    def open_fd(self, path: Path) -> int:
        # refuse a symlink in any component below the root, not only the last one
        current = self.root
        for part in path.relative_to(self.root).parts[:-1]:
            current = current / part
            st = os.lstat(current)
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(f"{current.relative_to(self.root)} is not a plain directory")
        fd = os.open(
            path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        )
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError("not a regular file")
        return fd

    def read(self, path: Path, limit: int) -> bytes:
        fd = self.open_fd(path)
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise OSError(f"larger than {limit} bytes")
        return data

    def digest(self, path: Path) -> tuple[str, int]:
        fd = self.open_fd(path)
        with os.fdopen(fd, "rb", buffering=0) as f:
            return sha256_stream(f)

    def json(self, path: Path) -> Any:
        data = self.read(path, MAX_JSON_BYTES)
        _check_depth(data)
        return parse_json(data)


def _check_depth(data: bytes) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH before the parser recurses into it. Whole
    strings are skipped by one regex match each, so a large manifest costs little."""
    depth = 0
    for match in _STRUCTURE_RE.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise EvidenceError(f"JSON nested deeper than {MAX_JSON_DEPTH}")
        elif token in (b"]", b"}"):
            depth -= 1


def walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below ``root`` (relative POSIX path, lstat), never following symlinks."""
    stack = [root]
    count = 0
    while stack:
        d = stack.pop()
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            st = entry.stat(follow_symlinks=False)
            count += 1
            if count > MAX_FILES:
                raise OSError(f"more than {MAX_FILES} files")
            rel = Path(entry.path).relative_to(root).as_posix()
            yield rel, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))


# -- verification -------------------------------------------------------------------------------
@dataclass
class CaseFileReport:
    root: Path
    case: str | None = None
    trusted_key: str | None = None
    trust: str = ""
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    custody_entries: int = 0
    tree_size: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, where: str, detail: str) -> None:
        self.problems.append(Problem(kind, where, detail))

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "case": self.case,
            "trusted_receiver_key": self.trusted_key,
            "trust": self.trust,
            "files": self.files,
            "custody_entries": self.custody_entries,
            "tree_size": self.tree_size,
            "problems": [p.__dict__ for p in self.problems],
            "notes": self.notes,
        }


def is_case_file(path: Path) -> bool:
    """A directory with a manifest of type case-file, or a zip file (checked on opening)."""
    try:
        if path.is_file() and zipfile.is_zipfile(path):
            return True
        if not path.is_dir():
            return False
        # any sign of a case file counts: a tampered manifest must not turn the directory
        # into a plain evidence tree that skips the case-file checks
        for marker in (MANIFEST, RECEIVER_KEY_FILE, TREE_HEAD_FILE, ENTRIES_FILE):
            if marker != MANIFEST and os.path.lexists(path / marker):
                return True
        manifest = path / MANIFEST
        if not os.path.lexists(manifest):
            return False
        fd = _Reader(path).open_fd(manifest)
        with os.fdopen(fd, "rb") as f:
            head = f.read(1 << 20)
        return _TYPE_RE.search(head) is not None
    except OSError:
        return False  # the tree verifier reports what is unreadable


def _load_key(reader: _Reader, rel: str) -> Ed25519PublicKey | None:
    path = reader.resolve(rel)
    if path is None:
        return None
    try:
        key = load_pem_public_key(reader.read(path, 1 << 16))
    except (OSError, ValueError):
        return None
    return key if isinstance(key, Ed25519PublicKey) else None


def verify_case_file(
    root: Path,
    *,
    receiver_keys: KeyRing | None = None,
    device_keys: KeyRing | None = None,
) -> CaseFileReport:
    """Check a case-file directory: the receiver's signature on the manifest, every file's hash,
    the records and chains (:func:`evidence.verify.verify_tree`), the receipts, the device chain
    heads, and the custody entries' inclusion proofs under the signed tree head."""
    root = Path(root)
    if not root.is_dir() or root.is_symlink():
        raise CaseFileError(root, "not a directory")
    report = CaseFileReport(root)
    reader = _Reader(root)
    try:
        manifest = reader.json(root / MANIFEST)
    except (OSError, EvidenceError, RecursionError) as exc:
        report.add("bad-manifest", MANIFEST, f"unusable: {exc}")
        return report
    if not isinstance(manifest, dict) or manifest.get("type") != CASE_FILE_TYPE:
        report.add("bad-manifest", MANIFEST, "not a case-file manifest")
        return report
    receiver = _trust(reader, manifest, receiver_keys, report)
    present, safe = _scan_files(reader, manifest, report)
    # the chains are checked first so that their media digests are reused by the file check;
    # their findings are still reported after the file check's
    chains = CaseFileReport(root)
    media = _check_chains(root, manifest, device_keys, chains) if safe else {}
    _check_listed(reader, manifest, present, media, report)
    if safe:
        report.problems += chains.problems
        report.notes += chains.notes
    else:
        report.notes.append(
            "records and chains were not checked: the case file holds files that are not "
            "regular files (named above), and nothing outside a case file is ever read"
        )
    if receiver is not None:
        _check_receipts(reader, manifest, receiver, report)
        _check_custody(reader, manifest, receiver, report)
    _check_anchors(manifest, device_keys or KeyRing(), reader, report)
    return report


def _trust(
    reader: _Reader, manifest: dict[str, Any], pinned: KeyRing | None, report: CaseFileReport
) -> Ed25519PublicKey | None:
    case = manifest.get("case")
    report.case = case.get("number") if isinstance(case, dict) else None
    kid = manifest.get("receiver_key")
    sig = manifest.get("sig")
    unsigned = {k: v for k, v in manifest.items() if k != "sig"}
    if pinned is not None:
        key = pinned.get(kid) if isinstance(kid, str) else None
        report.trust = "pinned with --receiver-key"
        if key is None:
            report.add(
                "untrusted-receiver",
                MANIFEST,
                f"signed by {kid!r}, which is not a key given with --receiver-key",
            )
            return None
    else:
        key = _load_key(reader, RECEIVER_KEY_FILE)
        report.trust = (
            f"the key shipped in {RECEIVER_KEY_FILE} (integrity only: pin the receiver's key "
            "with --receiver-key to check who made this case file)"
        )
        if key is None or key_id(key) != kid:
            report.add("untrusted-receiver", RECEIVER_KEY_FILE, "missing or not the signing key")
            return None
    report.trusted_key = key_id(key)
    try:
        valid = isinstance(sig, str) and signature_valid(unsigned, sig, key)
    except EvidenceError:
        valid = False
    if not valid:
        report.add("bad-signature", MANIFEST, "the receiver's signature does not verify")
        return None
    return key


def _scan_files(
    reader: _Reader, manifest: dict[str, Any], report: CaseFileReport
) -> tuple[dict[str, int], bool]:
    """Every regular file in the case file but the manifest, with its size; False when the tree
    holds anything but regular files and directories."""
    safe = True
    if not isinstance(manifest.get("files"), dict):
        report.add("bad-manifest", MANIFEST, "no files list")
    present: dict[str, int] = {}
    try:
        for rel, st in walk(reader.root):
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                kind = "symlink" if stat.S_ISLNK(st.st_mode) else "special file"
                report.add("unsafe-file", rel, f"a {kind} in a case file is never followed")
                safe = False
                continue
            if rel != MANIFEST:
                present[rel] = st.st_size
    except OSError as exc:
        report.add("unreadable", ".", str(exc))
        safe = False
    return present, safe


def _check_listed(
    reader: _Reader,
    manifest: dict[str, Any],
    present: dict[str, int],
    known: dict[str, tuple[str, int]],
    report: CaseFileReport,
) -> None:
    """Check every listed file against the manifest (``known``: digests already taken)."""
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        listed = {}
    to_hash: list[tuple[str, Path]] = []
    for rel, want in sorted(listed.items()):
        path = reader.resolve(rel) if isinstance(rel, str) else None
        if path is not None and isinstance(want, dict) and rel in present and rel not in known:
            to_hash.append((rel, path))
    hashed = _hash_files(reader, to_hash, present)
    for rel, want in sorted(listed.items()):
        path = reader.resolve(rel) if isinstance(rel, str) else None
        if path is None:
            report.add(
                "path-outside", str(rel)[:200], "the manifest names a path outside the case file"
            )
            continue
        if not isinstance(want, dict):
            report.add("bad-manifest", rel, "file entry is not an object")
            continue
        if rel not in present:
            if not (path.is_symlink() or path.exists()):
                report.add("file-missing", rel, "listed in the manifest, not in the case file")
            continue
        got = known.get(rel) or hashed[rel]
        if isinstance(got, OSError):
            report.add("unreadable", rel, str(got))
            continue
        sha, size = got
        report.files += 1
        if sha != want.get("sha256") or size != want.get("size"):
            report.add(
                "file-altered", rel, f"SHA-256 {sha}, the manifest says {want.get('sha256')}"
            )
    for rel in sorted(set(present) - set(listed)):
        report.add("file-unlisted", rel, "in the case file but not in the signed manifest")


def _hash_files(
    reader: _Reader, files: list[tuple[str, Path]], sizes: dict[str, int]
) -> dict[str, tuple[str, int] | OSError]:
    """SHA-256 and size (or the read error) of each file; large ones on every core."""
    out: dict[str, tuple[str, int] | OSError] = {}

    def one(item: tuple[str, Path]) -> tuple[str, int]:
        return reader.digest(item[1])

    large = [item for item in files if sizes.get(item[0], 0) >= POOL_MIN_BYTES]
    threads = len(os.sched_getaffinity(0)) or 1
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="case-hash") as pool:
        for (rel, _), future in ordered(pool, one, large, 4 * threads):
            error = future.exception()
            if error is not None and not isinstance(error, OSError):
                raise error
            out[rel] = error if isinstance(error, OSError) else future.result()
    for rel, path in files:
        if rel not in out:
            try:
                out[rel] = reader.digest(path)
            except OSError as exc:
                out[rel] = exc
    return out


def _check_chains(
    root: Path, manifest: dict[str, Any], device_keys: KeyRing | None, report: CaseFileReport
) -> dict[str, tuple[str, int]]:
    """Check the chain heads and the chains; the SHA-256 and size of each media file hashed."""
    from evidence.verify import TreeError, verify_tree

    ranges_ok = True
    devices = manifest.get("devices")
    if not isinstance(devices, dict):
        report.add("bad-manifest", MANIFEST, "no devices")
        return {}
    for device, entry in devices.items():
        head = entry.get("head") if isinstance(entry, dict) else None
        if not isinstance(head, dict):
            report.add("bad-manifest", f"device {device}", "no chain head")
            ranges_ok = False
            continue
        seq = head.get("seq")
        rel = f"devices/{device}/records/{seq:010d}.json" if isinstance(seq, int) else None
        path = _Reader(root).resolve(rel) if rel else None
        if path is None:
            report.add("bad-manifest", f"device {device}", "unusable head")
            continue
        try:
            data = _Reader(root).read(path, MAX_JSON_BYTES)
        except OSError:
            report.add(
                "records-cut-off",
                f"device {device}",
                f"the manifest's head seq {seq} is not in the case file",
            )
            continue
        if hashlib.sha256(data).hexdigest() != head.get("hash"):
            report.add(
                "records-cut-off",
                f"device {device}",
                f"record seq {seq} is not the head the manifest names",
            )
    if not ranges_ok:
        return {}
    try:
        tree = verify_tree(root, device_keys)
    except TreeError as exc:
        report.add("unreadable", ".", exc.reason)
        return {}
    for v in tree.violations:
        report.add(f"record-{v.kind}", f"device {v.device} seq {v.seq}", v.detail)
    report.notes += tree.notes
    return tree.media_digests


def _check_receipts(
    reader: _Reader, manifest: dict[str, Any], receiver: Ed25519PublicKey, report: CaseFileReport
) -> None:
    from evidence.receipt import Receipt

    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    assert isinstance(files, dict)
    for rel in sorted(r for r in files if isinstance(r, str) and r.startswith("receipts/")):
        path = reader.resolve(rel)
        if path is None:
            continue
        try:
            receipt = Receipt.parse(reader.read(path, 1 << 16))
        except (OSError, EvidenceError, RecursionError):
            continue  # a missing or altered file is already named by the file check
        if not receipt.signature_valid(receiver):
            report.add("bad-receipt", rel, "the receipt's signature does not verify")


def _check_custody(
    reader: _Reader, manifest: dict[str, Any], receiver: Ed25519PublicKey, report: CaseFileReport
) -> None:
    try:
        head = TreeHead.from_dict(reader.json(reader.root / TREE_HEAD_FILE))
        entries = reader.json(reader.root / ENTRIES_FILE)
    except (OSError, EvidenceError, RecursionError) as exc:
        report.add("custody-unreadable", "custody/", str(exc))
        return
    if not head.verify(receiver):
        report.add("bad-signature", TREE_HEAD_FILE, "the tree head does not verify")
        return
    if manifest.get("tree_head") != head.to_dict():
        report.add("custody-mismatch", TREE_HEAD_FILE, "not the tree head the manifest names")
    report.tree_size = head.tree_size
    if not isinstance(entries, list):
        report.add("custody-unreadable", ENTRIES_FILE, "not a list")
        return
    root_bytes = head.root_bytes()
    for i, item in enumerate(entries):
        where = f"{ENTRIES_FILE}[{i}]"
        try:
            if not isinstance(item, dict) or not isinstance(item.get("entry"), dict):
                raise MerkleError("not an entry with a proof")
            index = item.get("index")
            if not isinstance(index, int) or isinstance(index, bool):
                raise MerkleError("index is not an integer")
            leaf = leaf_hash(canonical_bytes(item["entry"]))
            proof = parse_proof(item.get("proof"), "proof")
        except (EvidenceError, RecursionError) as exc:
            report.add("custody-unreadable", where, str(exc))
            continue
        if not verify_inclusion(leaf, index, head.tree_size, proof, root_bytes):
            report.add(
                "custody-entry-not-included",
                where,
                f"entry {index} is not in the signed custody tree of {head.tree_size}",
            )
            continue
        report.custody_entries += 1


def _check_anchors(
    manifest: dict[str, Any], keys: KeyRing, reader: _Reader, report: CaseFileReport
) -> None:
    devices = manifest.get("devices")
    if not isinstance(devices, dict):
        return
    for device, entry in devices.items():
        anchor = entry.get("anchor") if isinstance(entry, dict) else None
        if anchor is None:
            continue
        try:
            head = ChainHead.from_dict(anchor)
        except EvidenceError as exc:
            report.add("bad-anchor", f"device {device}", str(exc))
            continue
        key = keys.get(head.key) or _load_key(reader, f"devices/{device}/device.pub")
        if key is None or key_id(key) != head.key or not head.signature_valid(key):
            report.add(
                "bad-anchor", f"device {device}", "the chain head's signature does not verify"
            )
            continue
        report.notes.append(
            f"device {device} announced (signed) its chain reached seq {head.seq} at {head.utc}"
        )


# -- zip ----------------------------------------------------------------------------------------
def extract_zip(path: Path, into: Path) -> None:
    """Unpack a case-file zip safely: regular files only, names inside, bounded size."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > MAX_FILES:
                raise CaseFileError(path, f"more than {MAX_FILES} members")
            if sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
                raise CaseFileError(path, "uncompressed size too large")
            reader = _Reader(into)
            for info in infos:
                mode = info.external_attr >> 16
                if info.is_dir():
                    continue
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: a writer without Unix modes
                    raise CaseFileError(path, f"member {info.filename!r} is not a regular file")
                target = reader.resolve(info.filename)
                if target is None:
                    raise CaseFileError(path, f"member {info.filename!r} points outside")
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "xb") as dst:
                    while block := src.read(HASH_BLOCK):
                        dst.write(block)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CaseFileError(path, f"not a usable zip: {exc}") from exc


__all__ = [
    "CaseFileError",
    "CaseFileReport",
    "ChainHead",
    "Problem",
    "extract_zip",
    "is_case_file",
    "sign_manifest",
    "verify_case_file",
]


# -- command line (called from evidence.cli for case files) --------------------------------------
def run_cli(
    path: Path, receiver_key_files: list[Path], device_key_files: list[Path], as_json: bool
) -> int:
    """``bodycam-verify EXPORT``: 0 verified, 1 problems found, 2 unusable input. Prints which
    receiver key it trusted and why."""
    import json
    import sys
    import tempfile

    try:
        pinned = KeyRing.from_files(receiver_key_files) if receiver_key_files else None
        devices = KeyRing.from_files(device_key_files) if device_key_files else None
        if path.is_file():
            with tempfile.TemporaryDirectory(prefix="bodycam-verify-") as tmp:
                extract_zip(path, Path(tmp))
                report = verify_case_file(Path(tmp), receiver_keys=pinned, device_keys=devices)
                report.root = path
        else:
            report = verify_case_file(path, receiver_keys=pinned, device_keys=devices)
    except EvidenceError as exc:
        print(f"bodycam-verify: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        _print(report)
    return 0 if report.ok else 1


def _safe(text: object) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(text))


def _print(report: CaseFileReport) -> None:
    print(f"case file {_safe(report.root)}: case {_safe(report.case)}")
    print(f"receiver key trusted: {_safe(report.trusted_key)} ({_safe(report.trust)})")
    print(
        f"{report.files} files checked, {report.custody_entries} custody entries proven "
        f"in a signed tree of {report.tree_size}"
    )
    for note in report.notes:
        print(f"note: {_safe(note)}")
    if report.ok:
        print(f"OK: {_safe(report.root)} verifies: no problems")
        return
    for p in report.problems:
        print(f"PROBLEM {_safe(p)}")
    print(f"FAILED: {len(report.problems)} problem(s)")
