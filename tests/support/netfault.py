"""A fault-injecting TCP proxy for loopback tests: it sits between a device and the broker.

The device connects to :attr:`FaultProxy.port` instead of the broker's; the proxy forwards bytes
both ways untouched (TLS passes through it: the broker's certificate names 127.0.0.1, which the
proxy's address still is) and, when told, injects one fault on every connection open at the time:

* ``delay``: for a while, each chunk of bytes arrives a random latency later (order kept);
* ``throttle``: for a while, each direction forwards at most ``rate_bps`` bytes per second;
* ``stall``: forward nothing for a while (bytes back up into TCP), then go on;
* ``cut``: after a random number of further bytes, close both sides abruptly (SO_LINGER 0, so
  the kernel sends RST, as a pulled cable or a rebooted router would look to each end);
* ``drop``: from now on one direction is silently discarded, its end-of-stream too, while both
  sockets stay open: a half-dead connection that only keepalives or time-outs can detect.

Random choices (latencies, the cut's byte count, the dropped direction) come from a
:class:`random.Random` seeded by the caller, so a run's faults are reproducible in kind and size;
when they land depends on the network's timing. :class:`ProxyStats` counts connections, faults
by kind, bytes forwarded and bytes discarded.

Failure posture: one thread per connection, driven by a selector with a short timeout so faults
and :meth:`FaultProxy.stop` take effect within ``TICK_S``; a socket error on either side tears
that connection down (both sockets closed) and never raises into the caller; ``stop`` closes the
listener and every connection and joins the threads. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

TICK_S = 0.05
CHUNK_BYTES = 16 * 1024
#: Bytes held per direction before the proxy stops reading (so a stall pushes back into TCP).
BUFFER_LIMIT = 1 << 20

FaultKind = Literal["delay", "throttle", "stall", "cut", "drop"]
FAULT_KINDS: tuple[FaultKind, ...] = ("delay", "throttle", "stall", "cut", "drop")
UP, DOWN = 0, 1  # device -> broker, broker -> device


@dataclass(frozen=True)
class Fault:
    """One fault to inject. ``duration_s`` bounds delay, throttle and stall; ``latency_s`` is the
    per-chunk latency range of a delay; a cut comes within ``cut_within_bytes`` more bytes (or
    at ``cut_after_s`` if that much traffic never flows); ``direction`` is what a drop drops."""

    kind: FaultKind
    duration_s: float = 1.0
    latency_s: tuple[float, float] = (0.01, 0.2)
    rate_bps: int = 256 * 1024
    cut_within_bytes: int = 256 * 1024
    cut_after_s: float = 5.0
    direction: int = UP


@dataclass
class ProxyStats:
    connections: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    #: faults that found no open connection to act on (counted, not injected)
    missed: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_dropped: int = 0
    cuts_done: int = 0
    drops_closed: int = 0
    """Half-dead connections that an end closed before the proxy stopped (it never does)."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # connection threads count at once

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def to_dict(self) -> dict[str, object]:
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if k != "_lock"} | {
                "faults": dict(self.faults)
            }


class _Direction:
    """One direction's bytes on their way, each chunk with the time it may leave."""

    def __init__(self) -> None:
        self.queue: deque[tuple[float, bytes]] = deque()
        self.buffered = 0
        self.eof = False
        self.dropping = False
        self.next_send_at = 0.0  # throttle: when the next byte may go

    def due(self, now: float) -> bool:
        return bool(self.queue) and self.queue[0][0] <= now and self.next_send_at <= now


