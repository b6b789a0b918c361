"""The custody log's Merkle tree (RFC 9162 §2.1, the structure of RFC 6962) and its signed heads.

Hashing: a leaf is ``SHA-256(0x00 || entry)``, an inner node ``SHA-256(0x01 || left || right)``;
a tree of ``n > 1`` leaves splits at ``k``, the largest power of two smaller than ``n``; the empty
tree's hash is ``SHA-256("")``. Inclusion proofs (audit paths) and consistency proofs are
generated and verified exactly as RFC 9162 §2.1.3 and §2.1.4 describe, so any CT-compatible
verifier checks ours and ``tests/test_custody_merkle.py`` checks ours against RFC 6962's
published vectors.

A :class:`TreeHead` is the receiver's signed statement "the log had ``tree_size`` entries with
root ``root`` at ``utc``", signed (Ed25519 over the RFC 8785 bytes of every other member) with
the receiver's receipt key. It may carry ``anchors``: the newest signed chain heads the devices
announced (see :mod:`evidence.casefile`), so that a cut-off tail of a device chain is detectable
by anyone holding the head.

Failure posture: the ``verify_*`` functions return False for anything that does not verify
(wrong sizes, malformed hashes, short proofs), never raise; proof generation raises
:class:`MerkleError` for impossible requests (an index outside the tree); parsing a tree head
raises :class:`MerkleError` naming the member that is wrong. stdlib + cryptography only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from evidence.errors import EvidenceError
from evidence.keys import key_id
from evidence.signing import CanonicallySigned, sign_canonical

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
TREE_HEAD_TYPE = "custody-tree-head"
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_TREE_SIZE = 2**53 - 1


class MerkleError(EvidenceError):
    """A proof cannot be produced or a tree head is malformed; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """The tree over a list of leaf hashes, built once (O(n)); roots of any prefix, inclusion
    and consistency proofs are then O(log² n) each, so an export proving many entries of a
    large log stays fast. Complete aligned subtrees are read from the stored levels."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            prev = self.levels[-1]
            self.levels.append(
                [node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)]
            )

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def range_hash(self, lo: int, hi: int) -> bytes:
        """MTH of leaves ``lo`` .. ``hi - 1``."""
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            k = n.bit_length() - 1
            return self.levels[k][lo >> k]
        k = _split(n)
        return node_hash(self.range_hash(lo, lo + k), self.range_hash(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        return self.range_hash(0, self.size if size is None else self._check_size(size))

    def _check_size(self, size: int) -> int:
        if not 0 <= size <= self.size:
            raise MerkleError(f"tree size {size} is larger than the current {self.size}")
        return size

    def inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of the first ``size`` leaves
        (RFC 9162 §2.1.3.1)."""
        n = self.size if size is None else self._check_size(size)
        if not 0 <= index < n:
            raise MerkleError(f"leaf {index} is outside a tree of {n}")
        return self._path(index, 0, n)

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*self._path(m, lo, lo + k), self.range_hash(lo + k, hi)]
        return [*self._path(m - k, lo + k, hi), self.range_hash(lo, lo + k)]

    def consistency(self, first: int, size: int | None = None) -> list[bytes]:
        """Proof that the first ``first`` leaves' tree is a prefix of the first ``size``'s."""
        n = self.size if size is None else self._check_size(size)
        if not 0 <= first <= n:
            raise MerkleError(f"tree size {first} is larger than the current {n}")
        if first in (0, n):
            return []
        return self._subproof(first, 0, n, True)

    def _subproof(self, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [self.range_hash(lo, hi)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, complete), self.range_hash(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, False), self.range_hash(lo, lo + k)]


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (not entries)."""
    return MerkleTree(leaves).root()


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of all ``leaves``."""
    return MerkleTree(leaves).inclusion(index)


def consistency_proof(leaves: Sequence[bytes], first: int) -> list[bytes]:
    """Proof that the tree of the first ``first`` leaves is a prefix of all ``leaves``."""
    return MerkleTree(leaves).consistency(first)


