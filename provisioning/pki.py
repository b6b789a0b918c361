"""X.509 building blocks: the dock CA, TLS keys, CSRs, certificates and the CRL.

TLS keys are ECDSA P-256: every OpenSSL that Mosquitto and paho link against handles them in
TLS 1.2 and 1.3, and signing is cheap on a Pi. Device *evidence* signing keys are Ed25519 and live
in :mod:`evidence.keys`; they are never put into a certificate.

Failure posture: pure functions; anything unreadable, malformed or inconsistent raises
:class:`MaterialError` (or :class:`KeyMismatchError`) naming the file and the problem. Private
keys are written atomically with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evidence.fsutil import atomic_write
from provisioning.errors import KeyMismatchError, MaterialError

CA_VALIDITY_DAYS = 3650
CERT_VALIDITY_DAYS = 825
# OpenSSL refuses every client once the CRL's nextUpdate has passed (Mosquitto issue #1826), so
# the CRL is issued for as long as the CA lives and re-issued on every revocation.
CRL_VALIDITY_DAYS = CA_VALIDITY_DAYS
# Tolerates a device whose clock is a little behind the dock's when it first connects.
BACKDATE = dt.timedelta(minutes=5)

TlsPrivateKey = ec.EllipticCurvePrivateKey


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def generate_tls_key() -> TlsPrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organisation: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organisation:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(attrs)


@dataclass(frozen=True)
class Authority:
    """A CA key with its certificate."""

    key: TlsPrivateKey
    cert: x509.Certificate


def create_ca(
    common_name: str,
    *,
    organisation: str | None = None,
    validity_days: int = CA_VALIDITY_DAYS,
    now: dt.datetime | None = None,
) -> Authority:
    """A self-signed CA that may only issue end-entity certificates (pathlen 0)."""
    now = now or utcnow()
    key = generate_tls_key()
    name = _name(common_name, organisation)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, cert)


def _host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        if host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue_certificate(
    ca: Authority,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    *,
    server_hosts: Sequence[str] = (),
    client: bool = True,
    validity_days: int = CERT_VALIDITY_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """An end-entity certificate for ``public_key`` with CN ``common_name``.

    ``server_hosts`` non-empty makes it a TLS server certificate with those names as SANs;
    ``client`` adds the clientAuth extended key usage. ``not_before``/``not_after`` override the
    validity window (tests use them to make expired certificates).
    """
    if not server_hosts and not client:
        raise ValueError("a certificate must be for a server, a client or both")
    now = utcnow()
    start = not_before or (now - BACKDATE)
    end = not_after or (now + dt.timedelta(days=validity_days))
    ca_end = ca.cert.not_valid_after_utc
    if end > ca_end:
        end = ca_end
    usages = []
    if server_hosts:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server_hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_host_names(server_hosts)), critical=False
        )
    return builder.sign(ca.key, hashes.SHA256())


def create_csr(key: TlsPrivateKey, common_name: str) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(common_name))
        .sign(key, hashes.SHA256())
    )


def csr_common_name(csr: x509.CertificateSigningRequest, *, path: Path | None = None) -> str:
    """The single CN of a CSR whose self-signature is valid."""
    if not csr.is_signature_valid:
        raise MaterialError(path, "the CSR's signature is invalid (altered or corrupt request)")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise MaterialError(path, f"the CSR must have exactly one CN, it has {len(cns)}")
    value = cns[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def certificate_common_name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        return ""
    value = cns[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def build_crl(
    ca: Authority,
    revoked: Iterable[tuple[int, dt.datetime]],
    *,
    validity_days: int = CRL_VALIDITY_DAYS,
) -> x509.CertificateRevocationList:
    """A CRL listing the certificate serials in ``revoked`` with their revocation times."""
    now = utcnow()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - BACKDATE)
        .next_update(now + dt.timedelta(days=validity_days))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca.key, hashes.SHA256())


# ---------------------------------------------------------------------------------------- files


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise MaterialError(path, f"{what} is missing") from None
    except OSError as exc:
        raise MaterialError(path, f"cannot read {what}: {exc.strerror or exc}") from exc


def save_private_key(path: Path, key: TlsPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(Path(path), pem, mode=0o600)


def load_private_key(path: Path) -> TlsPrivateKey:
    data = _read(path, "the TLS private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise MaterialError(path, f"not a PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise MaterialError(path, f"expected an EC private key, found {type(key).__name__}")
    return key


def save_certificate(path: Path, cert: x509.Certificate) -> None:
    atomic_write(Path(path), cert.public_bytes(serialization.Encoding.PEM))


def load_certificate(path: Path) -> x509.Certificate:
    data = _read(path, "the certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise MaterialError(path, f"not a PEM certificate ({exc})") from exc


def save_csr(path: Path, csr: x509.CertificateSigningRequest) -> None:
    atomic_write(Path(path), csr.public_bytes(serialization.Encoding.PEM))


def load_csr(path: Path) -> x509.CertificateSigningRequest:
    data = _read(path, "the certificate signing request")
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise MaterialError(path, f"not a PEM certificate signing request ({exc})") from exc


def save_crl(path: Path, crl: x509.CertificateRevocationList) -> None:
    atomic_write(Path(path), crl.public_bytes(serialization.Encoding.PEM))


def load_crl(path: Path) -> x509.CertificateRevocationList:
    data = _read(path, "the CRL")
    try:
        return x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise MaterialError(path, f"not a PEM CRL ({exc})") from exc


# ----------------------------------------------------------------------------------- checks


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_key_matches(
    key: TlsPrivateKey, cert: x509.Certificate, *, cert_path: Path | None = None
) -> None:
    """Raise KeyMismatchError unless ``cert`` certifies the public half of ``key``."""
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise KeyMismatchError(
            cert_path,
            f"the certificate (CN {certificate_common_name(cert)!r}) does not match the private"
            " key: it was issued for a different key",
        )


def check_issued_by(
    cert: x509.Certificate, ca_cert: x509.Certificate, *, cert_path: Path | None = None
) -> None:
    """Raise MaterialError unless ``ca_cert`` signed ``cert``."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise MaterialError(
            cert_path,
            f"the certificate was not issued by the CA in this bundle ({exc or 'bad signature'})",
        ) from exc


def check_valid_now(
    cert: x509.Certificate, *, now: dt.datetime | None = None, cert_path: Path | None = None
) -> None:
    now = now or utcnow()
    if now < cert.not_valid_before_utc - BACKDATE:
        raise MaterialError(
            cert_path, f"the certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d}"
        )
    if now > cert.not_valid_after_utc:
        raise MaterialError(
            cert_path, f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}"
        )


def fingerprint(cert: x509.Certificate) -> str:
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()