class _Connection:
    """A device connection and its broker connection, pumped by one thread."""

    def __init__(self, proxy: FaultProxy, down: socket.socket, up: socket.socket) -> None:
        self.proxy = proxy
        self.socks = (down, up)  # index: the side a direction *reads* from (UP reads the device)
        self.dirs = (_Direction(), _Direction())
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.stall_until = 0.0
        self.delay_until = 0.0
        self.latency = (0.0, 0.0)
        self.throttle_until = 0.0
        self.rate_bps = 0
        self.cut_at: int | None = None  # total bytes forwarded at which to cut
        self.cut_deadline = float("inf")
        self.moved = 0
        self.dropping = False
        self.thread = threading.Thread(target=self._run, name="netfault-conn", daemon=True)

    # -- faults (any thread) ---------------------------------------------------------------
    def inject(self, fault: Fault, rng: random.Random) -> None:
        now = time.monotonic()
        with self.lock:
            if fault.kind == "stall":
                self.stall_until = now + fault.duration_s
            elif fault.kind == "delay":
                self.delay_until, self.latency = now + fault.duration_s, fault.latency_s
            elif fault.kind == "throttle":
                self.throttle_until, self.rate_bps = now + fault.duration_s, fault.rate_bps
            elif fault.kind == "cut":
                self.cut_at = self.moved + rng.randint(1, max(1, fault.cut_within_bytes))
                self.cut_deadline = now + fault.cut_after_s
            else:
                self.dropping = True
                self.dirs[fault.direction].dropping = True

    # -- the pump --------------------------------------------------------------------------
    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            for s in self.socks:
                s.setblocking(False)
            self._pump(sel)
        except OSError as exc:
            log.debug("connection ended: %s", exc)
        finally:
            sel.close()
            self._close(abort=False)

    def _pump(self, sel: selectors.BaseSelector) -> None:
        rng = self.proxy.rng_for_latency
        while not self.closed.is_set() and not self.proxy.stopping.is_set():
            now = time.monotonic()
            if self._cut_due(now):
                self._cut()
                return
            wait = self._select(sel, now)
            for key, events in sel.select(timeout=wait):
                side = int(key.data)
                if events & selectors.EVENT_READ and not self._read(side, rng):
                    return
            now = time.monotonic()
            for d in (UP, DOWN):
                if not self._write(d, now):
                    return

    def _select(self, sel: selectors.BaseSelector, now: float) -> float:
        """Register what to wait for on each socket; returns how long to wait at most."""
        stalled = now < self.stall_until
        wait = TICK_S
        for side in (UP, DOWN):
            d, back = self.dirs[side], self.dirs[1 - side]
            events = 0
            if not d.eof and (d.dropping or (not stalled and d.buffered < BUFFER_LIMIT)):
                events |= selectors.EVENT_READ  # this socket's bytes go the ``side`` way
            if back.queue and not stalled:  # bytes waiting to go out on this socket
                ready_at = max(back.queue[0][0], back.next_send_at)
                if ready_at <= now:
                    events |= selectors.EVENT_WRITE
                else:
                    wait = min(wait, ready_at - now)
            sock = self.socks[side]
            key = sel.get_map().get(sock)
            if key is None and events:
                sel.register(sock, events, side)
            elif key is not None and not events:
                sel.unregister(sock)
            elif key is not None and key.events != events:
                sel.modify(sock, events, side)
        return max(wait, 0.001)

    def _read(self, side: int, rng: random.Random) -> bool:
        """Read what ``side`` sent; False when the connection is over."""
        d = self.dirs[side]
        try:
            data = self.socks[side].recv(CHUNK_BYTES)
        except BlockingIOError:
            return True
        if d.dropping:  # a half-dead direction: the bytes, and the end of the stream, vanish
            self.proxy.stats.add("bytes_dropped", len(data))
            d.eof = d.eof or not data
            return True
        if not data:
            return False  # an end closed: so does the other (MQTT has no half-close)
        now = time.monotonic()
        with self.lock:
            latency = rng.uniform(*self.latency) if now < self.delay_until else 0.0
        due = max(now + latency, d.queue[-1][0] if d.queue else 0.0)
        d.queue.append((due, data))
        d.buffered += len(data)
        return True

    def _write(self, side: int, now: float) -> bool:
        d = self.dirs[side]
        out = self.socks[1 - side]
        while d.due(now) and now >= self.stall_until:
            due, data = d.queue[0]
            if d.dropping:
                d.queue.popleft()
                d.buffered -= len(data)
                continue
            try:
                n = out.send(data)
            except BlockingIOError:
                return True
            except OSError:
                return False
            self._account(side, n, now)
            if n < len(data):
                d.queue[0] = (due, data[n:])
                return True
            d.queue.popleft()
            if self._cut_due(now):
                return True  # the loop cuts next
        return True

    def _account(self, side: int, n: int, now: float) -> None:
        d = self.dirs[side]
        d.buffered -= n
        self.proxy.stats.add("bytes_up" if side == UP else "bytes_down", n)
        with self.lock:
            self.moved += n
            if now < self.throttle_until and self.rate_bps > 0:
                d.next_send_at = max(now, d.next_send_at) + n / self.rate_bps

    def _cut_due(self, now: float) -> bool:
        with self.lock:
            return self.cut_at is not None and (
                self.moved >= self.cut_at or now >= self.cut_deadline
            )

    def _cut(self) -> None:
        self.proxy.stats.add("cuts_done")
        self._close(abort=True)

    def _close(self, *, abort: bool) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        if self.dropping and not self.proxy.stopping.is_set():
            self.proxy.stats.add("drops_closed")
        for s in self.socks:
            try:
                if abort:  # linger 0: close() sends RST instead of FIN
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass
        self.proxy._forget(self)


