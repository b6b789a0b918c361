"""A whole dock for integration tests: private Mosquitto + the receiver service as a process,
with helpers to register devices, create cases, run the uplink and read the CLI's JSON."""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.uplink import UplinkConfig, UploadResult, run_dock_upload
from tests.support.broker import BrokerSettings, MosquittoBroker
from tests.support.receiver import ReceiverProcess
from tests.support.spool import BuiltSpool

CASE = "JY-2026-0001"


class Dock:
    def __init__(self, base: Path, settings: BrokerSettings | None = None) -> None:
        self.base = base
        self.broker = MosquittoBroker(base / "broker", settings)
        self.receiver: ReceiverProcess | None = None
        self.receiver_pub = base / "receiver.pub"

    def start(self) -> Dock:
        self.broker.start()
        self.receiver = ReceiverProcess(
            self.base / "receiver-data", self.broker.host, self.broker.port
        )
        self.cli_text("identity", "--export-pub", str(self.receiver_pub))
        self.receiver.start()
        return self

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
        self.broker.stop()

    @property
    def rx(self) -> ReceiverProcess:
        assert self.receiver is not None
        return self.receiver

    def cli_text(self, *args: str) -> tuple[int, str]:
        assert self.receiver is not None
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = self.receiver.cli(*args)
        return code, out.getvalue()

    def cli_json(self, *args: str) -> Any:
        _code, text = self.cli_text(*args, "--json")
        return json.loads(text)

    def register(self, spool: BuiltSpool) -> None:
        code, _ = self.cli_text("device", "add", "--id", spool.device, "--key", str(spool.pub_path))
        assert code == 0

    def create_case(self, number: str = CASE, kind: str = "inspection") -> None:
        code, _ = self.cli_text(
            "case",
            "create",
            "--number",
            number,
            "--type",
            kind,
            "--title",
            "校外培训专项检查",
            "--party",
            "某培训学校",
        )
        assert code == 0

    def uplink_config(self, **overrides: Any) -> UplinkConfig:
        cfg = UplinkConfig(
            broker_host=self.broker.host,
            broker_port=self.broker.port,
            receiver_key_file=str(self.receiver_pub),
            receipt_timeout_s=2.0,
            rescan_interval_s=0.5,
        )
        for name, value in overrides.items():
            setattr(cfg, name, value)
        return cfg

    def upload(
        self, spool: BuiltSpool, *, timeout_s: float = 30.0, **overrides: Any
    ) -> UploadResult:
        return run_dock_upload(
            spool.root,
            self.uplink_config(**overrides),
            threading.Event(),
            until_done=True,
            timeout_s=timeout_s,
        )

    def stored_records(self) -> int:
        import sqlite3

        conn = sqlite3.connect(self.rx.data_dir / "receiver.db", timeout=10)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        finally:
            conn.close()


@contextlib.contextmanager
def running_dock(base: Path, settings: BrokerSettings | None = None) -> Iterator[Dock]:
    dock = Dock(base, settings)
    try:
        yield dock.start()
    finally:
        dock.stop()
