"""Benchmark: ``bodycam-verify``'s work against ``openssl dgst -sha256`` over the same files.

Builds one evidence tree (a device chain whose segments are random, non-compressible media
files), then times, in interleaved rounds and with a warm page cache for all:

* **baseline**: ``openssl dgst -sha256`` of every media file (one process, the fastest standard
  hashing tool here: SHA-NI through OpenSSL);
* **context**: ``sha256sum`` of the same files;
* **verify**: ``verify_tree`` of the whole tree with a trusted key, as ``bodycam-verify`` runs
  it (signatures, hash chain, sessions, canonical-file check, whole and per-chunk media digests,
  files hashed in parallel threads).

Reports the medians and the ratio baseline/verify (≥ 1 means verification is faster than
hashing the media once with openssl; the goal is ≥ 0.8). The verifier computes twice the SHA-256
work of the baseline (whole-file and per-chunk digests of every byte) and spreads it over every
core; openssl uses one.

    python bench/bench_verify.py [--files 24] [--mib 8] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evidence import layout  # noqa: E402
from evidence.keys import KeyRing, generate_signing_key  # noqa: E402
from evidence.testing import SessionPlan  # noqa: E402
from evidence.verify import verify_tree  # noqa: E402

DEVICE = "BENCH-VERIFY"


def build_tree(base: Path, files: int, mib: int) -> tuple[Path, KeyRing]:
    media = []
    for i in range(files):
        path = base / "src" / f"clip{i:03d}.ts"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(mib << 20))
        media.append(path)
    key = generate_signing_key()
    root = base / "tree"
    per_session = 4
    for start in range(0, files, per_session):
        # one session per group of files, all in one device chain
        build_chain_part(root, key, media[start : start + per_session])
    shutil.rmtree(base / "src")
    return root, KeyRing([key.public_key()])


_CLOCK: Any = None


def build_chain_part(root: Path, key: Any, media: list[Path]) -> None:
    global _CLOCK
    from evidence.chain import DeviceChain
    from evidence.testing import SteppingClock, write_session

    _CLOCK = _CLOCK or SteppingClock()
    write_session(DeviceChain(root, DEVICE, key), media, clock=_CLOCK, plan=SessionPlan())


def media_files(root: Path) -> list[str]:
    return [str(p) for p in sorted(layout.media_dir(root, DEVICE).iterdir())]


def timed(fn: Any) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process and its children, user + system)."""
    before = _cpu()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, _cpu() - before


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_tool(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def measure(root: Path, ring: KeyRing, rounds: int) -> dict[str, Any]:
    files = media_files(root)
    files_n = len(files)
    total = sum(Path(f).stat().st_size for f in files)
    candidates = {
        "openssl": lambda: run_tool(["openssl", "dgst", "-sha256", *files]),
        "sha256sum": lambda: run_tool(["sha256sum", *files]),
        "verify": lambda: _verify(root, ring),
    }
    for fn in candidates.values():  # warm the page cache and the code paths
        fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    cpu: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            wall, used = timed(fn)
            times[name].append(wall)
            cpu[name].append(used)
    med = {name: statistics.median(t) for name, t in times.items()}
    med_cpu = {name: statistics.median(t) for name, t in cpu.items()}
    cpus = len(os.sched_getaffinity(0))
    return {
        "files": len(files),
        "media_bytes": total,
        "rounds": rounds,
        "cpus": cpus,
        "load_average_1min": os.getloadavg()[0],  # other work on the machine skews the ratio
        "median_s": med,
        "mb_per_s": {name: total / 1e6 / s for name, s in med.items()},
        "median_cpu_s": med_cpu,
        "ratio_vs_openssl": med["openssl"] / med["verify"],
        # CPU work per byte, independent of other load: openssl hashes once, the verifier twice
        # (whole + per chunk); on idle cores the verifier's threads divide its wall time by up
        # to the number of cores
        "cpu_ratio_vs_openssl": med_cpu["openssl"] / med_cpu["verify"],
        "idle_projection_vs_openssl": med_cpu["openssl"] / med_cpu["verify"] * min(cpus, files_n),
        "ratio_vs_sha256sum": med["sha256sum"] / med["verify"],
        "goal": 0.8,
        "goal_met": med["openssl"] / med["verify"] >= 0.8,
        "all_s": times,
    }


def _verify(root: Path, ring: KeyRing) -> None:
    report = verify_tree(root, ring)
    if not report.ok:
        raise SystemExit(f"benchmark tree does not verify: {report.violations[:3]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=24)
    p.add_argument("--mib", type=int, default=8, help="size of each media file")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        root, ring = build_tree(Path(tmp), args.files, args.mib)
        result = measure(root, ring, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    med, rate = result["median_s"], result["mb_per_s"]
    print(f"{result['files']} files, {result['media_bytes'] / 1e6:.0f} MB, {result['cpus']} CPUs, "
          f"medians of {result['rounds']} interleaved rounds, "
          f"load average {result['load_average_1min']:.1f}")  # fmt: skip
    for name in ("openssl", "sha256sum", "verify"):
        used = result["median_cpu_s"][name]
        print(f"  {name:<10} {med[name]:8.3f} s  {rate[name]:8.0f} MB/s  cpu {used:6.3f} s")
    print(f"verify vs openssl dgst -sha256: {result['ratio_vs_openssl']:.2f}x (goal >= 0.8)")
    print(f"verify vs sha256sum:            {result['ratio_vs_sha256sum']:.2f}x")
    print(f"CPU per byte, openssl/verify:   {result['cpu_ratio_vs_openssl']:.2f}x; on idle cores "
          f"that projects to {result['idle_projection_vs_openssl']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
