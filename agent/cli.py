"""``bodycam-agent``: run the daemon, run the pre-capture checks, show status, simulate.

- ``run [--config FILE]``: the daemon (systemd Type=notify; watchdog pinged from the main
  loop; SIGTERM seals the open segment and closes the session; exit 0).
- ``check [--config FILE]``: the Art. 11 checks, printed; exit 1 when a check fails.
- ``status [--config FILE | --spool DIR] [--json]``: device id, chain head, sessions, segments
  waiting for a receiver receipt, free storage, battery, whether media are encrypted at rest.
- ``simulate --spool DIR --seconds N [--config FILE] [--start UTC] [--realtime]``: a scripted
  session on simulated hardware: the pre-event buffer fills, a press (the checks take 1 s of
  media), the spoken preamble, then N s of media with a marker halfway, the last of them holding
  the record button to stop. So it records pre-event + checks + preamble + N s, to the frame, the
  same on every run (fast mode is stepped, see :mod:`agent.simulation`). Its records are dated so
  the session ends before the real time it finishes (``--start`` dates it earlier: a run dated
  just after a recent one would otherwise have to wait for real time). Without a config it creates
  a development key and device id in the spool and says so.

Failure posture: configuration, key and spool problems print one clear line on stderr and
exit 2; nothing is deleted. Exit codes: 0 ok, 1 checks failed / simulation failed, 2 usage or
setup error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.clock import SimulatedClock, SystemClock
from agent.config import DEFAULT_CONFIG_PATH, AgentConfig, load_config, simulated_config
from agent.errors import AgentError
from agent.notify import Notifier
from agent.recorder import State
from agent.runtime import Runtime, build_runtime, make_battery, make_storage
from agent.simulation import Simulation
from agent.spool import SessionState, ensure_dev_key, load_key, simulated_device_id
from evidence import layout
from evidence.records import Record, RecordType, parse_utc
from evidence.values import format_utc

log = logging.getLogger("agent.cli")

EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2
CONFIG_ENV = "BODYCAM_AGENT_CONFIG"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bodycam-agent", description="Body-worn recorder agent")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def config_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config",
            type=Path,
            help=f"TOML config (default: ${CONFIG_ENV} or {DEFAULT_CONFIG_PATH})",
        )

    run = sub.add_parser("run", help="run the recorder daemon")
    config_arg(run)
    check = sub.add_parser("check", help="run the pre-capture checks and print the report")
    config_arg(check)
    check.add_argument("--json", action="store_true")
    status = sub.add_parser("status", help="show device, chain and spool status")
    config_arg(status)
    status.add_argument("--spool", type=Path, help="spool directory (instead of a config)")
    status.add_argument("--json", action="store_true")
    sim = sub.add_parser("simulate", help="scripted session on simulated hardware")
    sim.add_argument("--spool", type=Path, required=True)
    sim.add_argument(
        "--seconds",
        type=float,
        required=True,
        help="media after the press (at least as long as the spoken preamble)",
    )
    sim.add_argument("--config", type=Path)
    sim.add_argument(
        "--start",
        metavar="UTC",
        help="date the fast simulation from this past UTC time (e.g. 2026-01-05T09:00:00Z), or"
        " from just after the spool's last record if that is later (default: pre-event + N +"
        f" {SIMULATE_ALLOWANCE_S:g} s before now); scripts that simulate several sessions in a"
        " row pass the same past time to each, so none has to wait for real time",
    )
    sim.add_argument(
        "--realtime",
        action="store_true",
        help="capture at wall-clock rate (default: as fast as possible)",
    )
    sub.add_parser(
        "upload",
        add_help=False,
        help="upload the spool at the dock over MQTT (options: bodycam-agent upload --help)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["upload"]:
        # The uploader is its own process with its own options (agent.uplink), so that the
        # recorder never waits on the network.
        from agent.uplink.__main__ import main as upload_main

        return upload_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "check":
            return cmd_check(args)
        if args.command == "status":
            return cmd_status(args)
        return cmd_simulate(args)
    except AgentError as exc:  # media and uplink errors are branches of this tree
        print(f"bodycam-agent: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except OSError as exc:  # e.g. a spool path that is a file or cannot be created
        where = f" {exc.filename}" if exc.filename else ""
        print(f"bodycam-agent: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_SETUP


def _config(path: Path | None) -> AgentConfig:
    if path is None:
        env = os.environ.get(CONFIG_ENV)
        path = Path(env) if env else DEFAULT_CONFIG_PATH
    return load_config(path)


def _device_id(cfg: AgentConfig) -> str:
    if cfg.device.id:
        return cfg.device.id
    if cfg.hardware.backend == "simulated":
        return simulated_device_id(cfg.spool_path / layout.STATE)
    raise AgentError("config device.id is required on real hardware")


# --- run ----------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    if cfg.capture.backend == "simulated" and not cfg.capture.realtime:
        raise AgentError(
            "capture.realtime = false is the stepped simulation of `bodycam-agent simulate`; "
            "the daemon needs capture that runs by itself (capture.realtime = true)"
        )
    cfg.spool_path.mkdir(parents=True, exist_ok=True)
    device_id = _device_id(cfg)
    key = load_key(cfg.key_path)
    notifier = Notifier()
    rt = build_runtime(cfg, clock=SystemClock(), key=key, device_id=device_id, notifier=notifier)
    _report_recovery(rt)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()
        rt.recorder.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fifo = None
    from agent.hardware.controls import SimulatedControls

    if isinstance(rt.controls, SimulatedControls):
        from agent.simcontrol import SimControlFifo

        fifo = SimControlFifo(rt.spool.state_dir / "sim-control", rt.controls, rt.capture.liveness)
    try:
        rt.recorder.start()
        log.info("agent running: device %s, spool %s", device_id, cfg.spool_path)
        if rt.recovery.sessions_closed and cfg.recording.resume_after_crash:
            log.warning("the last session was cut by a crash: recording again")
            rt.recorder.resume_after_crash()
        rt.recorder.run(stop)
    finally:
        if fifo is not None:
            fifo.close()
        rt.recorder.shutdown()
    log.info("agent stopped cleanly")
    return EXIT_OK


def _report_recovery(rt: Runtime) -> None:
    r = rt.recovery
    if r.anything:
        print(
            f"crash recovery: closed session(s) {', '.join(r.sessions_closed) or '-'}; "
            f"{len(r.recovered_segments)} segment(s) sealed as recovered; "
            f"{len(r.completed_renames)} interrupted rename(s) completed",
            flush=True,
        )


# --- check --------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    cfg.spool_path.mkdir(parents=True, exist_ok=True)
    device_id = _device_id(cfg)
    from agent.checks import CheckInputs, read_clock_sync_state, run_checks
    from agent.runtime import make_capture

    capture = make_capture(cfg, SystemClock(), device_id)
    state_dir = cfg.spool_path / layout.STATE
    try:
        capture.start()
        report = run_checks(
            CheckInputs(
                cfg=cfg.checks,
                full_runtime_min=cfg.hardware.battery.full_runtime_min,
                battery=make_battery(cfg),
                storage=make_storage(cfg),
                capture=capture,
                key_path=cfg.key_path,
                spool_dir=cfg.spool_path,
                clock_state=lambda: read_clock_sync_state(
                    state_dir, clock_source=cfg.checks.clock_source
                ),
                now=lambda: datetime.now(UTC),
                storage_reserve_bytes=cfg.recording.storage_stop_bytes,
            )
        )
    finally:
        capture.stop()
    from agent.checks import CheckReport, check_encryption

    report = CheckReport(report.utc, [*report.results, check_encryption(cfg)])
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.format())
    return EXIT_FAILED if report.failures() else EXIT_OK


# --- status -------------------------------------------------------------------------------------


def spool_status(spool_dir: Path, cfg: AgentConfig) -> dict[str, Any]:
    """What ``status`` prints; reads the spool only (no key needed)."""
    devices = list(layout.iter_devices(spool_dir))
    receipts_dir = spool_dir / layout.STATE / "receipts"
    receipts = {p.name for p in receipts_dir.iterdir()} if receipts_dir.is_dir() else set()
    out: dict[str, Any] = {"spool": str(spool_dir), "devices": {}}
    for device in devices:
        head: Record | None = None
        sessions = segments = pending = 0
        pending_bytes = 0
        for path in layout.iter_record_files(spool_dir, device):
            try:
                record = Record.load(path)
            except Exception as exc:
                out.setdefault("errors", []).append(f"{path.name}: {exc}")
                continue
            head = record
            if record.type == RecordType.SESSION_OPEN:
                sessions += 1
            elif record.type == RecordType.SEGMENT:
                segments += 1
                name = str(record.body.get("file"))
                names = {f"{record.seq:010d}.json", f"{record.hash()}.json", f"{name}.json"}
                if not names & receipts:
                    pending += 1
                    # What travels is the stored form (ciphertext when encrypted).
                    kept = record.body.get("stored") or record.body.get("media") or {}
                    pending_bytes += int(kept.get("size", 0))
        out["devices"][device] = {
            "head_seq": head.seq if head else None,
            "head_hash": head.hash() if head else None,
            "head_utc": head.time.utc if head else None,
            "sessions": sessions,
            "segments": segments,
            "pending_upload_segments": pending,
            "pending_upload_bytes": pending_bytes,
        }
    session_file = spool_dir / layout.STATE / "session.json"
    out["open_session"] = (
        json.loads(session_file.read_text(encoding="utf-8")).get("session")
        if session_file.exists()
        else None
    )
    try:
        out["free_bytes"] = make_storage(cfg).free_bytes()
    except AgentError as exc:
        out["free_bytes"] = None
        out.setdefault("errors", []).append(str(exc))
    reading = make_battery(cfg, create=False).read()
    out["battery"] = reading.to_dict() if reading else None
    from agent.checks import check_encryption

    enc = check_encryption(cfg)
    out["encryption"] = {"outcome": str(enc.outcome), "detail": enc.reason, **enc.data}
    return out


def cmd_status(args: argparse.Namespace) -> int:
    if args.spool is not None:
        cfg = load_config(args.config) if args.config else simulated_config(args.spool)
        cfg.device.spool_dir = str(args.spool)
    else:
        cfg = _config(args.config)
    if not cfg.spool_path.is_dir():  # a mistyped path must not read as an empty, healthy spool
        print(f"bodycam-agent: {cfg.spool_path}: no such spool directory", file=sys.stderr)
        return EXIT_SETUP
    status = spool_status(cfg.spool_path, cfg)
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"spool: {status['spool']}")
    for device, d in status["devices"].items():
        print(f"device {device}: chain head seq {d['head_seq']} ({d['head_utc']})")
        print(f"  head hash {d['head_hash']}")
        print(
            f"  sessions {d['sessions']}, segments {d['segments']}, waiting for receipt "
            f"{d['pending_upload_segments']} ({d['pending_upload_bytes']} bytes)"
        )
    if not status["devices"]:
        print("no device chain in this spool yet")
    print(f"open session: {status['open_session'] or '-'}")
    free = status["free_bytes"]
    print(f"free storage: {free / 1e9:.2f} GB" if free is not None else "free storage: unknown")
    b = status["battery"]
    if b:
        print(f"battery: {b['capacity_percent']}% {b['status']} ({b['supply']})")
    else:
        print("battery: no gauge found")
    enc = status["encryption"]
    label = {"pass": "on", "warn": "OFF (WARNING)", "fail": "BROKEN"}[enc["outcome"]]
    print(f"encryption at rest: {label}: {enc['detail']}")
    return EXIT_OK


# --- simulate -----------------------------------------------------------------------------------


def _last_record_utc(spool_dir: Path) -> datetime | None:
    newest: datetime | None = None
    for device in layout.iter_devices(spool_dir):
        files = list(layout.iter_record_files(spool_dir, device))
        if files:
            try:
                when = parse_utc(Record.load(files[-1]).time.utc)
            except Exception:
                continue
            newest = when if newest is None or when > newest else newest
    return newest


SIMULATE_ALLOWANCE_S = 60.0
"""Checks, preamble and the hold, on top of pre-event + N, when dating a fast simulation."""


def cmd_simulate(args: argparse.Namespace) -> int:
    spool_dir: Path = args.spool
    if args.seconds <= 0:
        raise AgentError(f"--seconds must be > 0, got {args.seconds}")
    start = _parse_start(args.start)
    if start is not None and args.realtime:
        raise AgentError("--start dates the fast simulation; --realtime follows the real clock")
    if args.config is not None:
        cfg = load_config(args.config)
        cfg.hardware.backend = cfg.capture.backend = "simulated"
    else:
        cfg = simulated_config(spool_dir)
    cfg.device.spool_dir = str(spool_dir)
    # Fast unless asked: the config's capture.realtime is for `run` on simulated hardware.
    cfg.capture.realtime = bool(args.realtime)
    if cfg.capture.realtime:
        # The script holds the record button in wall time: keep that short.
        cfg.hardware.controls = replace(cfg.hardware.controls, hold_time_s=0.3)
    spool_dir.mkdir(parents=True, exist_ok=True)
    device_id = _device_id(cfg)
    key, created = ensure_dev_key(cfg.key_path)
    if created:
        print(
            f"created a DEVELOPMENT signing key at {cfg.key_path} for device {device_id} "
            "(not provisioned; for simulation only)",
            flush=True,
        )
    if cfg.capture.realtime:
        rt = build_runtime(cfg, clock=SystemClock(), key=key, device_id=device_id)
        _report_recovery(rt)
        return _simulate_realtime(rt, args.seconds)
    clock = _simulation_clock(spool_dir, cfg.capture.pre_event_s + args.seconds, start)
    rt = build_runtime(cfg, clock=clock, key=key, device_id=device_id)
    _report_recovery(rt)
    return _simulate_stepped(Simulation(rt), args.seconds)


def _parse_start(text: str | None) -> datetime | None:
    """``--start``: an ISO 8601 time with its zone, in the past (the simulation never dates a
    record in the future)."""
    if text is None:
        return None
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        start = None
    if start is None or start.tzinfo is None:
        raise AgentError(
            f"--start: not a time with its zone, like 2026-01-05T09:00:00Z: {text[:40]!r}"
        )
    start = start.astimezone(UTC)
    if start >= datetime.now(UTC):
        raise AgentError(f"--start must be in the past, got {format_utc(start)}")
    return start


def _simulation_clock(
    spool_dir: Path, media_s: float, start: datetime | None = None
) -> SimulatedClock:
    """A fast clock dated so that the session ends before the real time it is written at.

    It starts at ``start`` (default: ``media_s`` plus an allowance before the real start), but
    after the spool's last record, so the chain's time never goes backwards, as a new "boot";
    it never runs ahead of real time (it waits for real time when it would).
    """
    if start is None:
        start = datetime.now(UTC) - timedelta(seconds=media_s + SIMULATE_ALLOWANCE_S)
    last = _last_record_utc(spool_dir)
    if last is not None and last >= start:
        start = last + timedelta(seconds=1)
    return SimulatedClock(
        start, realtime=False, boot_id=str(uuid.uuid4()), never_ahead_of_real=True
    )


def _simulate_stepped(sim: Simulation, seconds: float) -> int:
    """Pre-event buffer, press, preamble, ``seconds`` more with a marker halfway, hold to stop.

    The recording holds exactly pre-event + checks-to-press + preamble + ``seconds`` of media
    (to the frame); the hold that stops it is inside the last ``seconds``.
    """
    rt, capture, recorder = sim.rt, sim.capture, sim.recorder
    sim.start()
    try:
        sim.advance_to(round(rt.cfg.capture.pre_event_s * 1e6))
        sim.press_record()
        if sim.state != State.RECORDING:
            reasons = [f.reason for r in recorder.refusals for f in r.failures()]
            print(f"recording refused: {'; '.join(reasons) or 'no response'}", file=sys.stderr)
            return EXIT_FAILED
        press_us = capture.media_time_us  # start_recording ran at the end of the press
        session = recorder.session
        assert session is not None
        print(
            f"recording: session {session.state.session} (checks {session.report.outcome})",
            flush=True,
        )
        if not sim.until_quiet():
            print("the preamble did not finish playing", file=sys.stderr)
            return EXIT_FAILED
        after_preamble_us = capture.media_time_us
        end_us = after_preamble_us + round(seconds * 1e6)
        sim.advance_to(after_preamble_us + round(seconds * 1e6) // 2)
        sim.press_mark()
        hold_us = round(
            (sim.controls.hold_duration_s + rt.cfg.hardware.controls.bounce_time_s) * 1e6
        )
        sim.advance_to(end_us - hold_us)
        sim.hold_record()
        stop_us = capture.media_time_us  # stop_recording ran at the end of the hold
        if sim.state != State.IDLE:
            print("recording did not stop", file=sys.stderr)
            return EXIT_FAILED
        _print_closed(session.state, len(recorder.markers))
        recorded_us = stop_us - press_us
        print(
            f"media: {(session.state.duration_us - recorded_us) / 1e6:.6f} s pre-event "
            f"+ {(after_preamble_us - press_us) / 1e6:.6f} s preamble "
            f"+ {(stop_us - after_preamble_us) / 1e6:.6f} s (asked for {seconds:g} s)",
            flush=True,
        )
    finally:
        sim.shutdown()
    print(f"spool: {rt.spool.root} (verify with: bodycam-verify {rt.spool.root})")
    return EXIT_OK


def _print_closed(st: SessionState, markers: int) -> None:
    print(
        f"session {st.session} closed: {st.segments} segments, {st.frames} frames, "
        f"{st.duration_us / 1e6:.1f} s of media, {st.gaps} gaps, {markers} marker(s)",
        flush=True,
    )


def _simulate_realtime(rt: Runtime, seconds: float) -> int:
    from agent.hardware.controls import SimulatedControls

    controls = rt.controls
    assert isinstance(controls, SimulatedControls)
    recorder, capture = rt.recorder, rt.capture
    stop = threading.Event()
    loop = threading.Thread(target=recorder.run, args=(stop,), name="recorder", daemon=True)
    recorder.start()
    loop.start()
    ok = False
    try:
        pre_event_us = int(rt.cfg.capture.pre_event_s * 1e6)
        if not _wait(lambda: capture.media_time_us >= pre_event_us, 120.0):
            print("pre-event buffer did not fill", file=sys.stderr)
            return EXIT_FAILED
        controls.press_record()
        if not recorder.wait_state(State.RECORDING, 60.0):
            reasons = [f.reason for r in recorder.refusals for f in r.failures()]
            print(f"recording refused: {'; '.join(reasons) or 'no response'}", file=sys.stderr)
            return EXIT_FAILED
        session = recorder.session
        assert session is not None
        print(
            f"recording: session {session.state.session} (checks {session.report.outcome})",
            flush=True,
        )
        press_us = capture.media_time_us
        target_us = press_us + int(seconds * 1e6)
        _wait(lambda: capture.media_time_us >= press_us + int(seconds * 1e6) // 2, seconds + 60)
        controls.press_mark()
        _wait(lambda: capture.media_time_us >= target_us, seconds + 60)
        recorder.speaker.wait_idle(120.0)
        _wait(lambda: len(recorder.markers) >= 1, 10.0)
        controls.hold_record()
        if not recorder.wait_state(State.IDLE, 120.0):
            print("recording did not stop", file=sys.stderr)
            return EXIT_FAILED
        _print_closed(session.state, len(recorder.markers))
        ok = True
    finally:
        stop.set()
        loop.join(10.0)
        recorder.shutdown()
    print(f"spool: {rt.spool.root} (verify with: bodycam-verify {rt.spool.root})")
    return EXIT_OK if ok else EXIT_FAILED


def _wait(predicate: Any, timeout_s: float) -> bool:
    """Realtime only: wait (in wall time) for something the live capture or loop does."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


if __name__ == "__main__":
    sys.exit(main())
