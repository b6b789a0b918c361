"""Benchmark: end-to-end dock upload vs mosquitto_pub/mosquitto_sub through the same broker.

Measures, in one run on one private Mosquitto running the configuration provisioning generates
(mutual TLS, per-device ACL, CRL; every client below has its own certificate from the dock CA):

* **upload**: spool → uplink (paho, QoS 1, 256 KiB chunks) → broker → receiver service (a child
  process: per-chunk hash checks, streaming reassembly, whole-file hash, content-addressed store,
  SQLite WAL synchronous=FULL) → signed receipt back → media freed on the device;
* **upload, encrypted at rest** (``--encrypted``): the same with segments encrypted to the
  receiver's key, which decrypts each one, checks the plaintext digest and stores both;
* **baseline**: as many bytes in messages of the project's own chunk size (256 KiB), pipelined
  by one ``mosquitto_pub -q 1 -l`` (one message per line of stdin) and received by
  ``mosquitto_sub -q 1`` writing to a file, both over mutual TLS through the same broker (no
  hashing, no fsync, no receipts: the raw broker path). Earlier versions sent whole segments one
  at a time with ``--repeat``, which understated the raw path about 2.7x.

Reports both throughputs, their ratio and the receiver's peak resident memory (VmHWM), which must
stay flat as segments grow; and the CPU each path costs per MiB (upload: receiver + uploader +
broker; baseline: mosquitto_pub + mosquitto_sub + broker), the steadier figure on a shared
machine, where wall-clock throughput mostly measures the share of the cores the bench got.
Segment payloads are random bytes (the pipeline never decodes media).

The uploader runs with the environment of its systemd unit (``GLIBC_TUNABLES``: the bench
re-executes itself with it, see :func:`run_as_deployed`), the receiver and the broker as theirs
start them (without); ``mosquitto_pub``/``mosquitto_sub`` run as Debian ships them, or with the
uploader's tunables under ``--baseline-tuned`` (they gain from them too: both figures are in the
README).

    python bench/bench_upload.py [--segments 16] [--segment-mib 4] [--encrypted]
                                 [--baseline-tuned] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.uplink import run_dock_upload  # noqa: E402
from evidence import layout  # noqa: E402
from evidence.chain import DeviceChain  # noqa: E402
from evidence.encryption import encrypt_for_spool, load_encryption_public_key  # noqa: E402
from evidence.keys import generate_signing_key  # noqa: E402
from evidence.media import CHUNK_SIZE, digest_file  # noqa: E402
from evidence.records import RecordType, format_utc  # noqa: E402
from evidence.testing import SteppingClock, default_assignment, session_open_body  # noqa: E402
from tests.support.dock import Dock, running_dock  # noqa: E402

DEVICE = "BENCH-01"
BASE_UTC = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
UNITS = ROOT / "systemd"
TUNED = "GLIBC_TUNABLES"
_REEXEC = "BODYCAM_BENCH_AS_DEPLOYED"


def unit_environment(unit: Path) -> dict[str, str]:
    """The ``Environment=NAME=value`` settings of a systemd unit file."""
    env = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value
    return env


def uplink_tunables() -> str:
    """The ``GLIBC_TUNABLES`` the uplink's unit starts it with (empty if none)."""
    return unit_environment(UNITS / "bodycam-uplink.service").get(TUNED, "")


def run_as_deployed() -> None:
    """Re-execute this process (the uploader runs in it) with the uplink unit's
    ``GLIBC_TUNABLES``, which glibc reads only at a process's start; then take them out of the
    environment, so the receiver, the broker and the baseline's clients start without them, as
    their own units (or Debian's) start them."""
    if os.environ.get(_REEXEC) is None:
        env = {**os.environ, _REEXEC: "1", TUNED: uplink_tunables()}
        os.execve(sys.executable, sys.orig_argv, env)
    del os.environ[_REEXEC]
    os.environ.pop(TUNED, None)


