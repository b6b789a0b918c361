"""The two sd_notify clients (agent and receiver; the receiver may not import the agent) agree:
same watchdog ping interval from the same environment, same datagrams on a real socket."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from agent.notify import Notifier
from receiver import sdnotify

ENVIRONMENTS: list[tuple[dict[str, str], float | None]] = [
    ({}, None),
    ({"WATCHDOG_USEC": "2000000"}, 1.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "ten seconds"}, None),
    ({"WATCHDOG_USEC": ""}, None),
]


@pytest.mark.parametrize(("environ", "expected"), ENVIRONMENTS)
def test_both_clients_ping_at_half_the_watchdog_timeout(
    environ: dict[str, str], expected: float | None
) -> None:
    assert Notifier(environ).ping_interval_s == expected
    assert sdnotify.watchdog_ping_interval_s(environ) == expected


def test_agent_pings_first_at_once_then_every_half_timeout() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "4000000"})
    assert notifier.watchdog_due(100.0)
    notifier.ping_watchdog(100.0)
    assert not notifier.watchdog_due(101.9)
    assert notifier.watchdog_due(102.0)


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    else:
        name = f"bodycam-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    sock.settimeout(10)
    try:
        yield address, sock
    finally:
        sock.close()


def _agent_send(env: Mapping[str, str]) -> Callable[[str], bool]:
    return Notifier(env).send


def _receiver_send(env: Mapping[str, str]) -> Callable[[str], bool]:
    return lambda message: sdnotify.notify(message, env)


@pytest.mark.parametrize("client", [_agent_send, _receiver_send], ids=["agent", "receiver"])
def test_both_clients_deliver_the_same_datagrams(
    listener: tuple[str, socket.socket],
    client: Callable[[Mapping[str, str]], Callable[[str], bool]],
) -> None:
    address, sock = listener
    send = client({"NOTIFY_SOCKET": address})
    for message in ("READY=1\nSTATUS=receiving", "WATCHDOG=1", "STOPPING=1"):
        assert send(message)
        assert sock.recv(4096).decode() == message


@pytest.mark.parametrize("client", [_agent_send, _receiver_send], ids=["agent", "receiver"])
def test_without_systemd_or_with_a_dead_socket_nothing_is_raised(
    tmp_path: Path, client: Callable[[Mapping[str, str]], Callable[[str], bool]]
) -> None:
    assert client({})("READY=1") is False
    assert client({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})("READY=1") is False
