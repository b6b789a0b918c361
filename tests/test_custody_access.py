"""People and access (Art. 22) through the CLI: roles, approvals, refusals in the custody log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.seeded import CASE, seed


def _kinds(s, user: str = "audrey") -> list[str]:  # type: ignore[no-untyped-def]
    return [e["kind"] for e in s.json("custody", "log", user=user)]


def _play_args(seg: dict[str, Any], out: Path) -> tuple[str, ...]:
    """``media play`` of one listed segment into ``out``."""
    return (
        "media",
        "play",
        CASE,
        "--session",
        seg["session"],
        "--seq",
        str(seg["seq"]),
        "--out",
        str(out),
    )


def test_clerk_without_approval_cannot_read_sensitive_media_through_any_command(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    s = seed(tmp_path, mpegts_clips, sensitivity="state-secret")
    seg = s.json("media", "list", CASE, user="clara")[0]
    out = tmp_path / "copy.ts"
    code, _, err = s.run(*_play_args(seg, out), user="clara")
    assert code == 2
    assert "no granted" in err
    assert not out.exists()
    code, _, err = s.run("export", CASE, "--out", str(tmp_path / "x"), user="clara")
    assert code == 2
    assert "refused" in err
    assert not (tmp_path / "x").exists()
    # a supervisor may not approve a state-secret case; nobody approves their own request
    req = s.json(
        "approval", "request", "--case", CASE, "--kind", "view", "--reason", "r", user="clara"
    )[0]
    code, _, err = s.run("approval", "grant", str(req["id"]), user="sven")
    assert code == 2
    assert "only the unit head" in err
    code, _, err = s.run("approval", "grant", str(req["id"]), user="clara")
    assert code == 2
    # wrong password, other roles
    for user in ("audrey", "tom", "admin"):
        code, _, _ = s.run(*_play_args(seg, out), user=user)
        assert code == 2
        assert not out.exists()
    refusals = [e for e in s.json("custody", "log", user="audrey") if e["kind"] == "access-refused"]
    assert len(refusals) >= 6
    assert {"play back media", "export case", "grant approvals"} <= {e["action"] for e in refusals}

    s.ok("approval", "grant", str(req["id"]), "--note", "hearing", user="hanna")
    s.ok(*_play_args(seg, out), user="clara")
    assert out.stat().st_size == seg["size"]
    assert "playback" in _kinds(s)
    # the grant is clara's: carl still cannot
    code, _, _ = s.run(*_play_args(seg, tmp_path / "c2.ts"), user="carl")
    assert code == 2


def test_wrong_password_and_deletion_are_refused_and_logged(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    s = seed(tmp_path, mpegts_clips, sessions=1)
    import os

    os.environ["BODYCAM_PASSWORD"] = "wrong password!"
    try:
        from receiver.cli import main

        assert main(["--data-dir", str(s.data), "--user", "clara", "cases"]) == 2
    finally:
        del os.environ["BODYCAM_PASSWORD"]
    for user in ("admin", "hanna", "clara"):
        code, _, err = s.run("delete", "--case", CASE, user=user)
        assert code == 2, err
        assert "retention" in err, err
    entries = s.json("custody", "log", user="audrey")
    assert sum(e["kind"] == "deletion-refused" for e in entries) == 3
    assert any(e["kind"] == "access-refused" and e["action"] == "log in" for e in entries)


def test_party_request_is_its_own_type(tmp_path: Path, mpegts_clips: list[Path]) -> None:
    s = seed(tmp_path, mpegts_clips, sessions=1)
    code, _, err = s.run(
        "approval",
        "request",
        "--case",
        CASE,
        "--kind",
        "party-view",
        "--reason",
        "asked at the counter",
        "--party",
        "Li Si",
        user="clara",
    )
    assert code == 2
    assert "not a party" in err
    a = s.json(
        "approval",
        "request",
        "--case",
        CASE,
        "--kind",
        "party-view",
        "--reason",
        "asked at the counter",
        "--party",
        "Zhang San",
        user="clara",
    )[0]
    assert a["kind"] == "party-view"
    assert a["party"] == "Zhang San"
    s.ok("approval", "grant", str(a["id"]), user="sven")
    s.ok("case", "show", CASE, user="clara")
    code, _, _ = s.run("case", "show", CASE, user="tom")  # a technician reads no cases
    assert code == 2
    entries = s.json("custody", "log", "--case", CASE, user="audrey")
    assert any(e["kind"] == "view" and e["actor"] == "clara" for e in entries)
    assert any(e["kind"] == "access-refused" and e["actor"] == "tom" for e in entries)
    grant = [e for e in entries if e["kind"] == "approval-grant"][-1]
    assert grant["party"] == "Zhang San"
    assert grant["request"] == "party-view"


def test_user_changes_need_an_administrator_and_are_logged(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    s = seed(tmp_path, mpegts_clips, sessions=1)
    code, _, _ = s.run("user", "add", "eve", "--role", "head")  # no --user once users exist
    assert code == 2
    code, _, _ = s.run("user", "role", "clara", "head", user="hanna")
    assert code == 2
    s.ok("user", "role", "clara", "supervisor", user="admin")
    users = {u["name"]: u["role"] for u in s.json("user", "list", user="admin")}
    assert users["clara"] == "supervisor"
    changes = [e for e in s.json("custody", "log", user="audrey") if e["kind"] == "user-change"]
    assert changes[-1]["user"] == "clara"
    assert changes[-1]["before"] == "clerk"
