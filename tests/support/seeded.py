"""A seeded receiver for custody, access and export tests: real spools imported via the CLI,
users of every role, and a case of a chosen sensitivity."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from receiver.cli import main
from tests.support.spool import BuiltSpool, build_spool

PASSWORD = "correct horse battery"
CASE = "JY-2026-0001"
USERS = {
    "admin": "administrator",
    "clara": "clerk",
    "carl": "clerk",
    "sven": "supervisor",
    "hanna": "head",
    "audrey": "auditor",
    "tom": "technician",
}


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Seeded:
    data: Path
    spool: BuiltSpool
    config: Path | None = None

    def run(self, *args: str, user: str | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        argv = ["--data-dir", str(self.data)] + (["--user", user] if user else []) + list(args)
        if self.config is not None:
            argv = ["--config", str(self.config), *argv]
        with (
            _env(BODYCAM_PASSWORD=PASSWORD, BODYCAM_NEW_PASSWORD=PASSWORD),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            code = main(argv)
        return code, out.getvalue(), err.getvalue()

    def json(self, *args: str, user: str | None = None) -> Any:
        code, out, err = self.run(*args, "--json", user=user)
        assert code in (0, 1), err
        return json.loads(out)

    def ok(self, *args: str, user: str | None = None) -> str:
        code, out, err = self.run(*args, user=user)
        assert code == 0, (code, out, err)
        return out

    def approve(self, kind: str, *, requester: str = "clara", approver: str = "hanna") -> int:
        req = self.json(
            "approval",
            "request",
            "--case",
            CASE,
            "--kind",
            kind,
            "--reason",
            "court hearing",
            user=requester,
        )
        self.ok("approval", "grant", str(req[0]["id"]), "--note", "ok", user=approver)
        return int(req[0]["id"])


def seed(
    tmp_path: Path,
    clips: list[Path],
    *,
    sensitivity: str = "internal",
    sessions: int = 2,
    encrypted: bool = False,
) -> Seeded:
    """With ``encrypted`` the spool's media are encrypted to a receiver media key, configured
    in a receiver.toml the commands are run with."""
    data = tmp_path / "rdata"
    config = None
    recipient = None
    if encrypted:
        from evidence.encryption import generate_encryption_key, save_encryption_key

        key = generate_encryption_key()
        save_encryption_key(tmp_path / "media.key", key)
        recipient = key.public_key()
        config = tmp_path / "receiver.toml"
        config.write_text('encryption_key = "media.key"\n')
    spool = build_spool(
        tmp_path / "spool", clips[:2], sessions=sessions, case=CASE, encrypt_to=recipient
    )
    s = Seeded(data, spool, config)
    s.ok("device", "add", "--id", spool.device, "--key", str(spool.pub_path))
    s.ok(
        "case",
        "create",
        "--number",
        CASE,
        "--type",
        "seizure",
        "--title",
        "扣押",
        "--party",
        "Zhang San",
        "--sensitivity",
        sensitivity,
    )
    code, out, err = s.run("import", str(spool.root))
    assert code == 0, (out, err)
    s.ok("user", "add", "admin", "--role", "administrator")
    for name, role in USERS.items():
        if name != "admin":
            s.ok("user", "add", name, "--role", role, user="admin")
    return s
