"""``bodycam-provision`` end to end: the technician's commands, their output and refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_full_technician_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dock, dev, req = tmp_path / "dock", tmp_path / "sd", tmp_path / "req"
    code, out, _ = run(capsys, "init", "--dock", dock, "--host", "dock.lan", "--port", "8884")
    assert code == 0
    assert "CA fingerprint: sha256:" in out
    code, out, _ = run(
        capsys, "device-request", "--device-id", "cam-01", "--dir", dev, "--out", req
    )
    assert code == 0
    assert (req / "cam-01.request.json").exists()
    code, out, _ = run(capsys, "enrol", req, "--dock", dock)
    assert code == 0
    assert "enrolled cam-01" in out
    code, out, _ = run(capsys, "device-install", dock / "bundles" / "cam-01.tar.gz", "--dir", dev)
    assert code == 0
    assert "installed bundle for cam-01" in out
    code, out, _ = run(capsys, "list", "--dock", dock, "--json")
    listed = json.loads(out)
    assert [(d["device_id"], d["status"]) for d in listed] == [("cam-01", "active")]
    code, out, _ = run(
        capsys, "revoke", "--dock", dock, "--device-id", "cam-01", "--reason", "stolen"
    )
    assert code == 0
    assert "restart the broker" in out
    code, out, _ = run(capsys, "list", "--dock", dock)
    assert "revoked" in out
    assert "stolen" in out
    code, out, _ = run(capsys, "crl", "--dock", dock)
    assert code == 0
    assert "1 revoked serial(s)" in out
    code, out, _ = run(capsys, "broker-config", "--dock", dock, "--out", tmp_path / "broker")
    assert code == 0
    conf = (tmp_path / "broker" / "mosquitto.conf").read_text()
    assert "listener 8884 0.0.0.0" in conf
    acl = (tmp_path / "broker" / "acl").read_text()
    assert "pattern write bodycam/v1/%u/up/#" in acl
    assert (tmp_path / "broker" / "persistence").is_dir()
    from receiver.config import load_config

    # The receiver's own loader (which refuses unknown keys) accepts the generated snippet.
    receiver = load_config(tmp_path / "broker" / "receiver.toml")
    assert receiver.broker.cert_file is not None
    assert receiver.broker.cert_file.name == "client.pem"
    assert receiver.broker.port == 8884
    assert receiver.receipt_key is not None
    assert receiver.receipt_key.name == "receipt.key"
    # ...and it is complete: mutual TLS, the dock's registry and the media key
    receiver.broker.check_tls()
    assert receiver.dock_registry == (dock / "devices" / "registry.json").resolve()
    assert receiver.encryption_key is not None
    assert receiver.encryption_key.name == "encryption.key"


@pytest.mark.parametrize("bad", ["cam+1", "cam#1", "cam/1", "cam 1"])
def test_bad_device_id_is_refused_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    code, _, err = run(
        capsys,
        "device-request",
        "--device-id",
        bad,
        "--dir",
        tmp_path / "d",
        "--out",
        tmp_path / "o",
    )
    assert code == 2
    assert err.startswith("bodycam-provision: error: device id")
    assert "only letters" in err
    assert not (tmp_path / "d").exists()


def test_commands_on_missing_dock_explain_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "list", "--dock", tmp_path / "nodock")
    assert code == 2
    assert "bodycam-provision init" in err


def test_corrupt_bundle_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dock, dev, req = tmp_path / "dock", tmp_path / "sd", tmp_path / "req"
    assert run(capsys, "init", "--dock", dock)[0] == 0
    assert (
        run(capsys, "device-request", "--device-id", "cam-02", "--dir", dev, "--out", req)[0] == 0
    )
    assert run(capsys, "enrol", req, "--dock", dock)[0] == 0
    bundle = dock / "bundles" / "cam-02.tar.gz"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))
    code, _, err = run(capsys, "device-install", bundle, "--dir", dev)
    assert code == 2
    assert "refused" in err
    assert not (dev / "device.pem").exists()


def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioning.cli",
            "device-request",
            "--device-id",
            "a/b",
            "--dir",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "'/' (MQTT topic separator)" in proc.stderr
