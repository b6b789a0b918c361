"""The Pi backend's small parts: sound devices by name, resampling for the speaker, the picamera2
version shim, the board's encoder plan and dropped-frame arithmetic."""

from __future__ import annotations

import array
import itertools
from pathlib import Path

import pytest

from agent.media import fake_picamera2, picamera2_shim
from agent.media.alsa import capture_device, choose_output_device, list_cards
from agent.media.audio import resample_s16le, tone_s16le
from agent.media.base import CaptureDeviceError
from agent.media.fake_picamera2.outputs import CircularOutput2, SplittableOutput
from agent.media.frames import dropped_between
from agent.media.pimodel import effective_fps, plan_for, read_model
from agent.tts import tone

# /proc/asound/cards on a Pi 4 with a USB microphone and a HAT speaker
CARDS = """ 0 [Headphones     ]: bcm2835_headpho - bcm2835 Headphones
                      bcm2835 Headphones
 1 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0
                      vc4-hdmi-0
 2 [Device         ]: USB-Audio - USB PnP Sound Device
                      C-Media Electronics Inc. USB PnP Sound Device at usb-0000:01:00.0-1.3
"""

# PyAudio's get_device_info_by_index() on the same Pi (abridged)
DEVICES = [
    {"index": 0, "name": "bcm2835 Headphones: - (hw:0,0)", "maxOutputChannels": 8,
     "maxInputChannels": 0, "defaultSampleRate": 44100.0},
    {"index": 1, "name": "USB PnP Sound Device: Audio (hw:2,0)", "maxOutputChannels": 0,
     "maxInputChannels": 1, "defaultSampleRate": 48000.0},
    {"index": 2, "name": "sysdefault", "maxOutputChannels": 128, "maxInputChannels": 128,
     "defaultSampleRate": 48000.0},
    {"index": 3, "name": "MAX98357A speaker (hw:3,0)", "maxOutputChannels": 2,
     "maxInputChannels": 0, "defaultSampleRate": 48000.0},
]  # fmt: skip


def test_capture_device_by_alsa_card_name(tmp_path: Path) -> None:
    cards = tmp_path / "cards"
    cards.write_text(CARDS)
    assert [c.id for c in list_cards(cards)] == ["Headphones", "vc4hdmi0", "Device"]
    assert capture_device("Device", cards_path=cards) == "plughw:CARD=Device,DEV=0"
    with pytest.raises(CaptureDeviceError, match=r"'Mic' not found.*Device \(USB-Audio"):
        capture_device("Mic", cards_path=cards)
    with pytest.raises(CaptureDeviceError, match="not an ALSA card id"):
        capture_device("Device,DEV=1 hw:0", cards_path=cards)
    assert list_cards(tmp_path / "absent") == []


def test_speaker_by_name_not_index() -> None:
    assert choose_output_device(DEVICES, "max98357a").index == 3
    # an input-only device of that name is never chosen as the speaker
    with pytest.raises(CaptureDeviceError, match=r"no output device named like 'USB PnP'"):
        choose_output_device(DEVICES, "USB PnP")


def _zero_crossings(pcm: bytes) -> int:
    samples = array.array("h")
    samples.frombytes(pcm)
    return sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))


@pytest.mark.parametrize("rate_in", [16000, 22050])
def test_playback_is_resampled_to_the_speaker_rate(rate_in: int) -> None:
    pcm = tone_s16le(440.0, 1.0, rate_in)
    out = resample_s16le(pcm, rate_in, 1, 48000, 1)
    assert len(out) // 2 == pytest.approx(48000, abs=200)  # same duration
    # same pitch: 440 Hz is 880 zero crossings a second at any rate
    assert _zero_crossings(out) == pytest.approx(_zero_crossings(pcm), abs=4)
    cue = tone([880.0, 1320.0])  # the agent's cue tone (16 kHz)
    stereo = resample_s16le(cue.pcm_s16le, cue.sample_rate_hz, 1, 48000, 2)
    assert len(stereo) // 4 == pytest.approx(cue.duration_s * 48000, abs=200)
    assert resample_s16le(pcm, rate_in, 1, rate_in, 1) is pcm


def test_shim_refuses_picamera2_without_splittable_output() -> None:
    with pytest.raises(CaptureDeviceError, match=r"0\.3\.25 is too old.*>= 0\.3\.26"):
        picamera2_shim.check_version(picamera2_shim.parse_version("0.3.25"))
    picamera2_shim.check_version(picamera2_shim.parse_version("0.3.36"))
    modules = picamera2_shim.load(fake=True)
    assert modules.fake
    assert modules.version == (0, 3, 36)
    assert modules.picamera2.Picamera2 is fake_picamera2.Picamera2


def test_shim_names_a_private_field_that_went_away() -> None:
    circular = CircularOutput2(buffer_duration_ms=1000)
    assert picamera2_shim.circular_time_offset(circular) == 0
    splitter = SplittableOutput()
    picamera2_shim.release_split(splitter)
    assert splitter._split_done.is_set()

    class Renamed:
        _split_done = "not an event"

    with pytest.raises(picamera2_shim.Picamera2ShimError, match="_time_offset is gone"):
        picamera2_shim.circular_time_offset(object())
    with pytest.raises(picamera2_shim.Picamera2ShimError, match="_split_done"):
        picamera2_shim.release_split(Renamed())


def test_encoder_plan_per_board(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    pi5 = plan_for(read_model(model))
    assert pi5.software_h264
    assert pi5.max_fps == 25
    assert effective_fps(30, pi5) == 25
    zero = plan_for("Raspberry Pi Zero 2 W Rev 1.0")
    assert not zero.software_h264
    assert effective_fps(30, zero) == 25
    pi4 = plan_for("Raspberry Pi 4 Model B Rev 1.5")
    assert not pi4.software_h264
    assert effective_fps(25, pi4) == 25
    other = plan_for(read_model(tmp_path / "absent"))
    assert other.max_fps is None
    assert effective_fps(60, other) == 60


def test_dropped_between() -> None:
    period = 40_000.0  # 25 fps
    assert dropped_between(0, 40_000, period) == 0
    assert dropped_between(0, 55_000, period) == 0  # jitter inside half a period
    assert dropped_between(0, 80_000, period) == 1
    assert dropped_between(0, 240_000, period) == 5
    assert dropped_between(80_000, 40_000, period) == 0  # backwards: not a drop
    with pytest.raises(ValueError, match="frame_us must be > 0"):
        dropped_between(0, 1, 0)
