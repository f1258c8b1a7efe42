"""Renewing a CA certificate from its own key, and the rule for accepting a published one.

The common case is an expiring CA, not a compromised one: the certificate is re-issued with the
**same key and subject** (byte for byte), the same extensions (so the same subject key
identifier, basic constraints and key usage) and a new validity. Every leaf it signed keeps
verifying, because a verifier finds an issuer by subject and key identifier and checks the
signature with the key; none of them changed. So nothing has to be re-issued first, and a CA
that already expired renews just the same: the key is what matters.

A node accepts a published CA certificate only if it is exactly "the CA it already has, valid
longer": the same raw subject, the same public key, the same extensions, a valid self-signature
(only the holder of the CA key can have made it), valid now. Anything else (another key,
another subject, a certificate signed by someone else around our public key, extra name
constraints, garbage) is refused with a ``Refusal`` reason, and nothing is written. A tampered
ConfigMap can therefore never make a node trust another key.

Only self-signed CAs are renewed: an intermediate (issued by an outside root) is renewed where
its issuer's key is kept.

Pure: certificates, keys, ``now`` and the serial come in; no disk, clock or randomness.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from reconciler.decide import pki

# A published certificate may start this much after "now" on this node (clocks drift; a renewed
# CA is backdated by pki.BACKDATE anyway). Later than that, it is refused: installing a trust
# anchor that is not valid yet would break every connection that checks it.
CLOCK_SKEW = dt.timedelta(minutes=5)


class Refusal(enum.StrEnum):
    """Why a published CA certificate is refused (Event reason, metric label)."""

    UNPARSEABLE = "Unparseable"
    NOT_A_CA = "NotACA"
    SUBJECT_MISMATCH = "SubjectMismatch"
    KEY_MISMATCH = "KeyMismatch"
    NOT_SELF_SIGNED = "NotSelfSigned"
    EXTENSIONS_DIFFER = "ExtensionsDiffer"
    NOT_YET_VALID = "NotYetValid"
    EXPIRED = "Expired"
    FINGERPRINT_MISMATCH = "FingerprintMismatch"


@dataclasses.dataclass(frozen=True)
class Verdict:
    refusal: Refusal | None
    detail: str

    @property
    def accepted(self) -> bool:
        return self.refusal is None


class CARenewalError(ValueError):
    """A CA certificate that cannot be renewed from this key; the message says why."""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex (``openssl x509 -fingerprint -sha256``)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def raw_subject(cert: x509.Certificate) -> bytes:
    """The subject exactly as encoded in the certificate (not re-encoded): chain building
    compares these bytes with each leaf's issuer."""
    tbs = _children(_content(cert.tbs_certificate_bytes))
    fields = tbs[1:] if tbs and tbs[0][:1] == b"\xa0" else tbs  # [0] version is optional
    return fields[4]  # serialNumber, signature, issuer, validity, subject


def public_key_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def same_ca(a: x509.Certificate, b: x509.Certificate) -> bool:
    """One CA: the same raw subject and the same public key (validity and serial aside)."""
    try:
        return raw_subject(a) == raw_subject(b) and public_key_der(a) == public_key_der(b)
    except (ValueError, IndexError):
        return False


def due(cert: x509.Certificate, now: dt.datetime, renew_before: dt.timedelta) -> bool:
    return cert.not_valid_after_utc - now < renew_before


def self_signed(cert: x509.Certificate) -> bool:
    """Issuer equals subject and the certificate's own key verifies its signature."""
    return cert.issuer == cert.subject and pki.issued_by(cert, cert)


