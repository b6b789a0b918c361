"""A private Mosquitto broker for tests: own config, own port on 127.0.0.1, own data dir.

Failure posture: starting raises :class:`BrokerError` (with the broker's log tail) when the
process exits early or does not accept connections in time; stopping never raises and always
reaps the process, so a failing test cannot leak a broker.

Usage::

    with MosquittoBroker(tmp_path / "broker") as broker:
        client.connect(broker.host, broker.port)

:class:`ProvisionedBroker` runs the configuration ``bodycam-provision broker-config`` generates
(mutual TLS, ACL, CRL) instead; the integration tests use it through ``tests/support/dock.py``.
The plain :class:`MosquittoBroker` refuses anonymous clients unless a test asks for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provisioning.broker import BrokerSettings as ProvisioningBrokerSettings
    from provisioning.dock import Dock as ProvisioningDock

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class BrokerError(RuntimeError):
    """The broker could not be started; ``log`` holds the tail of its log."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(f"{message}\n--- mosquitto log ---\n{log}" if log else message)
        self.log = log


@dataclass(frozen=True)
class BrokerTLS:
    """TLS listener settings. ``require_certificate`` makes it mutual TLS."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True
    use_identity_as_username: bool = True
    crl_file: Path | None = None


@dataclass
class BrokerSettings:
    """Everything that goes into the generated mosquitto.conf."""

    tls: BrokerTLS | None = None
    acl_file: Path | None = None
    allow_anonymous: bool = False
    persistence: bool = True
    #: extra raw config lines, e.g. ``["max_queued_messages 1000"]``
    extra_config: Sequence[str] = field(default_factory=tuple)


#: ports this process was handed, with the descriptor of the lock file that reserves each
_RESERVED: dict[int, int] = {}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the kernel's choice) that no other test process is handed.

    The suite runs in several processes at once (pytest-xdist), and a port is free between this
    call and the bind of the server it is for, and again between a broker's kill and its restart
    on the same port. So each port handed out is reserved by an exclusive lock on a file named
    after it, held until this process ends; another process skips a locked port.
    """
    locks = Path(tempfile.gettempdir()) / f"bodycam-test-ports-{os.getuid()}"
    locks.mkdir(mode=0o700, exist_ok=True)
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port in _RESERVED:
            continue  # ours already (a server of an earlier test may be restarted on it)
        fd = os.open(locks / str(port), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # another test process holds it
        _RESERVED[port] = fd
        return port
    raise RuntimeError("no free TCP port on 127.0.0.1 after 1000 tries")


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


class MosquittoBroker:
    """One ``mosquitto`` process with its config, persistence and log under ``workdir``.

    The port stays the same across :meth:`restart` and :meth:`kill` + :meth:`start`, so clients
    can reconnect to it like to a real broker that went away.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        settings: BrokerSettings | None = None,
        *,
        port: int | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.settings = settings or BrokerSettings()
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.data_dir = self.workdir / "data"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- configuration -------------------------------------------------------------------
    def config_text(self) -> str:
        s = self.settings
        lines = [
            f"user {_user_name()}",
            "per_listener_settings false",
            f"allow_anonymous {'true' if s.allow_anonymous else 'false'}",
            f"persistence {'true' if s.persistence else 'false'}",
            f"persistence_location {self.data_dir}/",
            "autosave_interval 1",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"listener {self.port} {self.host}",
        ]
        if s.tls is not None:
            lines += [
                f"cafile {s.tls.ca_file}",
                f"certfile {s.tls.cert_file}",
                f"keyfile {s.tls.key_file}",
                f"require_certificate {'true' if s.tls.require_certificate else 'false'}",
                "use_identity_as_username "
                + ("true" if s.tls.use_identity_as_username else "false"),
            ]
            if s.tls.crl_file is not None:
                lines.append(f"crlfile {s.tls.crl_file}")
        if s.acl_file is not None:
            lines.append(f"acl_file {s.acl_file}")
        lines += list(s.extra_config)
        return "\n".join(lines) + "\n"

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> MosquittoBroker:
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise BrokerError("mosquitto exited during start-up", self.log_tail())
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"mosquitto did not listen on port {self.port} within {self.start_timeout_s}s",
            self.log_tail(),
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """Graceful stop (SIGTERM: Mosquitto saves its persistence file), then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """Abrupt loss of the broker (SIGKILL): in-memory queues since the last save are lost."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, *, hard: bool = False) -> MosquittoBroker:
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def log_tail(self, size_bytes: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-size_bytes:].decode("utf-8", "replace")

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ProvisionedBroker(MosquittoBroker):
    """The same lifecycle, running the configuration provisioning generates for ``dock``.

    Every (re)start regenerates it, so a restart after a revocation picks up the new CRL, as
    the technician's procedure does. ``extra_acl`` appends test-only ACL lines (e.g. a
    monitoring identity); the generated rules stay as they are.
    """

    def __init__(
        self,
        workdir: Path,
        dock: ProvisioningDock,
        settings: ProvisioningBrokerSettings | None = None,
        *,
        port: int | None = None,
        extra_acl: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir, port=port)
        from provisioning.broker import BrokerSettings as Generated

        self.dock = dock
        self.broker_settings = settings or Generated()
        self.extra_acl = tuple(extra_acl)
        self.generated_dir = self.workdir / "gen"
        #: written into the generated receiver.toml as its data_dir
        self.receiver_data_dir: Path | None = None

    @property
    def receiver_config(self) -> Path:
        return self.generated_dir / "receiver.toml"

    def config_text(self) -> str:
        from dataclasses import replace

        from provisioning.broker import write_broker_config

        settings = replace(
            self.broker_settings,
            listen_host=self.host,
            port=self.port,
            run_as_user=_user_name(),
        )
        files = write_broker_config(
            self.dock, self.generated_dir, settings, receiver_data_dir=self.receiver_data_dir
        )
        if self.extra_acl:
            with files.acl.open("a", encoding="utf-8") as acl:
                acl.write("\n".join(["# test-only", *self.extra_acl, ""]))
        return files.config.read_text("utf-8")
