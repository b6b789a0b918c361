"""Dock init, device enrolment, bundles, registry and revocation (library level, real files)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from evidence.encryption import load_encryption_key, load_encryption_public_key
from evidence.keys import key_id, load_public_key, load_signing_key
from provisioning import bundle, device, pki
from provisioning.dock import Dock
from provisioning.errors import (
    BundleError,
    DockError,
    InvalidDeviceIdError,
    RegistryError,
)
from provisioning.ids import validate_device_id
from provisioning.request import REQUEST_FORMAT, EnrolmentRequest


@pytest.fixture
def dock(tmp_path: Path) -> Dock:
    return Dock.init(tmp_path / "dock", broker_hosts=["dock.example", "10.1.2.3"], broker_port=8883)


def request_for(tmp: Path, device_id: str) -> tuple[Path, Path]:
    dev_dir = tmp / "dev" / device_id
    return dev_dir, device.create_request(dev_dir, device_id, tmp / "out" / device_id)


def test_init_creates_ca_receiver_identity_and_empty_crl(dock: Dock) -> None:
    p = dock.paths
    ca = pki.load_certificate(p.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = pki.load_certificate(p.broker_cert)
    pki.check_issued_by(server, ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "dock.example"} <= set(sans.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.1.2.3"}
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    client = pki.load_certificate(p.client_cert)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "receiver"
    pki.check_key_matches(pki.load_private_key(p.client_key), client)
    assert load_signing_key(p.receipt_key).public_key() == load_public_key(p.receipt_pub)
    enc = load_encryption_key(p.encryption_key)
    assert enc.public_key() == load_encryption_public_key(p.encryption_pub)
    assert len(list(pki.load_crl(p.crl))) == 0
    for secret in (p.ca_key, p.broker_key, p.client_key, p.receipt_key, p.encryption_key):
        assert secret.stat().st_mode & 0o077 == 0, secret
    # Standard tools accept the chain.
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", str(p.ca_cert), str(p.broker_cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_init_refuses_to_overwrite_an_existing_dock(dock: Dock) -> None:
    before = dock.paths.ca_cert.read_bytes()
    with pytest.raises(DockError, match="already initialised"):
        Dock.init(dock.paths.root)
    assert dock.paths.ca_cert.read_bytes() == before


def test_uninitialised_dock_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DockError, match="not initialised"):
        Dock(tmp_path / "nowhere")


def test_request_holds_only_public_material_and_keys_stay_on_device(tmp_path: Path) -> None:
    dev_dir, req = request_for(tmp_path, "cam-7")
    text = req.read_text()
    assert "PRIVATE KEY" not in text
    assert sorted(p.name for p in req.parent.iterdir()) == ["cam-7.request.json"]
    assert (dev_dir / "signing.key").stat().st_mode & 0o077 == 0
    assert (dev_dir / "tls.key").stat().st_mode & 0o077 == 0
    doc = json.loads(text)
    assert doc["format"] == REQUEST_FORMAT
    assert doc["signing_key_id"] == key_id(load_signing_key(dev_dir / "signing.key").public_key())
    # Re-running keeps the same identity (needed for renewals).
    device.create_request(dev_dir, "cam-7", tmp_path / "again")
    again = json.loads((tmp_path / "again" / "cam-7.request.json").read_text())
    assert again["signing_key_id"] == doc["signing_key_id"]


def test_enrol_and_install_roundtrip(dock: Dock, tmp_path: Path) -> None:
    dev_dir, req = request_for(tmp_path, "cam-1")
    result = dock.enrol(req)
    assert result.entry.active
    cert = result.certificate
    assert pki.certificate_common_name(cert) == "cam-1"
    installed = device.install_bundle(result.bundle_path, dev_dir)
    assert installed.device_id == "cam-1"
    for name in bundle.REQUIRED_FILES:
        assert (dev_dir / name).exists(), name
    pki.check_key_matches(
        pki.load_private_key(dev_dir / "tls.key"), pki.load_certificate(dev_dir / "device.pem")
    )
    import dataclasses
    import tomllib

    from agent.config import DeviceConfig
    from agent.uplink.config import UplinkConfig

    parsed = tomllib.loads((dev_dir / "agent.toml").read_text())
    # The agent's loader refuses unknown keys: the generated file must fit its schema.
    assert set(parsed) == {"device", "uplink"}
    assert set(parsed["device"]) <= {f.name for f in dataclasses.fields(DeviceConfig)}
    assert set(parsed["uplink"]) <= {f.name for f in dataclasses.fields(UplinkConfig)}
    assert parsed["device"]["id"] == "cam-1"
    assert parsed["uplink"]["broker_host"] == "dock.example"
    assert parsed["uplink"]["broker_port"] == 8883
    root = dev_dir.resolve()
    assert parsed["device"]["key_file"] == str(root / "signing.key")
    assert parsed["uplink"]["cert_file"] == str(root / "device.pem")
    assert parsed["uplink"]["key_file"] == str(root / "tls.key")
    assert parsed["uplink"]["receiver_key_file"] == str(root / "receiver-receipt.pub")
    uplink = UplinkConfig(**parsed["uplink"])
    uplink.validate()
    # Installing for an SD card mounted elsewhere points the config at the device's own path.
    device.install_bundle(result.bundle_path, dev_dir, config_root=Path("/etc/bodycam"))
    assert (dev_dir / "agent.toml.provisioned").exists()
    other = tomllib.loads((dev_dir / "agent.toml.provisioned").read_text())
    assert other["uplink"]["ca_file"] == "/etc/bodycam/ca.pem"
    # The registry carries the key the receiver must trust for this device.
    entry = dock.device("cam-1")
    pub = serialization.load_pem_public_key(entry.signing_public_pem.encode())
    assert entry.signing_key_id == key_id(pub)  # type: ignore[arg-type]
    assert entry.signing_key_id == key_id(load_signing_key(dev_dir / "signing.key").public_key())


def test_bundle_never_contains_private_keys(dock: Dock, tmp_path: Path) -> None:
    _, req = request_for(tmp_path, "cam-2")
    result = dock.enrol(req)
    with tarfile.open(result.bundle_path) as tar:
        for member in tar:
            f = tar.extractfile(member)
            assert f is not None
            assert b"PRIVATE KEY" not in f.read(), member.name


def test_duplicate_enrolment_refused_and_renewal_needs_same_signing_key(
    dock: Dock, tmp_path: Path
) -> None:
    _, req = request_for(tmp_path, "cam-3")
    first = dock.enrol(req)
    with pytest.raises(RegistryError, match="already enrolled"):
        dock.enrol(req)
    renewed = dock.enrol(req, renew=True)
    assert renewed.certificate.serial_number != first.certificate.serial_number
    assert len(dock.device("cam-3").certificates) == 2
    # Another device's keys under the same id are refused for a renewal.
    _, impostor = request_for(tmp_path / "other", "cam-3")
    with pytest.raises(RegistryError, match="signing key"):
        dock.enrol(impostor, renew=True)


@pytest.mark.parametrize(
    "bad", ["cam+1", "cam#1", "cam/1", "cam 1", "cam\t1", "", "-cam", "receiver", "ca\u00e9m"]
)
def test_forbidden_device_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidDeviceIdError) as exc:
        validate_device_id(bad)
    assert "refused" in str(exc.value)


@pytest.mark.parametrize(("cn", "named"), [("cam+1", "'+'"), ("cam#1", "'#'"), ("cam/1", "'/'")])
def test_csr_with_wildcard_or_separator_in_cn_is_refused_by_the_dock(
    dock: Dock, tmp_path: Path, cn: str, named: str
) -> None:
    # Hand-made request: a device-side tool that does not validate its id.
    key = pki.generate_tls_key()
    from evidence.keys import generate_signing_key

    signing = generate_signing_key()
    csr = pki.create_csr(key, cn)
    req = EnrolmentRequest("cam-ok", csr, signing.public_key())
    path = tmp_path / "bad.request.json"
    path.write_bytes(req.to_json(signing))
    with pytest.raises(InvalidDeviceIdError) as exc:
        dock.enrol(path)
    assert named in str(exc.value)
    assert dock.devices() == []


def test_altered_request_is_refused(dock: Dock, tmp_path: Path) -> None:
    _, req = request_for(tmp_path, "cam-4")
    _, other = request_for(tmp_path, "cam-5")
    doc = json.loads(req.read_text())
    # Someone swaps in another device's signing key: the proof of possession no longer verifies.
    doc["signing_public"] = json.loads(other.read_text())["signing_public"]
    req.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="proof of possession"):
        dock.enrol(req)
    assert dock.devices() == []


def _rewrite_bundle(src: Path, dst: Path, change: dict[str, bytes | None]) -> None:
    with tarfile.open(src) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    for name, data in change.items():
        if data is None:
            members.pop(name, None)
        else:
            members[name] = data
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_corrupt_bundles_are_refused_with_clear_messages(dock: Dock, tmp_path: Path) -> None:
    dev_dir, req = request_for(tmp_path, "cam-6")
    good = dock.enrol(req).bundle_path
    raw = good.read_bytes()

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BundleError, match="corrupt or truncated"):
        device.install_bundle(truncated, dev_dir)

    flipped = tmp_path / "flipped.tar.gz"
    _rewrite_bundle(good, flipped, {"ca.pem": b"not a certificate"})
    with pytest.raises(BundleError, match=r"ca\.pem is corrupt"):
        device.install_bundle(flipped, dev_dir)

    missing = tmp_path / "missing.tar.gz"
    _rewrite_bundle(good, missing, {"receiver-encryption.pub": None})
    with pytest.raises(BundleError, match=r"receiver-encryption\.pub is missing"):
        device.install_bundle(missing, dev_dir)

    not_a_tar = tmp_path / "junk.tar.gz"
    not_a_tar.write_bytes(b"\x00" * 100)
    with pytest.raises(BundleError, match="not a readable"):
        device.install_bundle(not_a_tar, dev_dir)
    # Nothing was installed by the failed attempts.
    assert not (dev_dir / "device.pem").exists()
    assert not (dev_dir / "agent.toml").exists()


def test_bundle_for_another_key_is_refused(dock: Dock, tmp_path: Path) -> None:
    dev_dir, req = request_for(tmp_path, "cam-8")
    good = dock.enrol(req).bundle_path
    # The device's TLS key was replaced (e.g. SD card re-imaged) after the request was made.
    pki.save_private_key(dev_dir / "tls.key", pki.generate_tls_key())
    with pytest.raises(BundleError) as exc:
        device.install_bundle(good, dev_dir)
    assert "does not match the private key" in str(exc.value)
    assert not (dev_dir / "device.pem").exists()


def test_bundle_for_another_device_is_refused(dock: Dock, tmp_path: Path) -> None:
    _, req_a = request_for(tmp_path, "cam-a")
    dev_b, _ = request_for(tmp_path, "cam-b")
    bundle_a = dock.enrol(req_a).bundle_path
    with pytest.raises(BundleError) as exc:
        device.install_bundle(bundle_a, dev_b)
    assert "for device 'cam-a', this device is 'cam-b'" in str(exc.value)


def test_bundle_with_certificate_from_foreign_ca_is_refused(dock: Dock, tmp_path: Path) -> None:
    dev_dir, req = request_for(tmp_path, "cam-9")
    good = dock.enrol(req).bundle_path
    foreign = Dock.init(tmp_path / "foreign")
    forged = tmp_path / "forged.tar.gz"
    b = bundle.read_bundle(good)
    files = dict(b.files)
    files["ca.pem"] = foreign.paths.ca_cert.read_bytes()
    bundle.write_bundle(forged, {k: v for k, v in b.manifest.items() if k != "files"}, files)
    with pytest.raises(BundleError, match="not issued by the CA"):
        device.install_bundle(forged, dev_dir)


def test_revoke_updates_registry_and_crl(dock: Dock, tmp_path: Path) -> None:
    _, req = request_for(tmp_path, "cam-10")
    cert = dock.enrol(req).certificate
    dock.enrol(req, renew=True)
    entry = dock.revoke("cam-10", "lost on patrol")
    assert entry.status == "revoked"
    assert entry.revoke_reason == "lost on patrol"
    crl = pki.load_crl(dock.paths.crl)
    assert crl.is_signature_valid(pki.load_certificate(dock.paths.ca_cert).public_key())  # type: ignore[arg-type]
    serials = {r.serial_number for r in crl}
    assert cert.serial_number in serials
    assert len(serials) == 2
    assert dock.device("cam-10").status == "revoked"
    with pytest.raises(RegistryError, match="already revoked"):
        dock.revoke("cam-10", "again")
    with pytest.raises(RegistryError, match="never reused"):
        dock.enrol(req, renew=True)
    with pytest.raises(RegistryError, match="not enrolled"):
        dock.revoke("cam-unknown", "x")
    # openssl agrees the certificate is revoked.
    cert_path = dock.paths.device_dir("cam-10") / f"cert-{cert.serial_number:x}.pem"
    out = subprocess.run(
        [
            "openssl",
            "verify",
            "-crl_check",
            "-CAfile",
            str(dock.paths.ca_cert),
            "-CRLfile",
            str(dock.paths.crl),
            str(cert_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "revoked" in (out.stdout + out.stderr)


def test_corrupt_registry_is_reported_not_overwritten(dock: Dock, tmp_path: Path) -> None:
    _, req = request_for(tmp_path, "cam-11")
    dock.paths.registry.parent.mkdir(parents=True, exist_ok=True)
    dock.paths.registry.write_text("{ not json")
    with pytest.raises(DockError, match="registry"):
        dock.enrol(req)
    assert dock.paths.registry.read_text() == "{ not json"


def test_rotation_dock_keeps_receiver_keys_and_bundles_carry_both_cas(
    dock: Dock, tmp_path: Path
) -> None:
    new = Dock.init(tmp_path / "dock-2", receiver_keys_from=dock.paths.root)
    assert new.paths.encryption_pub.read_bytes() == dock.paths.encryption_pub.read_bytes()
    assert new.paths.receipt_pub.read_bytes() == dock.paths.receipt_pub.read_bytes()
    old_ca = pki.load_certificate(dock.paths.ca_cert)
    new_ca = pki.load_certificate(new.paths.ca_cert)
    assert old_ca.subject != new_ca.subject  # OpenSSL finds issuers and CRLs by name
    new.add_trust(dock.paths.root)
    with pytest.raises(DockError, match="already trusts"):
        new.add_trust(dock.paths.root)
    with pytest.raises(DockError, match="own CA"):
        new.add_trust(new.paths.root)
    dev_dir, req = request_for(tmp_path, "cam-12")
    device.install_bundle(new.enrol(req).bundle_path, dev_dir)
    cas = x509.load_pem_x509_certificates((dev_dir / "ca.pem").read_bytes())
    assert {c.subject for c in cas} == {old_ca.subject, new_ca.subject}
    new.remove_trust(dock.paths.root)
    assert new.also_trusted == []


def test_bundle_with_path_tricks_or_links_is_refused(dock: Dock, tmp_path: Path) -> None:
    dev_dir, req = request_for(tmp_path, "cam-13")
    good = dock.enrol(req).bundle_path
    with tarfile.open(good) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        trick = tarfile.TarInfo("../../etc/cron.d/x")
        trick.size = 3
        tar.addfile(trick, io.BytesIO(b"bad"))
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        tar.addfile(link)
    with pytest.raises(BundleError) as exc:
        device.install_bundle(evil, dev_dir)
    assert "has a path" in str(exc.value)
    assert "not a regular file" in str(exc.value)
    assert not (tmp_path.parent / "etc").exists()
    huge = tmp_path / "huge.tar.gz"
    huge.write_bytes(b"\x00" * (5 * 1024 * 1024))
    with pytest.raises(BundleError, match="too large"):
        device.install_bundle(huge, dev_dir)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_accepted_device_ids_are_valid_evidence_ids_and_safe_topic_levels(text: str) -> None:
    from evidence.records import DEVICE_ID_RE

    refused: InvalidDeviceIdError | None = None
    accepted = ""
    try:
        accepted = validate_device_id(text)
    except InvalidDeviceIdError as exc:
        refused = exc
    if refused is not None:  # asserted outside the except block, so pytest reports it plainly
        assert refused.device_id == text
        assert refused.reason
        return
    assert accepted == text
    assert DEVICE_ID_RE.match(accepted)
    assert not set(accepted) & set("+#/ \t\n\x00")
