"""Enrolment requests: what leaves a device when it is brought into service.

A request is one JSON file holding only public material: the device id, the TLS CSR (CN = device
id) and the Ed25519 evidence-signing public key, plus a proof of possession: the signing key's
signature over the canonical encoding of the rest, which binds that key to this CSR so nobody can
attach someone else's public key to a request.

Failure posture: :func:`load_request` checks everything it can without the dock (format, id
rules, CSR self-signature, CN = device id, proof of possession) and raises :class:`BundleError`
listing every problem, or :class:`InvalidDeviceIdError` for a forbidden id.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from evidence.canonical import canonical_bytes
from evidence.keys import key_id, public_pem
from provisioning.errors import BundleError, MaterialError
from provisioning.ids import validate_device_id
from provisioning.pki import csr_common_name

REQUEST_FORMAT = "bodycam-enrolment-request/1"
REQUEST_SUFFIX = ".request.json"


@dataclass(frozen=True)
class EnrolmentRequest:
    device_id: str
    csr: x509.CertificateSigningRequest
    signing_public: Ed25519PublicKey

    @property
    def signing_key_id(self) -> str:
        return key_id(self.signing_public)

    def _unsigned(self) -> dict[str, Any]:
        return {
            "format": REQUEST_FORMAT,
            "device_id": self.device_id,
            "csr": self.csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            "signing_public": public_pem(self.signing_public).decode("ascii"),
            "signing_key_id": self.signing_key_id,
        }

    def to_json(self, signing_key: Ed25519PrivateKey) -> bytes:
        doc = self._unsigned()
        doc["proof"] = base64.b64encode(signing_key.sign(canonical_bytes(doc))).decode("ascii")
        return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def load_request(path: Path) -> EnrolmentRequest:
    """Read and check a request file, or a directory holding exactly one ``*.request.json``."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob(f"*{REQUEST_SUFFIX}"))
        if len(found) != 1:
            raise BundleError(
                path, [f"expected exactly one *{REQUEST_SUFFIX} file, found {len(found)}"]
            )
        path = found[0]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(path, ["the enrolment request does not exist"]) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(path, [f"not a readable JSON enrolment request ({exc})"]) from exc
    if not isinstance(doc, dict) or doc.get("format") != REQUEST_FORMAT:
        raise BundleError(path, [f"not an enrolment request (format must be {REQUEST_FORMAT})"])
    problems: list[str] = []
    missing = [k for k in ("device_id", "csr", "signing_public", "proof") if k not in doc]
    if missing:
        raise BundleError(path, [f"missing field(s): {', '.join(missing)}"])
    device_id = validate_device_id(str(doc["device_id"]))
    try:
        csr = x509.load_pem_x509_csr(str(doc["csr"]).encode("ascii"))
    except ValueError as exc:
        raise BundleError(path, [f"the CSR is not a PEM certificate request ({exc})"]) from exc
    try:
        cn = csr_common_name(csr, path=path)
    except MaterialError as exc:
        raise BundleError(path, [exc.reason]) from exc
    # The CN becomes the MQTT username; check it on its own, not only via device_id.
    validate_device_id(cn)
    if cn != device_id:
        problems.append(f"the CSR's CN {cn!r} differs from the device id {device_id!r}")
    try:
        pub = serialization.load_pem_public_key(str(doc["signing_public"]).encode("ascii"))
    except ValueError as exc:
        raise BundleError(path, [f"the signing public key is not PEM ({exc})"]) from exc
    if not isinstance(pub, Ed25519PublicKey):
        raise BundleError(path, [f"the signing key is {type(pub).__name__}, not Ed25519"])
    request = EnrolmentRequest(device_id, csr, pub)
    try:
        proof = base64.b64decode(str(doc["proof"]), validate=True)
        pub.verify(proof, canonical_bytes(request._unsigned()))
    except (ValueError, InvalidSignature):
        problems.append(
            "the proof of possession does not verify: the request was altered or the signing"
            " key does not belong to it"
        )
    if problems:
        raise BundleError(path, problems)
    return request
