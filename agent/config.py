"""The agent's TOML configuration: a tree of dataclasses, every field with a default.

Other parts add their own sections by adding a field to :class:`AgentConfig` whose type is a
dataclass with defaults (e.g. ``uplink: UplinkConfig = field(default_factory=UplinkConfig)``);
:func:`load_config` maps TOML tables onto them with the project's one loader,
:mod:`evidence.tomlconfig`.

Failure posture: a missing file, a TOML syntax error, an unknown key or a value of the wrong
type raises :class:`~agent.errors.AgentConfigError` naming the file and the dotted key. Nothing is
guessed: a typo must not silently fall back to a default on an evidence device.
"""

from __future__ import annotations

import logging
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import AgentConfigError
from agent.timesync import SOURCES
from agent.uplink.config import UplinkConfig
from evidence import tomlconfig

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/bodycam/agent.toml")


@dataclass
class DeviceConfig:
    id: str = ""
    """Device id (the certificate CN). Empty: simulate derives ``SIM-<hostname>``."""
    timezone: str = ""
    """IANA zone of the time burned into the picture (e.g. "Asia/Shanghai"; "": the system's
    local zone)."""
    spool_dir: str = "/var/lib/bodycam/spool"
    key_file: str = ""
    """Ed25519 signing key (PEM). Empty: ``<spool>/state/device.key``."""
    encryption_key_file: str = ""
    """The receiver's X25519 public key (PEM, ``receiver-encryption.pub`` from the provisioning
    bundle): spooled media are encrypted to it. Empty: media stay plaintext on the card
    (development only; the agent warns at start and ``check`` reports it)."""


@dataclass
class ControlsConfig:
    record_pin: int = 17
    mark_pin: int = 27
    led_green_pin: int = 22
    led_red_pin: int = 23
    led_amber_pin: int | None = 24
    buzzer_pin: int | None = 25
    vibration_pin: int | None = None
    hold_time_s: float = 3.0
    mark_hold_time_s: float = 2.0
    """A mark press held this long signs an ``obstruction`` marker (Art. 26) instead."""
    bounce_time_s: float = 0.05
    """Button contact bounce: edges closer than this to the previous edge are ignored."""


@dataclass
class BatteryConfig:
    sysfs_root: str = "/sys/class/power_supply"
    supply: str = ""
    """Name of the supply directory; empty: the first one whose ``type`` is Battery."""
    full_runtime_min: float = 480.0
    """Recording minutes on a full battery, used when the gauge gives no time-to-empty."""


@dataclass
class StorageConfig:
    simulated_quota_bytes: int | None = None
    """Simulated hardware only: pretend the spool's filesystem holds this many bytes."""


@dataclass
class HardwareConfig:
    backend: str = "pi"
    """"pi" or "simulated" (buttons on gpiozero mock pins, battery from ``battery.sysfs_root``)."""
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    battery: BatteryConfig = field(default_factory=BatteryConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)


@dataclass
class CaptureConfig:
    backend: str = "pi"
    width: int = 1280
    height: int = 720
    fps: int = 25
    segment_duration_s: float = 10.0
    pre_event_s: float = 30.0
    pre_event_audio: bool = True
    sync_interval_s: float = 1.0
    realtime: bool = True
    """Simulated capture only: frames at wall rate (False: as fast as the CPU allows)."""
    bitrate_bits_per_s: int = 4_000_000
    """Pi only: H.264 encoder bitrate."""
    audio_card: str = ""
    """Pi only: the microphone's ALSA card id (``/proc/asound/cards``, in brackets), opened as
    ``plughw:CARD=<id>,DEV=0``. Required unless ``audio_device`` names a device (e.g. a dsnoop
    PCM): ALSA's "default" is HDMI on Raspberry Pi OS Lite."""
    audio_device: str = ""
    """Pi only: an explicit capture PCM instead of ``audio_card`` (e.g. "dsnoop_mic")."""
    audio_input_format: str = "alsa"
    """Pi only: PyAV input format of the microphone ("lavfi" feeds a synthetic source to the
    fake camera)."""
    audio_channels: int = 1
    """Pi only: channels of the recorded AAC stream (1 mono, 2 stereo); recorded as such."""
    speaker_device: str = ""
    """Pi only: the speaker, by (part of) its PortAudio output device name, e.g. "USB Audio"
    or the ALSA card id; "" is PortAudio's default output."""
    speaker_device_index: int = -1
    """Deprecated (indexes change between boots): use ``speaker_device``."""
    speaker_rate_hz: int = 48000
    """Pi only: the rate speech and tones are resampled to before they are played."""
    camera: str = "picamera2"
    """Pi only: "picamera2", or "fake" (the fake Picamera2 shipped with the agent: real
    H.264/AAC from a synthetic sensor, for tests and bench runs of the Pi backend)."""


@dataclass
class ChecksConfig:
    battery_fail_percent: float = 5.0
    battery_warn_percent: float = 20.0
    min_recording_min: float = 30.0
    """Refuse to record when battery or storage cannot hold this long a recording."""
    warn_recording_min: float = 120.0
    estimated_bitrate_bits_per_s: int = 4_000_000
    probe_timeout_s: float = 3.0
    dock_sync_max_age_h: float = 24.0
    dock_offset_max_s: float = 2.0
    """A dock sync counts only if the device clock was within this of the receiver's."""
    clock_unsynced: str = "warn"
    """Outcome when the clock is not known to be synchronised: "warn" or "fail"."""
    clock_source: str = "auto"
    """Who says the clock is synchronised: "auto", "timesyncd" (timedatectl), "chrony"
    (chronyc) or "adjtimex" (kernel; blocked by the unit's ProtectClock=)."""
    microphone_silent: str = "fail"
    """Outcome when a recording would have no sound (no microphone, or no signal): "fail"
    (refuse, the default: a recording without sound misses what was said) or "warn"."""


