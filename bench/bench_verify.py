"""Benchmark: ``bodycam-verify``'s work against ``openssl dgst -sha256`` over the same files.

Builds one evidence tree (a device chain whose segments are random, non-compressible media
files), then times, in interleaved rounds (the order rotates each round) and with a warm page
cache for all:

* **baseline**: ``openssl dgst -sha256`` of every media file in one invocation (the fastest
  standard hashing tool here: SHA-NI through OpenSSL, one process, one core);
* **context**: ``sha256sum`` of the same files, and the same ``openssl dgst -sha256`` split over
  one process per CPU (``xargs -P``), what the baseline could do on every core;
* **verify**: ``verify_tree`` of the whole tree with a trusted key, in this process
  (signatures, hash chain, sessions, canonical-file check, the media digests, files hashed in
  parallel threads);
* **cli**: the ``bodycam-verify`` command on the same tree, a new Python process each time, so
  it includes the interpreter's start and imports (a fixed cost), byte-code compiled as an
  installed package is (:func:`installed_python_env`).

Reports the medians, the ratio baseline/verify of the medians and the median of the per-round
ratios (each round's candidates ran back to back, so that ratio is the steadier one on a shared
machine); ≥ 1 means verification is faster than hashing the media once with openssl; the goal
is ≥ 0.8. Like the baseline, the verifier hashes every media byte once when the tree is intact
(the per-chunk digests are computed only for a file that does not match its record).

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


def run_tool(cmd: list[str], stdin: str | None = None, env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, input=stdin, text=True, env=env)


def installed_python_env(cache: Path) -> dict[str, str]:
    """The environment of a Python program as installed: byte-code compiled once (pip compiles
    it at installation), here into ``cache``, even where PYTHONDONTWRITEBYTECODE is set (it
    is on some build machines, and then every start compiled every module again)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def measure(root: Path, ring: KeyRing, rounds: int, key_file: Path) -> dict[str, Any]:
    env = installed_python_env(root.parent / "pycache")
    files = media_files(root)
    files_n = len(files)
    total = sum(Path(f).stat().st_size for f in files)
    cpus = len(os.sched_getaffinity(0))
    per_process = str(max(1, -(-files_n // cpus)))
    cli = [sys.executable, "-m", "evidence.cli", str(root), "--key", str(key_file)]
    candidates = {
        "openssl": lambda: run_tool(["openssl", "dgst", "-sha256", *files]),
        "openssl_parallel": lambda: run_tool(
            ["xargs", "-0", "-P", str(cpus), "-n", per_process, "openssl", "dgst", "-sha256"],
            "\0".join(files),
        ),
        "sha256sum": lambda: run_tool(["sha256sum", *files]),
        "verify": lambda: _verify(root, ring),
        "cli": lambda: run_tool(cli, env=env),  # its first (warm-up) run compiles
    }
    for fn in candidates.values():  # warm the page cache and the code paths
        fn()
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    cpu: dict[str, list[float]] = {name: [] for name in candidates}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            wall, used = timed(candidates[name])
            times[name].append(wall)
            cpu[name].append(used)
    med = {name: statistics.median(t) for name, t in times.items()}
    med_cpu = {name: statistics.median(t) for name, t in cpu.items()}

    def per_round(name: str) -> float:
        return statistics.median(b / o for b, o in zip(times["openssl"], times[name], strict=True))

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
        "ratio_vs_openssl_per_round": per_round("verify"),
        "cli_ratio_vs_openssl": med["openssl"] / med["cli"],
        "cli_ratio_vs_openssl_per_round": per_round("cli"),
        "ratio_vs_openssl_parallel": med["openssl_parallel"] / med["verify"],
        # CPU work per byte, independent of other load: both hash every byte once; on idle
        # cores the verifier's threads divide its wall time by up to the number of cores
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
        key_file = layout.device_dir(root, DEVICE) / layout.DEVICE_PUBLIC_KEY
        result = measure(root, ring, args.rounds, key_file)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    med, rate = result["median_s"], result["mb_per_s"]
    print(f"{result['files']} files, {result['media_bytes'] / 1e6:.0f} MB, {result['cpus']} CPUs, "
          f"medians of {result['rounds']} interleaved rounds, "
          f"load average {result['load_average_1min']:.1f}")  # fmt: skip
    for name in ("openssl", "openssl_parallel", "sha256sum", "verify", "cli"):
        used = result["median_cpu_s"][name]
        print(f"  {name:<16} {med[name]:8.3f} s  {rate[name]:8.0f} MB/s  cpu {used:6.3f} s")
    print(f"verify vs openssl dgst -sha256: {result['ratio_vs_openssl']:.2f}x of medians, "
          f"{result['ratio_vs_openssl_per_round']:.2f}x per round (goal >= 0.8)")  # fmt: skip
    print(f"bodycam-verify (new process):   {result['cli_ratio_vs_openssl']:.2f}x of medians, "
          f"{result['cli_ratio_vs_openssl_per_round']:.2f}x per round")  # fmt: skip
    print(f"verify vs openssl on all CPUs:  {result['ratio_vs_openssl_parallel']:.2f}x")
    print(f"verify vs sha256sum:            {result['ratio_vs_sha256sum']:.2f}x")
    print(f"CPU per byte, openssl/verify:   {result['cpu_ratio_vs_openssl']:.2f}x; on idle cores "
          f"that projects to {result['idle_projection_vs_openssl']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
