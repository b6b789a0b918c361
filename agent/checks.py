"""Pre-capture checks (Art. 11): is the device fit to record right now?

Each check gives pass, warn or fail with a reason. Fail refuses the recording (the officer is
told why); warn records and signals. The report goes into the signed ``session-open`` record
(or, when recording is refused, a signed device-level ``check`` record).

Clock synchronisation is decided in this order (first that applies wins):

1. the time service says the clock is synchronised (``checks.clock_source``, see
   :mod:`agent.timesync`: systemd-timesyncd via ``timedatectl``, chrony via ``chronyc``, or the
   kernel's ``adjtimex`` where the sandbox allows it; ``ProtectClock=`` blocks that) -> pass;
2. the dock set or measured the clock recently (``state/clock.json`` written by the uplink:
   ``{"synced_utc": "...Z", "offset_s": float}``, younger than ``dock_sync_max_age_h``) -> pass;
3. otherwise ``checks.clock_unsynced`` (warn by default), the reason saying whether an RTC is
   present and how old the last dock sync is. Records then carry ``synced: false``.

Failure posture: a check never raises; anything it cannot determine becomes a warn (or a fail
where recording would be unsafe: no key, spool not writable, camera dead) with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent.config import AgentConfig, ChecksConfig
from agent.errors import AgentConfigError
from agent.hardware.battery import BatteryGauge
from agent.hardware.storage import StorageGauge
from agent.media.base import CaptureHealth, CapturePipeline
from agent.timesync import ask_time_service
from evidence.encryption import load_encryption_public_key, recipient_id
from evidence.errors import EvidenceError

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


_RANK = {Outcome.PASS: 0, Outcome.WARN: 1, Outcome.FAIL: 2}

SPOKEN_ZH = {
    "battery": "电量不足",
    "storage": "存储空间不足",
    "camera": "摄像头故障",
    "microphone": "麦克风故障",
    "clock": "时钟未同步",
    "signing-key": "签名密钥缺失",
    "spool": "存储目录不可写",
}


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Outcome
    reason: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": str(self.outcome),
            "reason": self.reason,
            "data": record_safe(self.data),
        }


def record_safe(value: Any) -> Any:
    """Records allow no floats (RFC 8785 number formatting differs between languages):
    whole numbers become ints, others decimal strings with 2 places."""
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        return f"{value:.2f}"
    if isinstance(value, dict):
        return {k: record_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [record_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class CheckReport:
    utc: str
    results: list[CheckResult]

    @property
    def outcome(self) -> Outcome:
        worst = Outcome.PASS
        for r in self.results:
            if _RANK[r.outcome] > _RANK[worst]:
                worst = r.outcome
        return worst

    def get(self, name: str) -> CheckResult | None:
        return next((r for r in self.results if r.name == name), None)

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome == Outcome.FAIL]

    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome == Outcome.WARN]

    def to_dict(self) -> dict[str, Any]:
        return {
            "utc": self.utc,
            "outcome": str(self.outcome),
            "checks": [r.to_dict() for r in self.results],
        }

    def format(self) -> str:
        lines = [f"pre-capture checks at {self.utc}: {self.outcome.upper()}"]
        for r in self.results:
            lines.append(f"  {r.outcome.upper():4}  {r.name:<11} {r.reason}")
        return "\n".join(lines)


# --- individual checks -------------------------------------------------------------------------


def check_battery(gauge: BatteryGauge, cfg: ChecksConfig, full_runtime_min: float) -> CheckResult:
    try:
        reading = gauge.read()
    except Exception as exc:  # a gauge driver bug must not block the other checks
        return CheckResult("battery", Outcome.WARN, f"battery gauge unreadable: {exc}")
    if reading is None:
        return CheckResult("battery", Outcome.WARN, "no battery gauge found; level unknown")
    data = reading.to_dict()
    if reading.on_external_power:
        return CheckResult("battery", Outcome.PASS, f"on external power ({reading.status})", data)
    pct = reading.capacity_percent
    if reading.time_to_empty_s is not None:
        minutes = reading.time_to_empty_s / 60.0
    elif pct is not None:
        minutes = pct / 100.0 * full_runtime_min
    else:
        return CheckResult("battery", Outcome.WARN, "battery level unknown", data)
    data["estimated_recording_min"] = round(minutes, 1)
    level = f"{pct:.0f}%" if pct is not None else "level unknown"
    summary = f"{level}, about {minutes:.0f} min of recording"
    if (pct is not None and pct < cfg.battery_fail_percent) or minutes < cfg.min_recording_min:
        return CheckResult("battery", Outcome.FAIL, f"battery too low: {summary}", data)
    if (pct is not None and pct < cfg.battery_warn_percent) or minutes < cfg.warn_recording_min:
        return CheckResult("battery", Outcome.WARN, f"battery low: {summary}", data)
    return CheckResult("battery", Outcome.PASS, summary, data)


def recording_minutes(free_bytes: int, bitrate_bits_per_s: int) -> float:
    return free_bytes * 8 / bitrate_bits_per_s / 60.0


def check_storage(storage: StorageGauge, cfg: ChecksConfig, reserve_bytes: int = 0) -> CheckResult:
    """``reserve_bytes``: kept back for the records that explain an interruption (the
    recorder suspends below it), so it does not count as recording time."""
    try:
        free = storage.free_bytes()
    except Exception as exc:
        return CheckResult("storage", Outcome.FAIL, f"free space unknown: {exc}")
    usable = max(0, free - reserve_bytes)
    minutes = recording_minutes(usable, cfg.estimated_bitrate_bits_per_s)
    data = {
        "free_bytes": free,
        "reserve_bytes": reserve_bytes,
        "estimated_recording_min": round(minutes, 1),
        "bitrate_bits_per_s": cfg.estimated_bitrate_bits_per_s,
    }
    summary = (
        f"{free / 1e9:.2f} GB free ({usable / 1e9:.2f} GB above the reserve), about "
        f"{minutes:.0f} min at "
        f"{cfg.estimated_bitrate_bits_per_s / 1e6:g} Mbit/s"
    )
    if minutes < cfg.min_recording_min:
        return CheckResult(
            "storage",
            Outcome.FAIL,
            f"storage short: {summary}, need {cfg.min_recording_min:g} min",
            data,
        )
    if minutes < cfg.warn_recording_min:
        return CheckResult("storage", Outcome.WARN, f"storage low: {summary}", data)
    return CheckResult("storage", Outcome.PASS, summary, data)


def check_camera(health: CaptureHealth | None, error: str = "") -> CheckResult:
    if health is None:
        return CheckResult("camera", Outcome.FAIL, f"camera probe failed: {error}")
    data = {"frames_per_s": round(health.frames_per_s, 2)}
    if not health.camera_ok:
        return CheckResult(
            "camera", Outcome.FAIL, f"camera delivers no frames: {health.camera_detail}", data
        )
    return CheckResult("camera", Outcome.PASS, health.camera_detail or "frames arriving", data)


def check_microphone(
    health: CaptureHealth | None, error: str = "", *, silent: str = "fail"
) -> CheckResult:
    """``silent`` ("fail" by default, or "warn") is the outcome when a recording would have
    no sound: without it what was said (the preamble, the officer's reasons) is lost."""
    outcome = Outcome.FAIL if silent == "fail" else Outcome.WARN
    if health is None:
        return CheckResult("microphone", outcome, f"microphone probe failed: {error}")
    data = {"rms_dbfs": round(health.audio_rms_dbfs, 1)}
    if not health.microphone_ok:
        return CheckResult(
            "microphone",
            outcome,
            f"microphone delivers no signal: {health.microphone_detail}",
            data,
        )
    return CheckResult(
        "microphone", Outcome.PASS, health.microphone_detail or "signal present", data
    )


@dataclass(frozen=True)
class ClockSyncState:
    kernel_synced: bool | None
    """None: the kernel could not be asked."""
    dock_synced_utc: datetime | None
    dock_offset_s: float | None
    rtc_present: bool
    ntp_detail: str = ""
    """What the time service answered (e.g. ``timedatectl: NTPSynchronized=yes``)."""


def read_clock_sync_state(
    state_dir: Path,
    *,
    kernel_probe: Callable[[], bool | None] | None = None,
    clock_source: str = "auto",
    command_path: str | None = None,
    rtc_dir: Path = Path("/sys/class/rtc"),
) -> ClockSyncState:
    """The dock sync in ``state_dir`` plus the time service's answer (``clock_source``, with
    commands looked up in ``command_path``), or ``kernel_probe``'s where one is given."""
    dock_utc: datetime | None = None
    offset: float | None = None
    path = state_dir / "clock.json"
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            dock_utc = datetime.fromisoformat(data["synced_utc"].replace("Z", "+00:00"))
            offset = float(data.get("offset_s", 0.0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
    rtc = rtc_dir.is_dir() and any(rtc_dir.iterdir())
    if kernel_probe is not None:
        return ClockSyncState(kernel_probe(), dock_utc, offset, rtc)
    answer = ask_time_service(clock_source, path=command_path)
    return ClockSyncState(answer.synced, dock_utc, offset, rtc, answer.detail)


def check_clock(state: ClockSyncState, now: datetime, cfg: ChecksConfig) -> CheckResult:
    data: dict[str, Any] = {"kernel_synced": state.kernel_synced, "rtc": state.rtc_present}
    if state.ntp_detail:
        data["time_service"] = state.ntp_detail
    if state.dock_synced_utc is not None:
        age_h = (now - state.dock_synced_utc).total_seconds() / 3600.0
        data.update(dock_sync_age_h=round(age_h, 2), dock_offset_s=state.dock_offset_s)
    else:
        age_h = None
    if state.kernel_synced:
        how = state.ntp_detail or "kernel reports locked"
        return CheckResult("clock", Outcome.PASS, f"synchronised by NTP ({how})", data)
    offset = abs(state.dock_offset_s or 0.0)
    recent = age_h is not None and 0 <= age_h <= cfg.dock_sync_max_age_h
    if recent and offset <= cfg.dock_offset_max_s:
        return CheckResult(
            "clock", Outcome.PASS, f"synchronised at the dock {age_h:.1f} h ago", data
        )
    if recent:
        dock = (
            f"at the last dock sync the clock was {offset:.1f} s off the receiver's "
            f"(limit {cfg.dock_offset_max_s:g} s)"
        )
    elif age_h is None:
        dock = "never synchronised at a dock"
    else:
        dock = f"last dock sync {age_h:.1f} h ago (limit {cfg.dock_sync_max_age_h:g} h)"
    rtc = "RTC present" if state.rtc_present else "no RTC"
    outcome = Outcome.FAIL if cfg.clock_unsynced == "fail" else Outcome.WARN
    ntp = f"no NTP lock ({state.ntp_detail})" if state.ntp_detail else "no NTP lock"
    return CheckResult("clock", outcome, f"clock not synchronised: {ntp}, {dock}, {rtc}", data)


def check_signing_key(key_path: Path) -> CheckResult:
    from evidence.errors import EvidenceError
    from evidence.keys import key_id, load_signing_key

    if not key_path.exists():
        return CheckResult("signing-key", Outcome.FAIL, f"no signing key at {key_path}")
    try:
        key = load_signing_key(key_path)
    except (EvidenceError, OSError, ValueError) as exc:
        return CheckResult("signing-key", Outcome.FAIL, f"signing key unreadable: {exc}")
    kid = key_id(key.public_key())
    return CheckResult("signing-key", Outcome.PASS, f"present ({kid})", {"key": kid})


def check_spool(spool_dir: Path) -> CheckResult:
    probe = spool_dir / "state" / f".write-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return CheckResult("spool", Outcome.FAIL, f"spool not writable: {exc}")
    return CheckResult("spool", Outcome.PASS, f"writable ({spool_dir})")


# --- encryption at rest ------------------------------------------------------------------


PLAINTEXT_WARNING = (
    "spool media are NOT encrypted: no [device] encryption_key_file configured; a lost or "
    "stolen card shows every recording (acceptable for development only)"
)


def load_recipient(cfg: AgentConfig) -> X25519PublicKey | None:
    """The receiver's encryption key from ``[device] encryption_key_file``; None if not set.

    Raises :class:`~agent.errors.AgentConfigError` when it is set but unusable: a device told to
    encrypt must not fall back to plaintext.
    """
    path = cfg.encryption_key_path
    if path is None:
        return None
    try:
        return load_encryption_public_key(path)
    except EvidenceError as exc:
        raise AgentConfigError(
            "(agent)",
            "device.encryption_key_file",
            f"{exc} (a device told to encrypt never falls back to plaintext)",
        ) from exc


def check_encryption(cfg: AgentConfig) -> CheckResult:
    """The ``encryption`` check item: pass when media are encrypted, warn when plaintext."""
    path = cfg.encryption_key_path
    try:
        recipient = load_recipient(cfg)
    except AgentConfigError as exc:
        return CheckResult("encryption", Outcome.FAIL, exc.detail, {"key_file": str(path)})
    if recipient is None:
        return CheckResult("encryption", Outcome.WARN, PLAINTEXT_WARNING, {"encrypted": False})
    rid = recipient_id(recipient)
    return CheckResult(
        "encryption",
        Outcome.PASS,
        f"spool media encrypted to the receiver key {rid}",
        {"encrypted": True, "recipient": rid},
    )


# --- all together ------------------------------------------------------------------------------


@dataclass
class CheckInputs:
    cfg: ChecksConfig
    full_runtime_min: float
    battery: BatteryGauge
    storage: StorageGauge
    capture: CapturePipeline | None
    key_path: Path
    spool_dir: Path
    clock_state: Callable[[], ClockSyncState]
    now: Callable[[], datetime]
    storage_reserve_bytes: int = 0
    """Free space the recording may not use (``[recording] storage_stop_bytes``)."""


def run_checks(inputs: CheckInputs) -> CheckReport:
    from evidence.records import format_utc

    now = inputs.now()
    health: CaptureHealth | None = None
    error = "no capture pipeline"
    if inputs.capture is not None:
        try:
            health = inputs.capture.probe(timeout_s=inputs.cfg.probe_timeout_s)
        except Exception as exc:
            error = str(exc)
            log.warning("capture probe failed: %s", exc)
    results = [
        check_battery(inputs.battery, inputs.cfg, inputs.full_runtime_min),
        check_storage(inputs.storage, inputs.cfg, inputs.storage_reserve_bytes),
        check_camera(health, error),
        check_microphone(health, error, silent=inputs.cfg.microphone_silent),
        check_clock(inputs.clock_state(), now, inputs.cfg),
        check_signing_key(inputs.key_path),
        check_spool(inputs.spool_dir),
    ]
    report = CheckReport(format_utc(now), results)
    log.info("pre-capture checks: %s", report.outcome)
    return report
