"""The custody log's Merkle tree against RFC 6962's published vectors, and proof properties."""

from __future__ import annotations

import pytest

from evidence.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# RFC 6962 reference data (the Certificate Transparency test vectors): entries, then the root
# for tree sizes 1..8, inclusion and consistency proofs
ENTRIES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
CONSISTENCY = [
    (
        2,
        8,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
LEAVES = [leaf_hash(e) for e in ENTRIES]


def test_roots_match_rfc6962_vectors() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_hash([]) == EMPTY_ROOT
    for n in range(1, 9):
        assert root_hash(LEAVES[:n]).hex() == ROOTS[n - 1], n


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_vectors(index: int, size: int, proof: list[str]) -> None:
    assert [p.hex() for p in inclusion_proof(LEAVES[:size], index)] == proof
    root = bytes.fromhex(ROOTS[size - 1])
    raw = [bytes.fromhex(p) for p in proof]
    assert verify_inclusion(LEAVES[index], index, size, raw, root)
    assert not verify_inclusion(LEAVES[index], index ^ 1, size, raw, root)
    assert not verify_inclusion(LEAVES[index], index, size, raw[:-1], root)


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_vectors(first: int, second: int, proof: list[str]) -> None:
    assert [p.hex() for p in consistency_proof(LEAVES[:second], first)] == proof
    r1, r2 = bytes.fromhex(ROOTS[first - 1]), bytes.fromhex(ROOTS[second - 1])
    raw = [bytes.fromhex(p) for p in proof]
    assert verify_consistency(first, second, r1, r2, raw)
    forged = bytes.fromhex(ROOTS[first - 2]) if first > 1 else EMPTY_ROOT
    assert not verify_consistency(first, second, forged, r2, raw)


def test_every_proof_in_every_tree_up_to_40_verifies_and_mangled_ones_do_not() -> None:
    leaves = [leaf_hash(bytes([i, i * 7 % 256])) for i in range(40)]
    roots = [root_hash(leaves[:n]) for n in range(41)]
    for n in range(1, 41):
        for i in range(n):
            proof = inclusion_proof(leaves[:n], i)
            assert verify_inclusion(leaves[i], i, n, proof, roots[n])
            assert not verify_inclusion(leaves[(i + 1) % n], i, n, proof, roots[n]) or n == 1
            assert not verify_inclusion(leaves[i], i, n, [*proof, EMPTY_ROOT], roots[n])
        for m in range(0, n + 1):
            proof = consistency_proof(leaves[:n], m)
            assert verify_consistency(m, n, roots[m], roots[n], proof), (m, n)
            if 0 < m < n:
                bad = [bytes(32), *proof[1:]]
                assert not verify_consistency(m, n, roots[m], roots[n], bad)
                assert not verify_consistency(m, n, roots[m], roots[n], proof[:-1])
                assert not verify_consistency(m, n, roots[m - 1], roots[n], proof)


def test_malformed_inputs_are_false_not_exceptions() -> None:
    root = bytes.fromhex(ROOTS[7])
    assert not verify_inclusion(LEAVES[0], 8, 8, [], root)
    assert not verify_inclusion(LEAVES[0], -1, 8, [], root)
    assert not verify_inclusion(b"short", 0, 8, [], root)
    assert not verify_consistency(8, 6, root, root, [])
    assert not verify_consistency(6, 8, root, root, [])
    assert verify_consistency(0, 8, EMPTY_ROOT, root, [])
