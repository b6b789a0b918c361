"""Device adapters other than camera/microphone/speaker: buttons, LEDs, buzzer, battery, storage.

Each adapter is an abstract base with a Raspberry Pi backend and a simulated backend; the
simulated ones use the same code paths wherever possible (gpiozero's MockFactory pins, a battery
directory in sysfs layout, the real filesystem of the spool).

Failure posture: see each module; in short, reading a gauge never stops a recording, and a pin
that cannot be claimed is reported once as a :class:`~agent.errors.HardwareError`.
"""