class FaultProxy:
    """Forward ``127.0.0.1:port`` to ``upstream``; inject faults with :meth:`inject`."""

    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rng = random.Random(seed)
        # latencies are drawn on the connection threads: their own generator, so the
        # faults' random choices do not depend on how many chunks happened to flow
        self.rng_for_latency = random.Random(seed + 1)
        self.stats = ProxyStats()
        self.stopping = threading.Event()
        self._conns: list[_Connection] = []
        self._armed: list[Fault] = []
        self._lock = threading.Lock()
        self._accepted = threading.Condition(self._lock)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(TICK_S)
        self.host, self.port = "127.0.0.1", int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name="netfault", daemon=True)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self.connections():
            conn.thread.join(5)
            conn._close(abort=False)

    def connections(self) -> list[_Connection]:
        with self._lock:
            return list(self._conns)

    def wait_connections(self, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` connections in total have been accepted."""
        with self._accepted:
            return self._accepted.wait_for(lambda: self.stats.connections >= count, timeout_s)

    def inject(self, fault: Fault) -> bool:
        """Apply ``fault`` to every open connection; False (counted as missed) if none is."""
        conns = [c for c in self.connections() if not c.closed.is_set()]
        if not conns:
            self.stats.add("missed")
            return False
        self.stats.faults[fault.kind] += 1
        for conn in conns:
            conn.inject(fault, self.rng)
        log.info("injected %s on %d connection(s)", fault.kind, len(conns))
        return True

    def arm(self, fault: Fault) -> None:
        """Inject ``fault`` into the next connection as it opens (before the TLS handshake)."""
        with self._lock:
            self._armed.append(fault)

    def random_fault(self, kind: FaultKind, *, keepalive_s: float) -> Fault:
        """A fault of ``kind`` with seeded random parameters, sized by the device's keepalive:
        stalls both shorter and longer than it (the long ones the device must notice), delays
        and throttles of half to twice it, cuts within 1 MiB, drops of either direction."""
        r = self.rng
        if kind == "stall":
            return Fault(kind, duration_s=r.uniform(0.1, 2.5) * keepalive_s)
        if kind == "delay":
            hi = r.uniform(0.02, 0.5)
            duration_s = r.uniform(0.5, 2.0) * keepalive_s
            return Fault(kind, duration_s=duration_s, latency_s=(hi / 4, hi))
        if kind == "throttle":
            duration_s = r.uniform(0.5, 2.0) * keepalive_s
            return Fault(kind, duration_s=duration_s, rate_bps=r.choice([64, 256]) << 10)
        if kind == "cut":
            return Fault(kind, cut_within_bytes=r.randint(1, 1 << 20))
        return Fault(kind, direction=r.choice((UP, DOWN)))

    # -- internals -------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                log.warning("proxy listener: %s", exc)
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError as exc:  # the broker is down: the device sees the door close
                log.info("upstream %s:%d unreachable: %s", *self.upstream, exc)
                client.close()
                continue
            conn = _Connection(self, client, upstream)
            with self._accepted:
                for fault in self._armed:
                    self.stats.faults[fault.kind] += 1
                    conn.inject(fault, self.rng)
                self._armed.clear()
                self._conns.append(conn)
                self.stats.add("connections")
                self._accepted.notify_all()
            conn.thread.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
