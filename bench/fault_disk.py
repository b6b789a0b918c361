"""Fault counts: the disk fills up on the device mid-recording, and on the receiver mid-ingest.

Both run on a real small filesystem (a private tmpfs, :mod:`smallfs`), never on a mock.

**Device** (``--side device``): each round starts ``bodycam-agent simulate --realtime`` on a spool
that lives on a small tmpfs, waits until it records, and at a random moment (seeded, uniform in
``[--min-s, --max-s]``) fills the filesystem to the last byte; after a random hold (uniform in
``[--hold-min-s, --hold-max-s]``) the filler is removed, as when the dock frees receipted media.
The agent must go on by itself: the round's session ends on schedule. Reported per run:

* **sealed segments lost**: segments sealed before any fill that are gone or altered at the end;
* **chain**: :func:`evidence.verify.verify_tree` must pass after every round, and every break
  between a session's segments must be covered by a signed gap (**unexplained holes**: 0); a
  fill that came while no bytes were written (the page cache took them) interrupts nothing;
* **parts left unsealed**: media the agent could not seal during the run (left for recovery);
* **resumed**: interrupted rounds whose session sealed a segment after the storage gap;
* **media lost per fill**: the spans of the round's ``storage`` gaps, in seconds (median, p90,
  max; 0 for a fill that interrupted nothing);
* **agent exits**: rounds whose agent did not finish its session and exit 0 (a crash).

**Receiver** (``--side receiver``): one dock (real Mosquitto, real receiver) whose data directory
(object store and database) is a small tmpfs; two devices upload, and at a random moment into the
upload the filesystem is filled; after the hold it is freed and the uploads go on to the end.
Reported: **receipts without data** (a receipt a device holds whose record or object the receiver
does not hold intact; must be 0), objects that fail ``reverify``, **not receipted** at the end,
the receiver's log lines about the full disk and its tracebacks (must be 0).

Loopback only, bounded in time (each round and upload has a timeout).

    python bench/fault_disk.py --side device --fills 20 [--encrypted] [--json]
    python bench/fault_disk.py --side receiver --fills 5 [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import smallfs  # noqa: E402

from evidence import layout  # noqa: E402
from evidence.encryption import generate_encryption_key, save_encryption_public_key  # noqa: E402
from evidence.records import Record, RecordType, parse_utc  # noqa: E402
from evidence.verify import verify_tree  # noqa: E402

DEVICE_CONFIG = """
[device]
{encryption}
[hardware]
backend = "simulated"
[capture]
backend = "simulated"
width = 320
height = 240
fps = 15
pre_event_s = 1.0
segment_duration_s = 2.0
[checks]
min_recording_min = 0.2
warn_recording_min = 0.3
estimated_bitrate_bits_per_s = 400000
[recording]
storage_stop_bytes = {reserve}
[speech]
enabled = false
"""
ROUND_S = 16
HOLE_SLACK = timedelta(seconds=1)
"""A gap explains a break between segments if it covers it to within this."""
START_TIMEOUT_S = 120.0


def _records(spool: Path) -> list[Record]:
    out = []
    for device in layout.iter_devices(spool):
        for path in layout.iter_record_files(spool, device):
            if layout.seq_from_name(path) is not None:
                out.append(Record.load(path))
    return out


def _sealed(spool: Path) -> dict[str, str]:
    """segment record file -> its media path, as on disk now."""
    out = {}
    for device in layout.iter_devices(spool):
        for path in layout.iter_record_files(spool, device):
            if layout.seq_from_name(path) is None:
                continue
            try:
                record = Record.load(path)
            except Exception:
                continue  # being written
            if record.type == RecordType.SEGMENT:
                out[f"{device}/{path.name}"] = f"{device}/{record.body['file']}"
    return out


def _wait_line(proc: subprocess.Popen[str], needle: str) -> str | None:
    """The agent's first stdout line holding ``needle`` (None if it ended first)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return None
        if needle in line:
            return line
    return None


def _device_round(
    spool: Path, config: Path, disk: Path, log: Path, rng: random.Random, args: argparse.Namespace
) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "simulate", "--spool", str(spool),
         "--seconds", str(ROUND_S), "--config", str(config), "--realtime"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("a"), text=True,
    )  # fmt: skip
    out: dict[str, Any] = {"recorded": False}
    filler = disk / "filler"
    try:
        line = _wait_line(proc, "recording: session ")
        if line is None:
            return out
        out["recorded"] = True
        out["session"] = line.split("recording: session ", 1)[1].split()[0]
        time.sleep(rng.uniform(args.min_s, args.max_s))  # the random moment of the fill
        out["sealed_before"] = _sealed(spool)
        out["filled_at"] = datetime.now(UTC)
        out["filled_bytes"] = smallfs.fill(filler)
        time.sleep(rng.uniform(args.hold_min_s, args.hold_max_s))
        smallfs.release(filler)
        out["freed_at"] = datetime.now(UTC)
        rest, _ = proc.communicate(timeout=ROUND_S + START_TIMEOUT_S)
        out["exit"] = proc.returncode
        out["closed"] = "closed" in rest or "segments" in rest
    finally:
        smallfs.release(filler)
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    out["parts_left"] = sorted(p.name for p in (spool / "state" / "parts").glob("*.part"))
    return out