def _hashes_ok(*values: Any) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show leaf hash ``leaf`` at ``index`` under ``root``?"""
    if not isinstance(proof, (list, tuple)) or not _hashes_ok(leaf, root, *proof):
        return False
    if not (isinstance(index, int) and isinstance(tree_size, int) and 0 <= index < tree_size):
        return False
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (``first``, ``first_root``) a prefix of
    (``second``, ``second_root``)? Equal sizes need equal roots and an empty proof; the empty
    tree is a prefix of every tree (empty proof)."""
    if not isinstance(proof, (list, tuple)) or not _hashes_ok(first_root, second_root, *proof):
        return False
    if not (isinstance(first, int) and isinstance(second, int) and 0 <= first <= second):
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first root is the path's start
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


def parse_hash(value: Any, what: str) -> bytes:
    """A lower-case hex SHA-256 from JSON, as bytes."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise MerkleError(f"{what} is not a 64-digit lower-case hex hash")
    return bytes.fromhex(value)


def parse_proof(value: Any, what: str, *, limit: int = 64) -> list[bytes]:
    """A proof from JSON (a list of hex hashes, at most ``limit`` long: 2**64 leaves)."""
    if not isinstance(value, list) or len(value) > limit:
        raise MerkleError(f"{what} is not a list of at most {limit} hashes")
    return [parse_hash(v, f"{what}[{i}]") for i, v in enumerate(value)]


@dataclass
class TreeHead(CanonicallySigned):
    """A signed tree head: the custody log's size and root at a time, by the receiver key."""

    log: str  # key id of the receiver key that signs it
    tree_size: int
    root: str  # hex
    utc: str
    anchors: list[dict[str, Any]] = field(default_factory=list)
    sig: str = ""

    def unsigned_dict(self) -> dict[str, Any]:
        return {
            "v": 1,
            "type": TREE_HEAD_TYPE,
            "log": self.log,
            "tree_size": self.tree_size,
            "root": self.root,
            "utc": self.utc,
            "anchors": self.anchors,
        }

    @classmethod
    def create(
        cls,
        key: Ed25519PrivateKey,
        tree_size: int,
        root: bytes,
        utc: str,
        anchors: list[dict[str, Any]] | None = None,
    ) -> TreeHead:
        head = cls(key_id(key.public_key()), tree_size, root.hex(), utc, list(anchors or []))
        head.sig = sign_canonical(head.unsigned_dict(), key)
        return head

    def root_bytes(self) -> bytes:
        return bytes.fromhex(self.root)

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        """True when the key is the one named in ``log`` and the signature verifies."""
        return key_id(public_key) == self.log and self.signature_valid(public_key)

    @classmethod
    def from_dict(cls, d: Any) -> TreeHead:
        if not isinstance(d, dict):
            raise MerkleError("a tree head is not a JSON object")
        if d.get("v") != 1 or d.get("type") != TREE_HEAD_TYPE:
            raise MerkleError(f"not a version-1 {TREE_HEAD_TYPE}")
        extra = set(d) - {"v", "type", "log", "tree_size", "root", "utc", "anchors", "sig"}
        if extra:
            raise MerkleError(f"tree head has unknown members {sorted(extra)}")
        size = d.get("tree_size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_TREE_SIZE:
            raise MerkleError("tree head tree_size is not a non-negative integer")
        parse_hash(d.get("root"), "tree head root")
        for name in ("log", "utc", "sig"):
            if not isinstance(d.get(name), str):
                raise MerkleError(f"tree head {name} is not a string")
        anchors = d.get("anchors")
        if not isinstance(anchors, list) or not all(isinstance(a, dict) for a in anchors):
            raise MerkleError("tree head anchors is not a list of objects")
        return cls(d["log"], size, d["root"], d["utc"], anchors, d["sig"])
