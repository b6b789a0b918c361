"""Flow control for many devices docking at once: send windows granted as fixed slots.

The broker queues every unreceipted message of every device for the one receiver, and the
receiver takes them in (and holds them until handled) as fast as the broker delivers, so the
memory of both is the sum of what devices keep in flight. That sum must stay within the
broker's queue limits (``max_queued_bytes`` / ``max_queued_messages``; a message beyond them is
dropped silently) and must not grow with the number of devices docked.

So the queue budget (``broker_queue_bytes`` / ``broker_queue_messages``) is cut into
``slots`` windows of ``device_window_bytes`` each. A device that says hello gets a slot if one
is free, or waits in arrival order (its window is 0: it sends nothing new). A slot is never
shrunk while its holder uses it, so nothing in flight is stranded and nothing is evicted; it is
handed on only when its holder

* says it has nothing left to send (``idle`` in its hello) or goes offline (its status
  message; MQTT keeps the device's order, so by the time the receiver reads either, everything
  the device sent before is already out of the queues), or
* sent nothing for ``grant_idle_s`` (its data has all reached the receiver; it is told its
  window is 0 and asks again with a hello when it has more to send).

The sum of the windows granted is therefore at most ``slots × window <= broker_queue_bytes`` at
all times, whatever the number of devices; the broker and receiver hold at most that.
A receiver restart loses the table: devices ask again (hello) when they see its new status.

Every device the broker lets in is answered, revoked and not-yet-registered ones included (their
records must reach quarantine, or be deferred, rather than wait on the device); devices ignore a
window message that reaches them before the reply to their hello on a new connection (one queued
in their persistent session while they were away).

Failure posture: pure bookkeeping, no I/O, time from the injected clock; bounded by the number
of devices holding a certificate of the dock's CA (only they get past the broker, each under its
own name).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from evidence import transfer as wire
from receiver.ingest.admission import Outgoing
from receiver.ingest.limits import Clock, Limits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotPlan:
    window_bytes: int
    window_messages: int
    slots: int


def slot_plan(limits: Limits) -> SlotPlan:
    """How the broker's queue budget is cut: ``slots`` windows that together fit in it."""
    window = max(1, min(limits.device_window_bytes, limits.broker_queue_bytes))
    slots = max(1, limits.broker_queue_bytes // window)
    messages = max(1, limits.broker_queue_messages // slots)
    return SlotPlan(window, messages, slots)


class Grants:
    """Who may send now (see the module docstring). Not thread-safe: the ingest owns it."""

    def __init__(self, limits: Limits, clock: Clock) -> None:
        self.plan = slot_plan(limits)
        self.idle_s = limits.grant_idle_s
        self.clock = clock
        #: slot holders → time of their last message
        self.active: dict[str, float] = {}
        #: devices waiting for a slot, in arrival order → time of their last hello
        self.waiting: OrderedDict[str, float] = OrderedDict()
        self._last_poll = float("-inf")

    @property
    def granted_bytes(self) -> int:
        """The sum of the windows granted now (never above the broker queue budget)."""
        return len(self.active) * self.plan.window_bytes

    def window(self, device: str) -> wire.Grant:
        p = self.plan
        if device in self.active:
            return wire.Grant(p.window_bytes, p.window_messages)
        return wire.Grant(0, 0)

    def hello(self, device: str, *, idle: bool = False) -> list[Outgoing]:
        """A device asks for a window (its own answer is :meth:`window`, sent with the clock
        reply), or (``idle``) says it has nothing left to send, which frees its window: MQTT
        keeps its order, so all it sent before is out of the queues. Returns the grants this
        sends to *other* devices."""
        now = self.clock()
        if idle:
            self.waiting.pop(device, None)
            if self.active.pop(device, None) is None:
                return []
            return self._fill(now)
        if device in self.active:
            self.active[device] = now
            return []
        self.waiting[device] = now  # keeps its place in the line if it was already waiting
        return [g for g in self._fill(now) if not g.topic.startswith(_prefix(device))]

    def touch(self, device: str) -> None:
        """Any message from a slot holder: it is still using its slot."""
        if device in self.active:
            self.active[device] = self.clock()

    def leave(self, device: str) -> list[Outgoing]:
        """The device went offline: its slot goes to the next in line."""
        self.waiting.pop(device, None)
        if self.active.pop(device, None) is None:
            return []
        log.debug("%s left; its window is free", device)
        return self._fill(self.clock())

    def poll(self) -> list[Outgoing]:
        """Take slots back from idle holders, forget devices that stopped asking, fill slots.
        Cheap; does the work at most once a second."""
        now = self.clock()
        if now - self._last_poll < 1.0:
            return []
        self._last_poll = now
        out: list[Outgoing] = []
        for device in [d for d, t in self.active.items() if now - t >= self.idle_s]:
            t0 = self.active.pop(device)
            out.append(_grant(device, wire.Grant(0, 0)))
            log.debug("%s idle for %.0f s; its window goes to the next in line", device, now - t0)
        # a waiting device with work repeats its hello (agent.uplink: WAIT_HELLO_S)
        stale = 6 * self.idle_s
        for device in [d for d, t in self.waiting.items() if now - t >= stale]:
            del self.waiting[device]
        return out + self._fill(now)

    def _fill(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        while self.waiting and len(self.active) < self.plan.slots:
            device, _ = self.waiting.popitem(last=False)
            self.active[device] = now
            out.append(_grant(device, self.window(device)))
        return out


def _prefix(device: str) -> str:
    return wire.down_topic(device, "")


def _grant(device: str, grant: wire.Grant) -> Outgoing:
    return Outgoing(wire.down_topic(device, wire.DOWN_WINDOW), grant.encode())
