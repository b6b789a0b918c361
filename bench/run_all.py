"""All benchmarks in one command: a table of figures against their baselines, and a JSON file.

    python bench/run_all.py [--quick] [--json-out bench-results.json] [--skip upload,docks]

Each line is a figure measured in this run against a baseline measured in the same run on the
same bytes (medians of interleaved rounds; see each bench_*.py for the method):

===============  ==============================================  =============================
bench            ours                                            baseline
===============  ==============================================  =============================
hashing          ``evidence.media.digest_file`` (whole + chunks)  ``openssl dgst -sha256``
sealing          live write + ``RecordingSpool.seal`` (bench_seal)  the primitives the code runs
upload           dock upload, plaintext / encrypted               ``mosquitto_pub -l``, 256 KiB
verification     ``verify_tree`` and ``bodycam-verify`` (bench_verify)  ``openssl dgst -sha256``
many devices     N devices docking at once (bench_docks)          one device docking alone
===============  ==============================================  =============================

Throughput ratios are ours / baseline (higher is better); time ratios baseline-relative cost
(lower is better): the ``goal`` column says which and what issue 14 asks for.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))


def bench_hashing(rounds: int, mib: int) -> dict[str, Any]:
    """``digest_file`` (the project's hashing: whole file + per-chunk) vs ``openssl dgst``."""
    from evidence.media import digest_file

    with tempfile.TemporaryDirectory(prefix="bench-hash-", dir=ROOT) as tmp:
        files = []
        for i in range(4):
            path = Path(tmp) / f"f{i}"
            with path.open("wb") as f:
                for _ in range(mib // 4):
                    f.write(os.urandom(1 << 20))
            files.append(path)
        for path in files:
            path.read_bytes()  # warm the page cache for both
        ours, base = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            for path in files:
                digest_file(path)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            subprocess.run(
                ["openssl", "dgst", "-sha256", *map(str, files)], check=True, capture_output=True
            )
            base.append(time.perf_counter() - start)
    o, b = statistics.median(ours), statistics.median(base)
    return {
        "bytes": mib << 20,
        "ours_mib_per_s": round(mib / o, 1),
        "baseline_mib_per_s": round(mib / b, 1),
        "ratio": round(b / o, 2),
    }


def run_json(cmd: list[str], timeout_s: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, *cmd, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    return dict(json.loads(proc.stdout))


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(bench, ours, baseline, ratio, goal) lines of the table."""
    out = []
    if h := results.get("hashing"):
        out.append(
            (
                "hashing",
                f"{h['ours_mib_per_s']} MiB/s",
                f"openssl dgst {h['baseline_mib_per_s']} MiB/s",
                f"{h['ratio']}x",
                "throughput (one read; 2 SHA-256 vs 1)",
            )
        )
    if s := results.get("sealing"):
        for name in ("plaintext", "encrypted"):
            r = s[name]
            out.append(
                (
                    f"sealing {name}",
                    f"{r['seal_ms_per_segment']} ms/seg (CPU {r['seal_cpu_ms_per_segment']})",
                    f"primitives {r['primitives_ms_per_segment']} ms "
                    f"(CPU {r['primitives_cpu_ms_per_segment']})",
                    f"{r['ratio']}x wall, {r['cpu_ratio']}x CPU",
                    "cost; goal <= 1.2x" if name == "encrypted" else "cost",
                )
            )
    for name in ("upload_plaintext", "upload_encrypted"):
        if u := results.get(name):
            out.append(
                (
                    name.replace("_", " "),
                    f"{u['upload_mib_per_s_median']} MiB/s",
                    f"mosquitto_pub -l {u['baseline_mib_per_s_median']} MiB/s",
                    f"{u['ratio_upload_to_baseline_median']}x "
                    f"(CPU {u['cpu_ratio_baseline_to_upload_median']}x)",
                    "throughput; goal >= 0.8x",
                )
            )
    if v := results.get("verification"):  # bench_verify.py's --json
        speed = v.get("mb_per_s", {})
        out.append(
            (
                "verification",
                f"verify_tree {speed.get('verify', 0):.0f} MB/s "
                f"(bodycam-verify process {speed.get('cli', 0):.0f})",
                f"openssl dgst {speed.get('openssl', 0):.0f} MB/s",
                f"{v.get('ratio_vs_openssl', 0):.2f}x "
                f"(per round {v.get('ratio_vs_openssl_per_round', 0):.2f}x; "
                f"process {v.get('cli_ratio_vs_openssl', 0):.2f}x)",
                "throughput; goal >= 0.8x",
            )
        )
    if d := results.get("docks"):
        for n in d["runs"]:
            out.append(
                (
                    f"docks N={n['devices']}",
                    f"{n['aggregate_mib_per_s']} MiB/s, lost {n['lost']}, "
                    f"dup {n['duplicate_chunks']}",
                    f"1 device {d['single_mib_per_s']} MiB/s",
                    f"{n['aggregate_vs_single']}x",
                    "aggregate; goal >= 0.8x, 0 loss",
                )
            )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and bytes (a smoke run)")
    p.add_argument("--json-out", type=Path, default=Path("bench-results.json"))
    p.add_argument(
        "--skip", default="", help="comma-separated: hashing,sealing,upload,verify,docks"
    )
    p.add_argument("--docks", default="1,10,25", help="device counts for bench_docks")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    rounds = 3 if args.quick else 5
    results: dict[str, Any] = {"cpus": os.cpu_count(), "quick": args.quick}
    errors: list[str] = []

    def step(name: str, fn: Any) -> None:
        if name.split("_")[0] in skip:
            return
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = fn()
        except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
            errors.append(f"{name}: {exc}")
            print(f"[run_all] {name} failed: {exc}", file=sys.stderr)

    step("hashing", lambda: bench_hashing(rounds, 64 if args.quick else 256))
    seal_args = ["bench/bench_seal.py", "--rounds", str(rounds)]
    step("sealing", lambda: run_json(seal_args, 1800))
    upload = ["bench/bench_upload.py", "--rounds", str(rounds)]
    # the README's figures: 32 segments of 8 MiB (256 MiB) per round
    upload += ["--segments", "8"] if args.quick else ["--segments", "32", "--segment-mib", "8"]
    step("upload_plaintext", lambda: run_json(upload, 3600))
    step("upload_encrypted", lambda: run_json([*upload, "--encrypted"], 3600))
    if (BENCH / "bench_verify.py").exists():  # the verification bench (issue 14.5)
        verify_args = ["bench/bench_verify.py", "--rounds", str(rounds)]
        if args.quick:
            verify_args += ["--files", "8"]
        step("verify", lambda: run_json(verify_args, 3600))
        if "verify" in results:
            results["verification"] = results.pop("verify")
    else:
        results["verification"] = None
    docks = ["bench/bench_docks.py", "--devices", args.docks]
    docks += ["--segments", "2"] if args.quick else ["--segments", "8", "--segment-mib", "8"]
    step("docks", lambda: run_json(docks, 3600))
    results["errors"] = errors
    args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    table = rows(results)
    widths = [max(len(r[i]) for r in [("bench", "ours", "baseline", "ratio", "goal"), *table])
              for i in range(5)]  # fmt: skip
    for r in [("bench", "ours", "baseline", "ratio", "goal"), *table]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"JSON: {args.json_out}")
    for e in errors:
        print(f"failed: {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
