"""Benchmark: the review console's case list and case page on a realistic store.

The store is written row by row through the receiver's own schema (``receiver.store.connect``):
``--cases`` cases, ``--sessions`` sessions spread over ``--devices`` devices, each session with a
signed-looking ``session-open`` (assignment and check report), ``--segments`` segment records,
a marker and a ``session-close``, filed to the cases, plus a custody entry per filing. Rows are
real rows of the real tables (no media files: every segment shows "media missing", and the
per-device chain check reads no evidence files, so the case page's cost here is its SQL and
rendering, not signature checks).

Timed in one run, in process, through the ASGI app (the HTTPS layer is the same for both):

* **console**: ``GET /cases`` (first page, and filtered by officer), ``GET /cases/<n>``;
* **baseline**: what the clerk's CLI computes for the same answers, ``reports.cases_view`` (all
  cases) and ``reports.case_view`` (one case) — the functions behind ``cases`` and ``case show``.

Reports medians over ``--rounds`` and the console/baseline ratios.

    python bench/bench_web.py [--cases 1000] [--sessions 10000] [--rounds 15] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402

from evidence.keys import generate_signing_key  # noqa: E402
from receiver import reports  # noqa: E402
from receiver.cli import main as receiver_main  # noqa: E402
from receiver.config import ReceiverConfig  # noqa: E402
from receiver.custody import record_event  # noqa: E402
from receiver.store import EvidenceStore, connect  # noqa: E402

OFFICERS = [f"警员{i:03d} (执法证 14{i:03d})" for i in range(200)]
TYPES = ("inspection", "seizure", "sealing", "interview", "penalty", "licensing")


def _h(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def build(data: Path, cases: int, sessions: int, devices: int, segments: int) -> list[str]:
    store = EvidenceStore(data)
    conn = connect(store.db_path)
    rng = random.Random(7)
    now = "2026-11-20T08:00:00.000000Z"
    numbers = [f"JY-2026-{i:05d}" for i in range(cases)]
    conn.execute("BEGIN")
    for i, n in enumerate(numbers):
        conn.execute(
            "INSERT INTO cases (number, enforcement_type, av_level, title, parties, sensitivity,"
            " created_utc) VALUES (?, ?, 'recommended', ?, ?, 'internal', ?)",
            (n, TYPES[i % len(TYPES)], f"专项检查 第{i}号", json.dumps([f"当事人{i}"]), now),
        )
    for d in range(devices):
        pem = (
            generate_signing_key()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        conn.execute(
            "INSERT INTO devices (id, public_key_pem, key_id, added_utc, last_seen_utc) "
            "VALUES (?, ?, ?, ?, ?)",
            (f"BC-{d:04d}", pem.decode("ascii"), f"ed25519:{d:032x}", now, now),
        )
    seqs = [0] * devices
    for s in range(sessions):
        d = s % devices
        dev, case = f"BC-{d:04d}", numbers[s % cases]
        session = f"2026111{s % 10}T0800{s:06d}Z-{s:06x}"
        officers = rng.sample(OFFICERS, 2)
        opened = {
            "assignment": {
                "case": case,
                "officers": officers,
                "place": "太原市小店区",
                "reason": "专项检查",
                "target": "某单位",
                "stage": "investigation",
            },
            "checks": {
                "outcome": "pass",
                "checks": [
                    {"name": k, "outcome": "pass", "reason": "ok"}
                    for k in ("battery", "storage", "camera", "microphone", "clock")
                ],
            },
            "preamble": {"text": "现在开始录音录像", "lang": "zh"},
        }
        bodies: list[tuple[str, dict[str, Any]]] = [("session-open", opened)]
        for k in range(segments):
            bodies.append(
                (
                    "segment",
                    {
                        "index": k,
                        "file": f"{session}-{k:04d}.ts",
                        "utc_start": f"2026-11-1{s % 10}T08:{k:02d}:00.000000Z",
                        "utc_end": f"2026-11-1{s % 10}T08:{k:02d}:10.000000Z",
                        "frames": 150,
                        "dropped_frames": 0,
                    },
                )
            )
            if k == 0:
                bodies.append(("marker", {"kind": "arrival", "utc": now, "note": ""}))
        bodies.append(("session-close", {"segments": segments, "reason": "stopped"}))
        prev = "0" * 64
        for rtype, body in bodies:
            seq = seqs[d]
            seqs[d] += 1
            h = _h(dev, seq)
            media = body.get("file")
            conn.execute(
                "INSERT INTO records (hash, device, seq, session, type, prev, utc, body, "
                "media_file, media_sha256, media_size, stored_utc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    h,
                    dev,
                    seq,
                    session,
                    rtype,
                    prev,
                    f"2026-11-1{s % 10}T08:00:{seq % 60:02d}.000000Z",
                    json.dumps(body, ensure_ascii=False),
                    media,
                    _h("m", dev, seq) if media else None,
                    4_000_000 if media else None,
                    now,
                ),
            )
            prev = h
        conn.execute(
            "INSERT INTO filings (session, device, case_number, how, filed_utc) "
            "VALUES (?, ?, ?, 'assignment', ?)",
            (session, dev, case, now),
        )
        record_event(conn, "filing", session=session, device=dev, case=case, how="assignment")
    for d in range(devices):
        conn.execute(
            "INSERT INTO assignments (device, case_number, officers, place, reason, target, "
            "stage, created_utc) VALUES (?, ?, ?, '太原', '检查', '某单位', 'investigation', ?)",
            (f"BC-{d:04d}", numbers[d], json.dumps(rng.sample(OFFICERS, 2)), now),
        )
    conn.execute("COMMIT")
    conn.close()
    return numbers


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm caches (templates, SQLite pages) once, as a running console has them
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="cases in the store")
    ap.add_argument("--sessions", type=int, default=10_000, help="sessions in the store")
    ap.add_argument("--devices", type=int, default=50, help="devices the sessions come from")
    ap.add_argument("--segments", type=int, default=6, help="segments per session")
    ap.add_argument("--rounds", type=int, default=15, help="timed requests per measurement")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args()

    from starlette.testclient import TestClient

    from receiver.web.app import create_app
    from receiver.web.backend import Backend

    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        data = Path(tmp) / "rdata"
        t0 = time.perf_counter()
        numbers = build(data, args.cases, args.sessions, args.devices, args.segments)
        built_s = time.perf_counter() - t0
        env = {"BODYCAM_PASSWORD": "bench-password-1", "BODYCAM_NEW_PASSWORD": "bench-password-1"}
        os.environ.update(env)
        assert (
            receiver_main(["--data-dir", str(data), "user", "add", "clerk", "--role", "clerk"]) == 0
        )
        config = ReceiverConfig(data_dir=data)
        client = TestClient(create_app(Backend(config)), base_url="https://bench")
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert token
        form = {"user": "clerk", "password": env["BODYCAM_PASSWORD"], "csrf": token.group(1)}
        r = client.post("/login", data=form, follow_redirects=False)
        assert r.status_code == 303, r.text
        case = numbers[len(numbers) // 2]

        def get(path: str) -> None:
            resp = client.get(path)
            assert resp.status_code == 200, (path, resp.status_code)

        store = EvidenceStore(data)
        conn = connect(store.db_path)
        results = {
            "case_list_console_ms": median_ms(lambda: get("/cases"), args.rounds),
            "case_list_filtered_console_ms": median_ms(
                lambda: get("/cases?officer=%E8%AD%A6%E5%91%98007&type=inspection"), args.rounds
            ),
            "case_list_cli_ms": median_ms(lambda: reports.cases_view(conn), args.rounds),
            "case_page_console_ms": median_ms(lambda: get(f"/cases/{case}"), args.rounds),
            "case_page_cli_ms": median_ms(
                lambda: reports.case_view(store, conn, case), args.rounds
            ),
        }
        conn.close()
    results["case_list_ratio"] = results["case_list_console_ms"] / results["case_list_cli_ms"]
    results["case_page_ratio"] = results["case_page_console_ms"] / results["case_page_cli_ms"]
    summary = {
        "cases": args.cases,
        "sessions": args.sessions,
        "records": args.sessions * (args.segments + 3),
        "build_s": round(built_s, 1),
        **{k: round(v, 2) for k, v in results.items()},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"store: {args.cases} cases, {args.sessions} sessions, {summary['records']} "
            f"records (built in {built_s:.1f} s); medians of {args.rounds}"
        )
        print(
            f"case list  console {results['case_list_console_ms']:8.1f} ms (first page of "
            f"100, rendered)  filtered {results['case_list_filtered_console_ms']:.1f} ms  "
            f"| CLI view (all cases) {results['case_list_cli_ms']:.1f} ms  "
            f"ratio {results['case_list_ratio']:.2f}"
        )
        print(
            f"case page  console {results['case_page_console_ms']:8.1f} ms (rendered)  "
            f"| CLI case_view {results['case_page_cli_ms']:.1f} ms  "
            f"ratio {results['case_page_ratio']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
