"""Builds a running agent from its configuration: spool, capture, controls, gauges, recorder.

Failure posture: anything that makes recording impossible (no key, an unreadable receiver
encryption key, unusable spool, a capture backend that cannot start) raises an
:class:`~agent.errors.AgentError` or :class:`~agent.media.base.MediaError` with the reason
before any device is touched; optional hardware (buttons and LEDs) that cannot be claimed is
logged and the agent runs without it. No encryption key configured is allowed (development)
but logged as a WARNING at every start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.checks import PLAINTEXT_WARNING, load_recipient, read_clock_sync_state
from agent.clock import Clock
from agent.config import AgentConfig, BatteryConfig
from agent.errors import HardwareError
from agent.hardware.battery import BatteryGauge, SysfsBatteryGauge, write_simulated_battery
from agent.hardware.controls import Controls, GpioControls, SimulatedControls
from agent.hardware.storage import FilesystemStorage, SimulatedStorage, StorageGauge
from agent.media import create_capture
from agent.media.base import CapturePipeline
from agent.notify import Notifier
from agent.recorder import Recorder
from agent.recovery import RecoveryResult, recover
from agent.spool import RecordingSpool
from agent.tts import EspeakSynthesizer
from evidence.encryption import recipient_id

log = logging.getLogger(__name__)

DEFAULT_SYSFS_ROOT = BatteryConfig().sysfs_root


@dataclass
class Runtime:
    cfg: AgentConfig
    clock: Clock
    spool: RecordingSpool
    capture: CapturePipeline
    controls: Controls | None
    battery: BatteryGauge
    storage: StorageGauge
    recorder: Recorder
    recovery: RecoveryResult


def make_battery(cfg: AgentConfig, *, create: bool = True) -> BatteryGauge:
    """The configured gauge; a simulated device without one gets a battery directory in its
    spool (created at 80 % unless ``create`` is False)."""
    bc = cfg.hardware.battery
    root = Path(bc.sysfs_root)
    if cfg.hardware.backend == "simulated" and bc.sysfs_root == DEFAULT_SYSFS_ROOT:
        root = cfg.spool_path / "state" / "sim-power-supply"
        if create and not (root / "BAT0").exists():
            write_simulated_battery(root, capacity_percent=80.0, time_to_empty_s=6 * 3600)
    return SysfsBatteryGauge(root, bc.supply)


def make_storage(cfg: AgentConfig) -> StorageGauge:
    quota = cfg.hardware.storage.simulated_quota_bytes
    if cfg.hardware.backend == "simulated" and quota is not None:
        return SimulatedStorage(cfg.spool_path, quota)
    return FilesystemStorage(cfg.spool_path)


def make_controls(cfg: AgentConfig, clock: Clock) -> Controls | None:
    try:
        if cfg.hardware.backend == "simulated":
            return SimulatedControls(cfg.hardware.controls, clock=clock)
        return GpioControls(cfg.hardware.controls, clock=clock)
    except HardwareError as exc:
        log.error("running without buttons/LEDs: %s", exc)
        return None


def make_capture(cfg: AgentConfig, clock: Clock, device_id: str) -> CapturePipeline:
    c = cfg.capture
    options: dict[str, object] = {
        "segment_duration_s": c.segment_duration_s,
        "pre_event_s": c.pre_event_s,
        "pre_event_audio": c.pre_event_audio,
        "sync_interval_s": c.sync_interval_s,
        "width": c.width,
        "height": c.height,
        "fps": c.fps,
    }
    if c.backend == "simulated":
        options.update(realtime=c.realtime, device_id=device_id)
    else:
        options.update(
            bitrate_bps=c.bitrate_bits_per_s,
            audio_card=c.audio_card,
            audio_device=c.audio_device,
            audio_input_format=c.audio_input_format,
            audio_channels=c.audio_channels,
            speaker_device=c.speaker_device,
            speaker_device_index=c.speaker_device_index if c.speaker_device_index >= 0 else None,
            speaker_rate_hz=c.speaker_rate_hz,
            camera=c.camera,
            timezone=cfg.device.timezone,
            device_id=device_id,
        )
    capture = create_capture(c.backend, clock, **options)
    capture.liveness.stall_s = cfg.recording.capture_stall_s
    return capture


def build_runtime(
    cfg: AgentConfig,
    *,
    clock: Clock,
    key: Ed25519PrivateKey,
    device_id: str,
    notifier: Notifier | None = None,
    with_controls: bool = True,
    spool_cls: type[RecordingSpool] = RecordingSpool,
    session_ids: Callable[[datetime], str] | None = None,
) -> Runtime:
    """Open the spool, run crash recovery (before anything else), and wire the recorder."""
    recipient = load_recipient(cfg)
    if recipient is None:
        log.warning("%s", PLAINTEXT_WARNING)
    else:
        log.info("spool media encrypted to the receiver key %s", recipient_id(recipient))
    spool = spool_cls(cfg.spool_path, device_id, key, clock, recipient=recipient)
    recovery = recover(spool)
    capture = make_capture(cfg, clock, device_id)
    battery = make_battery(cfg)
    storage = make_storage(cfg)
    controls = make_controls(cfg, clock) if with_controls else None
    recorder = Recorder(
        cfg,
        spool=spool,
        capture=capture,
        clock=clock,
        battery=battery,
        storage=storage,
        clock_state=lambda: read_clock_sync_state(
            spool.state_dir, clock_source=cfg.checks.clock_source
        ),
        synthesizer=EspeakSynthesizer(words_per_minute=cfg.speech.words_per_minute),
        controls=controls,
        notifier=notifier,
        session_ids=session_ids,
    )
    return Runtime(cfg, clock, spool, capture, controls, battery, storage, recorder, recovery)
