"""A fake picamera2 shipped with the agent (as gpiozero ships MockFactory), so the Pi backend's
own code (:mod:`agent.media.pi`) runs in every test run and on any Linux box.

Same module layout and interfaces as picamera2 0.3.36: ``Picamera2`` (here), ``.encoders``
(``H264Encoder`` shaped like the V4L2 hardware encoder, ``LibavH264Encoder`` like the software
one a Pi 5 uses), ``.outputs`` (``Output``, ``CircularOutput2``, ``SplittableOutput``,
``PyavOutput``) and ``.request`` (``MappedArray``). The encoders emit real H.264 (libx264) and
AAC packets through PyAV; only the sensor is invented. Select it with
``[capture] camera = "fake"`` (Pi backend) or ``PiCapture(..., camera="fake")``.

Failure posture: behaves like picamera2 (RuntimeError on misuse); never touches hardware.
"""

from agent.media.fake_picamera2.camera import Picamera2

__version__ = "0.3.36"
"""The picamera2 release whose interfaces this fake reproduces."""

__all__ = ["Picamera2", "__version__"]