def build_spool(
    root: Path,
    segments: int,
    segment_bytes: int,
    encrypt_to: Path | None = None,
    *,
    device: str = DEVICE,
) -> tuple[Any, list[Path]]:
    """A spool of random segments; with ``encrypt_to`` (X25519 public key file) encrypted."""
    key = generate_signing_key()
    recipient = load_encryption_public_key(encrypt_to) if encrypt_to else None
    chain = DeviceChain(root, device, key)
    clock = SteppingClock()
    session = "bench-session"
    opened = session_open_body({**default_assignment(), "case": None})
    chain.append(RecordType.SESSION_OPEN, session, opened, clock.tick(1))
    files = []
    for index in range(segments):
        name = f"seg-{index:05d}.ts"
        path = layout.media_path(root, device, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        plain = path.with_suffix(".plain") if recipient else path
        with open(plain, "wb") as f:
            for _ in range(segment_bytes // (1 << 20)):
                f.write(os.urandom(1 << 20))
        body: dict[str, Any] = {
            "index": index,
            "file": name,
            "encryption": None,
            "media_start_us": index * 10_000_000,
            "media_end_us": (index + 1) * 10_000_000,
            "utc_start": format_utc(BASE_UTC + timedelta(seconds=10 * index)),
            "utc_end": format_utc(BASE_UTC + timedelta(seconds=10 * index + 10)),
            "frames": 250,
            "dropped_frames": 0,
            "video": {"codec": "h264", "width": 1280, "height": 720, "fps": 25},
            "audio": None,
            "pre_event_us": 0,
            "recovered": False,
        }
        if recipient is None:
            body |= {"media": digest_file(path).to_dict(), "stored": None}
        else:
            enc = encrypt_for_spool(plain, path, recipient)
            plain.unlink()
            body |= {
                "media": enc.media.to_dict(),
                "stored": enc.stored.to_dict(),
                "encryption": enc.encryption,
            }
        files.append(path)
        chain.append(RecordType.SEGMENT, session, body, clock.tick(10))
    closed = {
        "reason": "stopped",
        "duration_us": segments * 10_000_000,
        "segments": segments,
        "frames": segments * 250,
        "dropped_frames": 0,
        "gaps": 0,
    }
    chain.append(RecordType.SESSION_CLOSE, session, closed, clock.tick(1))
    return key, files


def _tls_args(dock: Dock, name: str) -> list[str]:
    cert, key = dock.client_identity(name)
    return ["--cafile", str(dock.pki.paths.ca_cert), "--cert", str(cert), "--key", str(key)]


BASELINE_ACL = ("user bench-pub", "topic write bench/#", "user bench-sub", "topic read bench/#")


def baseline_lines(path: Path, total_bytes: int, message_bytes: int = CHUNK_SIZE) -> int:
    """A ``mosquitto_pub -l`` input: random messages of ``message_bytes`` one per line,
    ``total_bytes`` in all (no newline or NUL inside: it reads lines as C strings); returns the
    number of messages."""
    count = -(-total_bytes // message_bytes)
    with path.open("wb") as f:
        for _ in range(count):
            data = os.urandom(message_bytes).replace(b"\n", b"N").replace(b"\r", b"R")
            f.write(data.replace(b"\0", b"Z") + b"\n")
    return count


def baseline(
    dock: Dock, lines: Path, count: int, message_bytes: int, work: Path, tuned: bool
) -> float:
    """Seconds for mosquitto_pub -l → broker → mosquitto_sub (to a file) to move ``lines``;
    the clients run with the uplink unit's ``GLIBC_TUNABLES`` only if ``tuned``."""
    env = {**os.environ, TUNED: uplink_tunables()} if tuned else None
    broker = dock.broker
    common = ["-h", broker.host, "-p", str(broker.port), "-q", "1"]
    sub_args = [*_tls_args(dock, "bench-sub"), *common, "-t", "bench/baseline", "-i", "bench-sub"]
    # a persistent session subscribed before anything is published (no sleep-and-hope): -E
    # exits once the subscription is acknowledged; the real subscriber resumes that session
    subprocess.run(["mosquitto_sub", *sub_args, "-c", "-E"], check=True, timeout=60)
    out = work / "baseline.bin"
    with out.open("wb") as sink, lines.open("rb") as source:
        sub = subprocess.Popen(
            ["mosquitto_sub", *sub_args, "-c", "-C", str(count), "-N"], stdout=sink, env=env
        )
        start = time.perf_counter()
        subprocess.run(
            ["mosquitto_pub", *_tls_args(dock, "bench-pub"), *common, "-t", "bench/baseline",
             "-i", "bench-pub", "-l"],
            stdin=source,
            check=True,
            env=env,
        )  # fmt: skip
        sub.wait(timeout=300)
        elapsed = time.perf_counter() - start
    expected = count * message_bytes
    if out.stat().st_size != expected:
        raise RuntimeError(f"baseline moved {out.stat().st_size} of {expected} bytes")
    return elapsed


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def one_round(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement on a fresh dock: our upload, then the raw broker path, same bytes."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp,
        running_dock(Path(tmp) / "dock", extra_acl=BASELINE_ACL) as dock,
    ):
        work = Path(tmp)
        spool = work / "spool"
        key, files = build_spool(
            spool,
            args.segments,
            args.segment_mib << 20,
            dock.pki.paths.encryption_pub if args.encrypted else None,
        )
        dock.enrol(DEVICE, key)
        total = sum(f.stat().st_size for f in files)
        # the baseline moves the same number of bytes in messages of the uplink's chunk size
        lines = work / "baseline-lines.bin"
        count = baseline_lines(lines, total)
        cfg = dock.uplink_config(DEVICE)
        cfg.receipt_timeout_s = 15.0
        assert dock.rx.proc is not None
        rx, broker = dock.rx.proc.pid, dock.broker.pid
        assert broker is not None
        # the uploader runs in this process (its threads; this thread only waits)
        rx0, broker0, up0 = cpu_s(rx), cpu_s(broker), time.process_time()
        start = time.perf_counter()
        result = run_dock_upload(spool, cfg, threading.Event(), until_done=True, timeout_s=600)
        upload_s = time.perf_counter() - start
        parts = {
            "receiver": cpu_s(rx) - rx0,
            "uploader": time.process_time() - up0,
            "broker": cpu_s(broker) - broker0,
        }
        upload_cpu = sum(parts.values())
        rss = peak_rss_bytes(dock.rx.proc.pid)
        if result.pending or result.quarantined:
            raise RuntimeError(f"upload incomplete: {result}")
        clients0, broker0 = children_cpu_s(), cpu_s(broker)
        base_s = baseline(dock, lines, count, CHUNK_SIZE, work, args.baseline_tuned)
        parts["pub+sub"] = children_cpu_s() - clients0
        parts["baseline broker"] = cpu_s(broker) - broker0
        base_cpu = parts["pub+sub"] + parts["baseline broker"]
        upload = total / 2**20 / upload_s
        base = count * CHUNK_SIZE / 2**20 / base_s
        return {
            "cpu_ms_per_mib_by_process": {
                name: 1000 * cpu / (total / 2**20) for name, cpu in parts.items()
            },
            "upload_cpu_ms_per_mib": 1000 * upload_cpu / (total / 2**20),
            "baseline_cpu_ms_per_mib": 1000 * base_cpu / (count * CHUNK_SIZE / 2**20),
            "cpu_ratio": base_cpu / upload_cpu,
            "bytes": total,
            "upload_mib_per_s": upload,
            "baseline_mib_per_s": base,
            "ratio": upload / base,
            "receiver_peak_rss_mib": rss / 2**20,
            "receipted_records": result.receipted,
        }


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--segments", type=int, default=16)
    p.add_argument("--segment-mib", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="measurements; medians are reported")
    p.add_argument("--encrypted", action="store_true", help="segments encrypted at rest")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--baseline-tuned",
        action="store_true",
        help=f"run mosquitto_pub/sub with the units' {TUNED} too",
    )
    args = p.parse_args()
    run_as_deployed()
    for tool in ("mosquitto", "mosquitto_pub", "mosquitto_sub"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench: {tool} is not installed (scripts/setup installs it)", file=sys.stderr)
            return 2
    rounds = []
    with contextlib.redirect_stdout(io.StringIO()) if args.json else contextlib.nullcontext():
        for _ in range(args.rounds):
            try:
                rounds.append(one_round(args))
            except RuntimeError as exc:
                print(f"bench: {exc}", file=sys.stderr)
                return 1

    def median(name: str) -> float:
        return round(statistics.median(r[name] for r in rounds), 3)

    report = {
        "bytes": rounds[0]["bytes"],
        "segments": args.segments,
        "segment_mib": args.segment_mib,
        "encrypted": args.encrypted,
        "transport": "mqtt5 over mutual TLS (provisioned broker config)",
        "uploader_glibc_tunables": uplink_tunables(),
        "baseline_tuned": args.baseline_tuned,
        "rounds": args.rounds,
        "upload_mib_per_s_median": median("upload_mib_per_s"),
        "baseline_mib_per_s_median": median("baseline_mib_per_s"),
        "ratio_upload_to_baseline_median": median("ratio"),
        "ratios": [round(r["ratio"], 3) for r in rounds],
        "upload_mib_per_s": [round(r["upload_mib_per_s"], 1) for r in rounds],
        "baseline_mib_per_s": [round(r["baseline_mib_per_s"], 1) for r in rounds],
        "upload_cpu_ms_per_mib_median": median("upload_cpu_ms_per_mib"),
        "baseline_cpu_ms_per_mib_median": median("baseline_cpu_ms_per_mib"),
        "cpu_ratio_baseline_to_upload_median": median("cpu_ratio"),
        "cpu_ms_per_mib_by_process_median": {
            name: round(statistics.median(r["cpu_ms_per_mib_by_process"][name] for r in rounds), 2)
            for name in rounds[0]["cpu_ms_per_mib_by_process"]
        },
        "receiver_peak_rss_mib_max": round(max(r["receiver_peak_rss_mib"] for r in rounds), 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        how = "encrypted at rest, " if args.encrypted else ""
        print(
            f"moved {report['bytes'] / 2**20:.0f} MiB in {args.segments} segments of "
            f"{args.segment_mib} MiB ({how}mutual TLS), {args.rounds} rounds, medians:"
        )
        upload, base = report["upload_mib_per_s_median"], report["baseline_mib_per_s_median"]
        print(f"  dock upload (verified, stored, receipted): {upload} MiB/s")
        print(f"  mosquitto_pub -l -> mosquitto_sub baseline: {base} MiB/s")
        print(
            f"  ratio upload/baseline: {report['ratio_upload_to_baseline_median']} "
            f"(per round: {report['ratios']})"
        )
        print(
            f"  CPU per MiB: upload {report['upload_cpu_ms_per_mib_median']} ms (receiver +"
            f" uploader + broker), baseline {report['baseline_cpu_ms_per_mib_median']} ms"
            f" (pub + sub + broker): ratio {report['cpu_ratio_baseline_to_upload_median']}"
        )
        by = ", ".join(f"{k} {v}" for k, v in report["cpu_ms_per_mib_by_process_median"].items())
        print(f"  CPU ms per MiB by process: {by}")
        print(f"  receiver peak RSS (max over rounds): {report['receiver_peak_rss_mib_max']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