def renew(
    cert: x509.Certificate,
    key: pki.PrivateKey,
    serial: int,
    now: dt.datetime,
    validity: dt.timedelta,
) -> x509.Certificate:
    """``cert`` re-issued by its own ``key``: same subject and extensions, a new serial, valid
    from ``now - pki.BACKDATE`` for ``validity``. Raises ``CARenewalError`` when ``key`` is not
    the certificate's, when it is not a self-signed CA, or when the result is not the same CA."""
    if not pki.is_ca(cert):
        raise CARenewalError("not a CA certificate (basicConstraints CA:FALSE or absent)")
    if not pki.key_matches(cert, key):
        raise CARenewalError("the CA key does not match the CA certificate")
    if not self_signed(cert):
        raise CARenewalError(
            f"not self-signed (issued by {cert.issuer.rfc4514_string()}): renew it where its "
            "issuer's key is kept"
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - pki.BACKDATE)
        .not_valid_after(now + validity)
    )
    for ext in cert.extensions:  # SKI and AKI included: same key, same identifiers
        builder = builder.add_extension(ext.value, ext.critical)
    renewed = builder.sign(key, pki.signature_hash_for(key))
    verdict = check_published(renewed, cert, now)
    if not verdict.accepted:  # e.g. a subject cryptography cannot re-encode byte for byte
        raise CARenewalError(f"the renewed certificate is not the same CA: {verdict.detail}")
    return renewed


def check_published(
    published: x509.Certificate, local: x509.Certificate, now: dt.datetime
) -> Verdict:
    """Whether a node that has the CA ``local`` may trust ``published`` in its place."""
    try:
        if not pki.is_ca(published):
            return Verdict(Refusal.NOT_A_CA, "not a CA certificate")
        if raw_subject(published) != raw_subject(local):
            return Verdict(
                Refusal.SUBJECT_MISMATCH,
                f"subject {published.subject.rfc4514_string()!r} is not this node's CA "
                f"subject {local.subject.rfc4514_string()!r}",
            )
        if public_key_der(published) != public_key_der(local):
            return Verdict(Refusal.KEY_MISMATCH, "its public key is not the key of this node's CA")
        if not self_signed(published):
            return Verdict(
                Refusal.NOT_SELF_SIGNED,
                "not signed by the CA's own key: only the CA key's holder may publish it",
            )
        if _extensions(published) != _extensions(local):
            return Verdict(
                Refusal.EXTENSIONS_DIFFER,
                "its extensions (basic constraints, key usage, key identifiers, ...) differ "
                "from this node's CA",
            )
    except (ValueError, IndexError, TypeError) as e:  # hostile DER: guard every access
        return Verdict(Refusal.UNPARSEABLE, f"cannot be examined: {e}")
    if published.not_valid_before_utc > now + CLOCK_SKEW:
        return Verdict(
            Refusal.NOT_YET_VALID,
            f"not valid before {published.not_valid_before_utc.isoformat()}",
        )
    if published.not_valid_after_utc <= now:
        return Verdict(Refusal.EXPIRED, f"expired at {published.not_valid_after_utc.isoformat()}")
    return Verdict(None, f"same CA, valid until {published.not_valid_after_utc.isoformat()}")


def _extensions(cert: x509.Certificate) -> list[tuple[str, bool, bytes]]:
    return sorted(
        (e.oid.dotted_string, e.critical, e.value.public_bytes()) for e in cert.extensions
    )


# --- a little DER: enough to find the raw subject in a TBSCertificate -----------------------


def _header(data: bytes, at: int) -> tuple[int, int]:
    """(offset of the content, length of the content) of the TLV starting at ``at``."""
    first = data[at + 1]
    if first < 0x80:
        return at + 2, first
    size = first & 0x7F
    if not 0 < size <= 4:
        raise ValueError("DER length out of range")
    return at + 2 + size, int.from_bytes(data[at + 2 : at + 2 + size], "big")


def _content(data: bytes) -> bytes:
    start, length = _header(data, 0)
    return data[start : start + length]


def _children(content: bytes) -> list[bytes]:
    """The raw TLVs inside a constructed value's content."""
    out, at = [], 0
    while at < len(content):
        start, length = _header(content, at)
        end = start + length
        if end > len(content):
            raise ValueError("truncated DER")
        out.append(content[at:end])
        at = end
    return out
