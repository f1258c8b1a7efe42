"""X.509 decisions and constructions, with no file or clock access.

Parsing turns every failure of ``cryptography`` (``ValueError``, ``UnsupportedAlgorithm``,
``InvalidVersion``, ...) into ``PKIError`` with a reason an operator can act on, because a
corrupt file must be reported and left alone, never crash a pass.

``renew`` re-issues a certificate with the same profile kubeadm gave it: subject, SANs, key
usages, extended key usages, basic constraints and any other extension are copied; the subject
and authority key identifiers are recomputed for the new key and the issuing CA; the serial is
given (random, drawn by the caller); validity starts a few minutes in the past to absorb clock skew between nodes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from typing import Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]  # noqa: UP007
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey]  # noqa: UP007

# Renewed certificates start this long before "now": nodes' clocks drift, and a certificate
# that is "not yet valid" on a peer is as broken as an expired one. kubeadm uses 5 minutes.
BACKDATE = dt.timedelta(minutes=5)

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


class PKIError(ValueError):
    """A certificate or key that cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class CertSummary:
    """What an operator wants to read about a certificate."""

    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int
    sha256: str
    key: str  # "RSA-2048", "ECDSA-P256", ...
    is_ca: bool


def load_cert(data: bytes) -> x509.Certificate:
    """The first certificate in PEM ``data``."""
    certs = load_certs(data)
    if not certs:
        raise PKIError("no PEM certificate found")
    return certs[0]


def load_certs(data: bytes) -> list[x509.Certificate]:
    if _PEM_CERT not in data:
        return []
    try:
        certs = x509.load_pem_x509_certificates(data)
        for cert in certs:  # touch lazily parsed parts now, so errors surface here
            cert.public_key()
            _ = cert.extensions, cert.subject, cert.issuer
    except (ValueError, UnsupportedAlgorithm, TypeError) as e:
        raise PKIError(f"not a valid PEM certificate: {e}") from e
    except Exception as e:  # x509.InvalidVersion is not a ValueError
        raise PKIError(f"not a valid certificate: {type(e).__name__}: {e}") from e
    return certs


def load_key(data: bytes) -> PrivateKey:
    """The private key in PEM ``data`` (PKCS#1, SEC1 or PKCS#8, unencrypted)."""
    if b"PRIVATE KEY-----" not in data:
        raise PKIError("no PEM private key found")
    try:
        # RSA key validation costs ~30 ms a key and a pass loads every key on the node twice.
        # Skipping it is safe here: a key is only trusted after its public half matched the
        # certificate's, and every certificate we sign is verified against the CA before it
        # is written (execute._check_renewed).
        key = serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise PKIError(f"not a valid PEM private key: {e}") from e
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise PKIError(f"unsupported key type {type(key).__name__}")
    return key


def public_bytes(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    try:
        return public_bytes(cert.public_key()) == public_bytes(key.public_key())  # type: ignore[arg-type]
    except (ValueError, UnsupportedAlgorithm):
        return False


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when ``ca`` signed ``cert`` (names match and the signature verifies)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def is_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert`` says CA:TRUE. Extensions that cannot be parsed count as a CA: such a
    certificate is never one kucero may renew as a leaf."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
    except (ValueError, UnsupportedAlgorithm):
        return True


def summary(cert: x509.Certificate) -> CertSummary:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertSummary(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=cert.serial_number,
        sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        key=describe_key(cert.public_key()),  # type: ignore[arg-type]
        is_ca=is_ca,
    )


def describe_key(key: PublicKey | PrivateKey) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"ECDSA-{key.curve.name}"
    return "Ed25519"


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def organizations(cert: x509.Certificate) -> list[str]:
    return [
        str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    ]


def renew(
    old: x509.Certificate,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    new_key: PrivateKey,
    serial: int,
    now: dt.datetime,
    validity: dt.timedelta,
) -> x509.Certificate:
    """Re-issue ``old`` for ``new_key``, signed by the CA, valid ``validity`` from ``now``.

    The validity never extends past the CA's own notAfter: a leaf outliving its CA is refused
    by every verifier, and kubeadm caps it the same way.
    """
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca_cert.subject)
        .public_key(new_key.public_key())
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
    )
    for ext in old.extensions:
        if isinstance(ext.value, x509.SubjectKeyIdentifier):
            value: x509.ExtensionType = x509.SubjectKeyIdentifier.from_public_key(
                new_key.public_key()
            )
        elif isinstance(ext.value, x509.AuthorityKeyIdentifier):
            value = _authority_key_identifier(ca_cert)
        else:
            value = ext.value
        builder = builder.add_extension(value, ext.critical)
    return builder.sign(ca_key, _signature_hash(old, ca_key))


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def _signature_hash(old: x509.Certificate, ca_key: PrivateKey) -> SignatureHash | None:
    if isinstance(ca_key, ed25519.Ed25519PrivateKey):
        return None
    try:
        algorithm = old.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if isinstance(algorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        return algorithm
    return hashes.SHA256()


def signature_hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    """SHA-256, as kubeadm uses; Ed25519 signs without a separate hash."""
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey, like: bytes | None = None) -> bytes:
    """PEM for ``key``, in the same container as the key it replaces (``like``).

    kubeadm writes RSA keys as PKCS#1 (``RSA PRIVATE KEY``) and ECDSA keys as SEC1
    (``EC PRIVATE KEY``); some tools write PKCS#8 (``PRIVATE KEY``). Keeping the container
    keeps every consumer of the file working.
    """
    traditional = like is None or b"-----BEGIN PRIVATE KEY-----" not in like
    if isinstance(key, ed25519.Ed25519PrivateKey):
        traditional = False
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if traditional
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
