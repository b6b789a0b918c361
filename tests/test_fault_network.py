"""The fault-injecting proxy (tests/support/netfault.py) does what it says, and a short run of
bench/fault_network.py: a few delays, throttles, stalls, cuts and half-dead connections between
the device and the broker during uploads lose nothing, store nothing twice, leave nothing stuck."""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.uplink import UploadResult, run_dock_upload
from tests.support.dock import Dock
from tests.support.netfault import DOWN, UP, Fault, FaultProxy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_upload import build_spool
from fault_network import run


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """A loopback echo server: whatever a connection sends comes back."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a cut resets this end too
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[:2]
    server.close()


def _client(proxy: FaultProxy) -> socket.socket:
    before = proxy.stats.connections
    sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
    assert proxy.wait_connections(before + 1, 10)
    return sock


def _echoed(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _echo_until_reset(sock: socket.socket) -> None:
    for _ in range(1000):  # the cut comes within 1000 bytes: then RST, not a clean end
        if _echoed(sock, b"y" * 100) != b"y" * 100:
            return


def test_bytes_pass_untouched_through_delay_and_throttle(echo: tuple[str, int]) -> None:
    with FaultProxy(*echo, seed=3) as proxy, _client(proxy) as sock:
        data = bytes(range(256)) * 512
        assert _echoed(sock, data) == data
        proxy.inject(Fault("delay", duration_s=30, latency_s=(0.001, 0.01)))
        proxy.inject(Fault("throttle", duration_s=30, rate_bps=1 << 20))
        assert _echoed(sock, data[::-1]) == data[::-1]
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == 2 * len(data)


def test_cut_resets_the_connection(echo: tuple[str, int]) -> None:
    with FaultProxy(*echo, seed=3) as proxy, _client(proxy) as sock:
        assert _echoed(sock, b"x" * 100) == b"x" * 100
        proxy.inject(Fault("cut", cut_within_bytes=1000))
        with pytest.raises(ConnectionResetError):
            _echo_until_reset(sock)
        assert proxy.stats.cuts_done == 1


@pytest.mark.parametrize("direction", [UP, DOWN], ids=["up", "down"])
def test_drop_keeps_the_socket_open_and_says_nothing(echo: tuple[str, int], direction: int) -> None:
    with FaultProxy(*echo, seed=3) as proxy, _client(proxy) as sock:
        proxy.inject(Fault("drop", direction=direction))
        sock.sendall(b"lost")
        # the request (up) or its echo (down) reached the proxy and vanished there
        deadline = time.monotonic() + 10
        while proxy.stats.bytes_dropped < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.stats.bytes_dropped == 4
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing came, and the socket is still open
            sock.recv(10)
        assert not proxy.connections()[0].closed.is_set()


def test_stall_holds_bytes_until_it_ends(echo: tuple[str, int]) -> None:
    with FaultProxy(*echo, seed=3) as proxy, _client(proxy) as sock:
        started = time.monotonic()
        proxy.inject(Fault("stall", duration_s=0.5))
        assert _echoed(sock, b"late") == b"late"  # waits out the stall, then flows
        assert time.monotonic() - started >= 0.5
        assert proxy.stats.faults["stall"] == 1


@pytest.mark.slow
def test_network_faults_of_each_kind_during_uploads_lose_nothing(tmp_path: Path) -> None:
    args = argparse.Namespace(
        cuts=10, seed=7, segments=6, segment_mib=1, keepalive_s=1, min_gap_kib=64,
        max_gap_kib=256, stuck_s=30.0, timeout_s=60.0,
    )  # fmt: skip
    result = run(tmp_path, args)
    assert result["faults"] == {"delay": 2, "throttle": 2, "stall": 2, "cut": 2, "drop": 2}
    assert not result["stuck"]
    assert result["cuts_done"] >= 1
    assert result["half_dead_closed"] >= 1  # an end noticed a half-dead connection
    assert result["receipted_lost"] == 0
    assert result["stored_twice"] == 0
    assert result["not_receipted"] == 0
    assert result["final_pending"] == 0
    assert result["reverify"]["ok"], result["reverify"]


def test_a_handshake_through_a_half_dead_link_gives_up_at_connect_timeout(
    dock: Dock, tmp_path: Path
) -> None:
    """The uplink's ``connect_timeout_s`` bounds the TLS handshake: a connection whose broker
    side went silent is dropped at that time-out (paho's own default is 5 s), and the next
    connection uploads."""
    key, _ = build_spool(tmp_path / "spool", 1, 1 << 20, device="NET-HS")
    dock.enrol("NET-HS", key)
    with FaultProxy(dock.broker.host, dock.broker.port) as proxy:
        proxy.arm(Fault("drop", direction=DOWN))  # no ServerHello ever reaches the device
        cfg = dock.uplink_config("NET-HS", broker_port=proxy.port, connect_timeout_s=0.5)
        stop = threading.Event()
        results: list[UploadResult] = []
        thread = threading.Thread(
            target=lambda: results.append(
                run_dock_upload(tmp_path / "spool", cfg, stop, until_done=True, timeout_s=60)
            ),
            daemon=True,
        )
        thread.start()
        assert proxy.wait_connections(1, 10)
        first = proxy.connections()[0]
        # the device gives up on the silent handshake at its 0.5 s time-out, not at paho's
        # fixed 5 s (the margin is for a loaded machine)
        assert first.closed.wait(4.5), "the device waited on a half-dead handshake"
        thread.join(60)
        stop.set()
    assert results
    assert results[0].pending == 0
