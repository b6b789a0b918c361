"""The clerk's CLI as a new user meets it (issue 12, item 4), the console's certificate and
command, and its systemd unit."""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from evidence.keys import generate_signing_key
from provisioning import broker as broker_config
from provisioning.cli import main as provision_main
from provisioning.dock import Dock
from receiver.cli import _parser
from receiver.cli import main as receiver_main
from receiver.reports import display_width, table
from tests.support.spool import build_spool

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "bodycam-web.service"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = receiver_main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def provisioned(tmp_path: Path) -> Path:
    """A freshly provisioned dock: receiver.toml written, no upload yet."""
    dock = Dock.init(tmp_path / "dock", broker_hosts=["127.0.0.1"])
    files = broker_config.write_broker_config(
        dock,
        tmp_path / "broker",
        broker_config.BrokerSettings(listen_host="127.0.0.1"),
        receiver_data_dir=tmp_path / "receiver-data",
    )
    return files.receiver_config


def test_a_freshly_provisioned_dock_lists_nothing_instead_of_failing(provisioned: Path) -> None:
    for command in (["devices"], ["cases"], ["sessions"], ["quarantine"]):
        code, out, err = run("--config", str(provisioned), *command)
        assert code == 0, err
        assert "(none)" in out
        assert "not a receiver data directory" not in err
    # a mistyped --data-dir is still reported, not turned into an empty store
    code, _, err = run("--data-dir", str(provisioned.parent / "typo"), "cases")
    assert code == 2
    assert "not a receiver data directory" in err
    assert not (provisioned.parent / "typo").exists()


@pytest.mark.parametrize(
    ("field", "args"),
    [
        ("title", ["case", "create", "--number", "A-1", "--type", "inspection", "--title", " "]),
        ("officer", ["--officer", " "]),
        ("place", ["--place", ""]),
        ("reason", ["--reason", "  "]),
        ("target", ["--target", ""]),
    ],
)
def test_empty_values_are_refused(tmp_path: Path, field: str, args: list[str]) -> None:
    data = tmp_path / "rx"
    key = tmp_path / "dev.pub"
    from evidence.keys import save_public_key

    save_public_key(key, generate_signing_key().public_key())
    assert run("--data-dir", str(data), "device", "add", "--id", "BC-1", "--key", str(key))[0] == 0
    assert (
        run(
            "--data-dir",
            str(data),
            "case",
            "create",
            "--number",
            "A-0",
            "--type",
            "inspection",
            "--title",
            "检查",
        )[0]
        == 0
    )
    if args[0] != "case":
        base = {
            "--device": "BC-1",
            "--case": "A-0",
            "--officer": "王芳",
            "--place": "太原",
            "--reason": "检查",
            "--target": "某学校",
            "--stage": "investigation",
        }
        base[args[0]] = args[1]
        args = ["assign", *[x for kv in base.items() for x in kv]]
    code, out, err = run("--data-dir", str(data), *args)
    assert code == 2, (out, err)
    assert err.startswith(f"bodycam-receiver: {field}")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("number", "says"),
    [
        ("A" * 65, "longer than 64"),
        ("A-1\x1b[2J", "control characters"),
        ("A-1\nB", "control characters"),
        ("2026//017", "no empty"),
        ("/2026", "no empty"),
        ("2026/../admin", "'..'"),
        ("2026/export", "ends like a console page"),
        ("2026/custody/verify", "ends like a console page"),
    ],
)
def test_case_numbers_that_no_address_could_hold_are_refused(
    tmp_path: Path, number: str, says: str
) -> None:
    data = tmp_path / "rx"
    code, out, err = run("--data-dir", str(data), "case", "create", "--number", number,
                         "--type", "inspection", "--title", "检查")  # fmt: skip
    assert code == 2, (out, err)
    (line,) = err.strip().splitlines()
    assert line.startswith("bodycam-receiver: number: ")
    assert says in line
    assert "\x1b" not in line
    code, out, _ = run("--data-dir", str(data), "case", "create", "--number", "教执〔2026〕/017",
                       "--type", "inspection", "--title", "检查")  # fmt: skip
    assert code == 0, out