def run_device(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Inside the namespace: mount, run the rounds, analyse."""
    rng = random.Random(args.seed)
    disk = work / "disk"
    # room for every round's media (the filler takes whatever is left at each fill)
    smallfs.mount_tmpfs(disk, (args.size_mib + 3 * args.fills) << 20)
    spool = disk / "spool"
    encryption = ""
    if args.encrypted:
        pub = work / "receiver-encryption.pub"
        save_encryption_public_key(pub, generate_encryption_key().public_key())
        encryption = f'encryption_key_file = "{pub}"'
    config = work / "agent.toml"
    config.write_text(
        DEVICE_CONFIG.format(encryption=encryption, reserve=args.reserve_kib << 10), "utf-8"
    )
    log = work / "agent.log"
    rounds = []
    for _ in range(args.fills):
        rounds.append(_device_round(spool, config, disk, log, rng, args))
        _check_round(spool, rounds[-1])
    return analyse_device(spool, rounds, log)


def _check_round(spool: Path, round_: dict[str, Any]) -> None:
    """After each round: the whole chain verifies and what was sealed before the fill is there."""
    verdict = verify_tree(spool)
    round_["verifies"] = verdict.ok
    round_["violations"] = [str(v) for v in verdict.violations][:5]
    sealed = _sealed(spool)
    round_["sealed_lost"] = [
        name
        for name, media in round_.get("sealed_before", {}).items()
        if name not in sealed or not layout.media_path(spool, *media.split("/", 1)).exists()
    ]


def _span_s(start: str, end: str) -> float:
    return (parse_utc(end) - parse_utc(start)).total_seconds()


def _holes(segments: list[Record], gaps: list[Record]) -> int:
    """Breaks of more than a second between consecutive segments that no gap covers."""
    holes = 0
    ordered = sorted(segments, key=lambda r: int(r.body["index"]))
    for prev, nxt in itertools.pairwise(ordered):
        start, end = parse_utc(prev.body["utc_end"]), parse_utc(nxt.body["utc_start"])
        if (end - start).total_seconds() <= 1.0:
            continue
        covered = any(
            parse_utc(g.body["start_utc"]) <= start + HOLE_SLACK
            and parse_utc(g.body["end_utc"]) >= end - HOLE_SLACK
            for g in gaps
        )
        holes += not covered
    return holes


def analyse_device(spool: Path, rounds: list[dict[str, Any]], log: Path) -> dict[str, Any]:
    records = _records(spool)
    lost_s: list[float] = []
    resumed = interrupted = holes = gaps_total = 0
    for round_ in rounds:
        if not round_.get("recorded"):
            continue
        mine = [r for r in records if r.session == round_["session"]]
        gaps = [r for r in mine if r.type == RecordType.GAP]
        storage = [g for g in gaps if g.body["cause"] == "storage"]
        segments = [r for r in mine if r.type == RecordType.SEGMENT]
        gaps_total += len(storage)
        holes += _holes(segments, gaps)
        lost_s.append(sum(_span_s(g.body["start_utc"], g.body["end_utc"]) for g in storage))
        if storage:
            interrupted += 1
            last_end = max(parse_utc(g.body["end_utc"]) for g in storage)
            resumed += any(parse_utc(r.body["utc_start"]) >= last_end for r in segments)
    text = log.read_text("utf-8", errors="replace") if log.exists() else ""
    fills = sum(1 for r in rounds if r.get("recorded"))
    seen = {name for r in rounds for name in r.get("sealed_before", {})}

    def q(p: float) -> float | None:
        ordered = sorted(lost_s)
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3) if ordered else None

    return {
        "side": "device",
        "fills": fills,
        "rounds_not_recording": len(rounds) - fills,
        "sealed_segments_seen": len(seen),
        "sealed_segments_lost": len({n for r in rounds for n in r.get("sealed_lost", [])}),
        "chain_verifies_each_round": all(r.get("verifies") for r in rounds),
        "violations": [v for r in rounds for v in r.get("violations", [])][:5],
        "storage_gaps": gaps_total,
        "fills_interrupting": interrupted,
        "resumed_after_fill": resumed,
        "unexplained_holes": holes,
        "parts_left_unsealed": sum(len(r.get("parts_left", [])) for r in rounds),
        "agent_bad_exits": sum(1 for r in rounds if r.get("recorded") and r.get("exit") != 0),
        "tracebacks": text.count("Traceback"),
        "log_lines_no_space": sum(1 for line in text.splitlines() if "No space" in line),
        "media_lost_s": {
            "median": round(statistics.median(lost_s), 3) if lost_s else None,
            "p90": q(0.9),
            "max": round(max(lost_s), 3) if lost_s else None,
        },
        "media_lost_s_each": [round(x, 3) for x in lost_s],
    }


def device_ok(result: dict[str, Any]) -> bool:
    return bool(
        result["fills"] > 0
        and result["rounds_not_recording"] == 0
        and result["sealed_segments_lost"] == 0
        and result["chain_verifies_each_round"]
        and result["fills_interrupting"] > 0
        and result["resumed_after_fill"] == result["fills_interrupting"]
        and result["unexplained_holes"] == 0
        and result["parts_left_unsealed"] == 0
        and result["agent_bad_exits"] == 0
        and result["tracebacks"] == 0
    )


# --- running inside a private mount namespace ---------------------------------------------------


def run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one side's rounds in a private namespace with its small tmpfs; the result dict.

    Raises RuntimeError when no way to make a small filesystem works here."""
    how = smallfs.method()
    if how is None:
        raise RuntimeError("no private tmpfs possible: " + "; ".join(smallfs.UNAVAILABLE))
    result_path = work / "result.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--inner", str(work), "--json",
            *_forward(args)]  # fmt: skip
    done = smallfs.run_inside(how, argv, cwd=ROOT, capture_output=True, timeout=args.timeout_s)
    if not result_path.exists():
        raise RuntimeError(f"inner run failed ({done.returncode}): {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(result_path.read_text("utf-8"))
    result["method"] = how
    return result


def _forward(args: argparse.Namespace) -> list[str]:
    out = ["--side", args.side, "--fills", str(args.fills), "--seed", str(args.seed)]
    for name in ("min_s", "max_s", "hold_min_s", "hold_max_s", "size_mib", "reserve_kib"):
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.encrypted:
        out.append("--encrypted")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", choices=("device", "receiver"), default="device")
    p.add_argument("--fills", type=int, default=20)
    p.add_argument("--encrypted", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min-s", type=float, default=1.0, help="earliest fill after recording starts")
    p.add_argument("--max-s", type=float, default=4.0, help="latest fill after recording starts")
    p.add_argument("--hold-min-s", type=float, default=0.5, help="shortest time the disk is full")
    p.add_argument("--hold-max-s", type=float, default=3.0, help="longest time the disk is full")
    p.add_argument(
        "--size-mib", type=int, default=16, help="small filesystem: this + 3 MiB per fill"
    )
    p.add_argument("--reserve-kib", type=int, default=2048, help="device storage_stop_bytes")
    p.add_argument("--timeout-s", type=float, default=3600.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--inner", type=Path, help=argparse.SUPPRESS)
    return p


def defaults(**overrides: Any) -> argparse.Namespace:
    args = parser().parse_args([])
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


def main() -> int:
    args = parser().parse_args()
    if args.inner is not None:
        if args.side == "device":
            result = run_device(args.inner, args)
        else:
            from fault_disk_receiver import run_receiver

            result = run_receiver(args.inner, args)
        (args.inner / "result.json").write_text(json.dumps(result, default=str), "utf-8")
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault-disk-") as tmp:
        result = run(Path(tmp), args)
    result["wall_s"] = round(time.monotonic() - started)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(summary(result, args))
    if args.side == "device":
        return 0 if device_ok(result) else 1
    from fault_disk_receiver import receiver_ok

    return 0 if receiver_ok(result) else 1


def summary(result: dict[str, Any], args: argparse.Namespace) -> str:
    if result["side"] == "receiver":
        return (
            f"{result['fills']} fills of the receiver's disk mid-ingest ({result['wall_s']} s): "
            f"receipts without data {result['receipts_without_data']}, reverify ok "
            f"{result['reverify_ok']}, not receipted at the end {result['not_receipted']}, "
            f"'disk full' log lines {result['log_lines_disk_full']}, tracebacks "
            f"{result['tracebacks']}"
        )
    m = result["media_lost_s"]
    return (
        f"{result['fills']} fills of the device's disk mid-recording "
        f"({'encrypted' if args.encrypted else 'plaintext'}, {result['wall_s']} s): sealed "
        f"segments lost {result['sealed_segments_lost']} of {result['sealed_segments_seen']}, "
        f"chain verifies {result['chain_verifies_each_round']}, unexplained holes "
        f"{result['unexplained_holes']}, storage gaps {result['storage_gaps']} "
        f"({result['fills_interrupting']} fills interrupted recording, "
        f"{result['resumed_after_fill']} resumed), parts left unsealed "
        f"{result['parts_left_unsealed']}, agent crashes {result['agent_bad_exits']}, tracebacks "
        f"{result['tracebacks']}; media lost per fill: median {m['median']} s, p90 {m['p90']} s, "
        f"max {m['max']} s"
    )


if __name__ == "__main__":
    sys.exit(main())
