"""Benchmark: the custody log's Merkle tree against the bare hashing it cannot avoid.

Measures, in one run, medians over rounds:

* **tree build**: :class:`evidence.merkle.MerkleTree` over N leaf hashes (N - 1 inner node
  hashes plus list handling) against a baseline of exactly the same number of ``hashlib``
  SHA-256 calls over 65-byte inputs in a flat loop — the floor any implementation pays;
* **proofs**: K inclusion proofs generated and verified (RFC 9162 §2.1.3) on the built tree,
  against K × ceil(log2 N) bare SHA-256 calls (what a verifier alone must hash);
* **append**: ``receiver.custody.record_event`` into a real SQLite file (WAL,
  ``synchronous=FULL``), events per second, against plain ``INSERT`` of the same rows.

    python bench/bench_custody.py [--leaves 200000] [--proofs 1000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evidence.merkle import MerkleTree, leaf_hash, verify_inclusion  # noqa: E402


def _median(fn: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_tree(n: int, k: int, rounds: int) -> dict[str, float]:
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(n)]
    block = b"\x01" + bytes(64)

    def baseline_build() -> None:
        for _ in range(n - 1):
            hashlib.sha256(block).digest()

    tree = MerkleTree(leaves)
    root = tree.root()
    step = max(1, n // k)
    depth = max(1, (n - 1).bit_length())

    def proofs() -> None:
        for i in range(0, n, step):
            assert verify_inclusion(leaves[i], i, n, tree.inclusion(i), root)

    def baseline_proofs() -> None:
        for _ in range(0, n, step):
            for _ in range(depth):
                hashlib.sha256(block).digest()

    build = _median(lambda: MerkleTree(leaves), rounds)
    base = _median(baseline_build, rounds)
    prove = _median(proofs, rounds)
    base_p = _median(baseline_proofs, rounds)
    return {
        "leaves": n,
        "build_s": build,
        "build_baseline_s": base,
        "build_ratio": build / base,
        "proofs": len(range(0, n, step)),
        "proofs_s": prove,
        "proofs_baseline_s": base_p,
        "proofs_ratio": prove / base_p,
    }


def bench_append(events: int, rounds: int) -> dict[str, float]:
    from receiver.custody import record_event
    from receiver.store import connect

    def ours() -> None:
        with tempfile.TemporaryDirectory() as d:
            conn = connect(Path(d) / "r.db")
            conn.execute("BEGIN")
            for i in range(events):
                record_event(conn, "view", actor="bench", case="JY-1", seq=i)
            conn.execute("COMMIT")
            conn.close()

    def baseline() -> None:
        with tempfile.TemporaryDirectory() as d:
            conn = connect(Path(d) / "r.db")
            conn.execute("BEGIN")
            for i in range(events):
                conn.execute(
                    "INSERT INTO custody_log (idx, entry, leaf_hash, kind, utc) "
                    "VALUES (?, ?, ?, 'view', '')",
                    (i, '{"kind":"view"}', "0" * 64),
                )
            conn.execute("COMMIT")
            conn.close()

    t_ours, t_base = _median(ours, rounds), _median(baseline, rounds)
    return {
        "events": events,
        "append_s": t_ours,
        "append_baseline_s": t_base,
        "append_ratio": t_ours / t_base,
        "events_per_s": events / t_ours,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--leaves", type=int, default=200_000)
    p.add_argument("--proofs", type=int, default=1000)
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = {
        **bench_tree(args.leaves, args.proofs, args.rounds),
        **bench_append(args.events, args.rounds),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, value in result.items():
            print(f"{name:20s} {value:.4g}" if isinstance(value, float) else f"{name:20s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