def test_device_add_refuses_a_private_key(tmp_path: Path) -> None:
    private = tmp_path / "signing.key"
    private.write_bytes(
        generate_signing_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    code, _, err = run(
        "--data-dir", str(tmp_path / "rx"), "device", "add", "--id", "BC-1", "--key", str(private)
    )
    assert code == 2
    assert "PRIVATE key" in err
    assert "never leave the device" in err
    assert "BEGIN" not in err  # the key itself is not echoed
    assert "(none)" in run("--data-dir", str(tmp_path / "rx"), "devices")[1]


def test_importing_a_card_copy_of_an_unregistered_device(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    spool = build_spool(tmp_path / "card", mpegts_clips, sessions=2)
    code, out, err = run("--data-dir", str(tmp_path / "rx"), "import", str(spool.root))
    assert code == 1
    # one line for the whole device, with what to do, and nothing about the device resending
    assert out.count("NOT IMPORTED") == 1, out
    assert "12 not imported" in out, out
    assert f"device add --id {spool.device}" in out
    assert "resend" not in out + err
    assert " seq " not in err  # no per-record log lines mixed in
    assert len(out.strip().splitlines()) == 3, out


def test_tables_align_by_display_width() -> None:
    rows = [
        {"n": "A-1", "title": "校外培训机构专项检查", "x": 1},
        {"n": "A-22", "title": "check", "x": 22},
    ]
    lines = table(rows, ["n", "title", "x"]).splitlines()
    # the last column starts at the same terminal column on every line
    starts = [display_width(line[: line.rstrip().rfind(" ") + 1]) for line in lines]
    assert len(set(starts)) == 1, lines
    assert display_width("校外") == 4


def test_case_show_tells_an_empty_case_from_a_tampered_one(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    data = tmp_path / "rx"
    spool = build_spool(tmp_path / "spool", mpegts_clips, sessions=1)
    assert (
        run(
            "--data-dir",
            str(data),
            "device",
            "add",
            "--id",
            spool.device,
            "--key",
            str(spool.pub_path),
        )[0]
        == 0
    )
    for number in ("JY-2026-0001", "EMPTY-1"):
        assert (
            run(
                "--data-dir",
                str(data),
                "case",
                "create",
                "--number",
                number,
                "--type",
                "inspection",
                "--title",
                "检查",
            )[0]
            == 0
        )
    assert run("--data-dir", str(data), "import", str(spool.root))[0] == 0
    assert run("--data-dir", str(data), "case", "show", "JY-2026-0001")[0] == 0
    assert run("--data-dir", str(data), "case", "show", "EMPTY-1")[0] == 3
    record = next((data / "evidence").rglob("records/*.json"))
    record.chmod(0o644)
    record.write_bytes(record.read_bytes().replace(b'"', b"'", 1))
    assert run("--data-dir", str(data), "case", "show", "JY-2026-0001")[0] == 1
    assert "3 the case has no sessions" in _help("case", "show")


def _help(*words: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        _parser().parse_args([*words, "--help"])
    return out.getvalue()


def test_help_has_no_rest_markup_and_every_option_has_help() -> None:
    missing, markup = [], []

    def walk(p: argparse.ArgumentParser, name: str) -> None:
        if "``" in p.format_help():
            markup.append(name)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub, sp in a.choices.items():
                    walk(sp, f"{name} {sub}")
            elif not isinstance(a, argparse._HelpAction) and not a.help:
                missing.append(f"{name} {a.option_strings or a.dest}")

    walk(_parser(), "bodycam-receiver")
    assert not markup
    # the clerk's commands this issue fixed (newer subjects' help is their modules' own)
    clerk = (
        "case create ",
        "case list ",
        "case show ",
        "assign ",
        "unassign ",
        "file ",
        "device ",
        "import ",
        "web ",
        "sessions ",
        "cases ",
        "devices ",
    )
    mine = [m for m in missing if m.removeprefix("bodycam-receiver ").startswith(clerk)]
    assert not mine, mine


def test_listings_keep_log_lines_off_stdout(provisioned: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "receiver", "--config", str(provisioned), "devices"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    assert done.stdout.splitlines()[0].startswith("DEVICE")
    assert " INFO " not in done.stdout + done.stderr


def test_agent_status_of_a_missing_spool_fails(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", "--spool", str(tmp_path / "nonexistent")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "no such spool directory" in done.stderr
    assert not (tmp_path / "nonexistent").exists()


def test_web_cert_is_issued_by_the_dock_ca_for_loopback_and_named_hosts(tmp_path: Path) -> None:
    Dock.init(tmp_path / "dock")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = provision_main(
            [
                "web-cert",
                "--dock",
                str(tmp_path / "dock"),
                "--host",
                "dock.example",
                "--host",
                "10.0.0.5",
            ]
        )
    assert code == 0, out.getvalue()
    cert = x509.load_pem_x509_certificate((tmp_path / "dock/receiver/web.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }
    assert {"dock.example", "10.0.0.5", "127.0.0.1", "localhost"} <= names
    # a TLS client trusting only the dock CA accepts it for those names
    ctx = ssl.create_default_context(cafile=str(tmp_path / "dock/ca/ca.pem"))
    ctx.load_verify_locations(cafile=str(tmp_path / "dock/ca/ca.pem"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "dock/receiver/web.pem", tmp_path / "dock/receiver/web.key")
    assert (tmp_path / "dock/receiver/web.key").stat().st_mode & 0o077 == 0


def test_web_refuses_to_start_without_a_certificate(tmp_path: Path) -> None:
    code, _, err = run("--data-dir", str(tmp_path / "rx"), "web")
    assert code == 2
    assert "bodycam-provision web-cert" in err
    assert len(err.splitlines()) == 1
    code, _, err = run(
        "--data-dir", str(tmp_path), "web", "--listen", "nonsense", "--cert", "x", "--key", "y"
    )
    assert code == 2
    assert "--listen" in err


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_web_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    script = shutil.which("bodycam-receiver") or str(
        Path(sys.executable).parent / "bodycam-receiver"
    )
    # the command the receiver package installs, as the receiver's own unit runs it
    receiver_unit = (UNIT.parent / "bodycam-receiver.service").read_text()
    command = receiver_unit.split("ExecStart=")[1].split()[0]
    assert UNIT.read_text().split("ExecStart=")[1].split()[0] == command
    text = UNIT.read_text().replace(command, script)
    unit = tmp_path / "bodycam-web.service"
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout
    assert " web" in text
    assert "--listen" not in text.split("ExecStart=")[1].splitlines()[0]