@dataclass
class AssignmentConfig:
    """Used when no assignment was pushed by the receiver (``state/assignment.json``)."""

    case: str | None = None
    officers: list[str] = field(default_factory=list)
    place: str = ""
    reason: str = ""
    target: str = ""
    stage: str = ""


@dataclass
class SpeechConfig:
    languages: list[str] = field(default_factory=lambda: ["zh"])
    """Preamble languages in order: "zh" and optionally "en"."""
    voice_zh: str = "cmn-latn-pinyin"
    voice_en: str = "en"
    words_per_minute: int = 160
    enabled: bool = True


@dataclass
class RecordingConfig:
    cue_interval_min: float = 2.0
    reminder_interval_s: float = 120.0
    """In an assignment's scheduled window, remind the officer this often while not recording."""
    low_storage_warn_min: float = 30.0
    """Warn (LED, tone, log) when the spool holds less than this many minutes."""
    storage_stop_bytes: int = 64 * 1024 * 1024
    """Below this free space, stop writing (a ``storage`` gap) until space comes back."""
    loop_interval_s: float = 0.2
    resume_after_crash: bool = True
    """``run``: when start-up recovery closed a session that was recording, record again at once
    (new session, preamble, then the prompt to state the reason for the interruption)."""
    capture_stall_s: float = 10.0
    """A capture thread that has not turned for this long is hung: the systemd watchdog ping is
    withheld so systemd restarts the agent (``agent/media/liveness.py``)."""


@dataclass
class AgentConfig:
    device: DeviceConfig = field(default_factory=DeviceConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    assignment: AssignmentConfig = field(default_factory=AssignmentConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    """Dock upload settings (``agent/uplink/config.py``); the uploader runs as its own process."""

    @property
    def spool_path(self) -> Path:
        return Path(self.device.spool_dir)

    @property
    def encryption_key_path(self) -> Path | None:
        return Path(self.device.encryption_key_file) if self.device.encryption_key_file else None

    @property
    def key_path(self) -> Path:
        if self.device.key_file:
            return Path(self.device.key_file)
        return self.spool_path / "state" / "device.key"


def simulated_config(spool_dir: Path) -> AgentConfig:
    """Defaults for a simulated device whose spool is ``spool_dir`` (no config file)."""
    cfg = AgentConfig()
    cfg.device.spool_dir = str(spool_dir)
    cfg.hardware.backend = "simulated"
    cfg.capture.backend = "simulated"
    cfg.capture.width, cfg.capture.height, cfg.capture.fps = 640, 360, 15
    cfg.capture.realtime = False
    return cfg


def load_config(path: Path) -> AgentConfig:
    """Read ``path`` (TOML) into an :class:`AgentConfig`; missing keys keep their defaults."""
    try:
        cfg = tomlconfig.load(AgentConfig, path)
    except tomlconfig.ConfigFileError as exc:
        raise AgentConfigError(exc.source, exc.key or "-", exc.detail) from None
    _validate(cfg, str(path))
    return cfg


def config_from_dict(data: dict[str, Any], *, source: str = "<dict>") -> AgentConfig:
    try:
        cfg = tomlconfig.from_table(AgentConfig, data, source=source)
    except tomlconfig.ConfigFileError as exc:
        raise AgentConfigError(source, exc.key, exc.detail) from None
    _validate(cfg, source)
    return cfg


def _validate(cfg: AgentConfig, source: str) -> None:
    if cfg.hardware.backend not in ("pi", "simulated"):
        raise AgentConfigError(source, "hardware.backend", "must be 'pi' or 'simulated'")
    if cfg.capture.backend not in ("pi", "simulated"):
        raise AgentConfigError(source, "capture.backend", "must be 'pi' or 'simulated'")
    for key in ("clock_unsynced", "microphone_silent"):
        if getattr(cfg.checks, key) not in ("warn", "fail"):
            raise AgentConfigError(source, f"checks.{key}", "must be 'warn' or 'fail'")
    if cfg.checks.clock_source not in SOURCES:
        raise AgentConfigError(source, "checks.clock_source", f"must be one of {list(SOURCES)}")
    for lang in cfg.speech.languages:
        if lang not in ("zh", "en"):
            raise AgentConfigError(source, "speech.languages", f"unknown language {lang!r}")
    if cfg.checks.battery_fail_percent > cfg.checks.battery_warn_percent:
        raise AgentConfigError(
            source, "checks.battery_fail_percent", "must not exceed battery_warn_percent"
        )
    if cfg.capture.camera not in ("picamera2", "fake"):
        raise AgentConfigError(source, "capture.camera", "must be 'picamera2' or 'fake'")
    if cfg.capture.audio_channels not in (1, 2):
        raise AgentConfigError(source, "capture.audio_channels", "must be 1 or 2")
    if not 8000 <= cfg.capture.speaker_rate_hz <= 192000:
        raise AgentConfigError(source, "capture.speaker_rate_hz", "must be 8000..192000")
    if cfg.device.timezone:
        try:
            zoneinfo.ZoneInfo(cfg.device.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise AgentConfigError(source, "device.timezone", f"unknown time zone: {exc}") from None
    if cfg.capture.segment_duration_s <= 0:
        raise AgentConfigError(source, "capture.segment_duration_s", "must be > 0")
    if cfg.recording.capture_stall_s <= 0:
        raise AgentConfigError(source, "recording.capture_stall_s", "must be > 0")
    if cfg.recording.cue_interval_min <= 0:
        raise AgentConfigError(source, "recording.cue_interval_min", "must be > 0")
