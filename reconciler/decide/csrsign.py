"""The kubelet serving certificate kucero issues for an approved request, and whether its CA may
sign at all. Pure: the CA, the serial and ``now`` are passed in.

The certificate carries only what was checked: the request's subject and DNS/IP SANs, the
approved usages, ``BasicConstraints CA:false`` (critical), a subject key identifier and the
CA's authority key identifier. Nothing else the request asked for is copied. Validity starts
``BACKDATE`` before ``now`` (clock skew between nodes) and never outlives the CA.

A CA that is expired, not yet valid, not a CA, or whose key does not match its certificate must
not sign; ``ca_problem`` names why, so the caller can say so (condition, Event, metric) without
ever printing the key.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from reconciler.decide import csr, pki

BACKDATE = pki.BACKDATE


def ca_problem(
    ca_cert: x509.Certificate, ca_key: pki.PrivateKey, now: dt.datetime
) -> tuple[csr.Reason, str] | None:
    """Why this CA must not sign now, or None when it may."""
    if now >= ca_cert.not_valid_after_utc:
        return csr.Reason.CA_EXPIRED, f"CA expired at {ca_cert.not_valid_after_utc.isoformat()}"
    if now < ca_cert.not_valid_before_utc:
        start = ca_cert.not_valid_before_utc.isoformat()
        return csr.Reason.CA_NOT_YET_VALID, f"CA not valid before {start}"
    if not pki.key_matches(ca_cert, ca_key):
        return csr.Reason.CA_KEY_MISMATCH, "the CA key does not match the CA certificate"
    if not pki.summary(ca_cert).is_ca:
        return csr.Reason.CA_UNAVAILABLE, "the CA certificate is not a CA (BasicConstraints)"
    return None


def build(
    request: csr.Request,
    usages: frozenset[str],
    ca_cert: x509.Certificate,
    ca_key: pki.PrivateKey,
    serial: int,
    now: dt.datetime,
    validity: dt.timedelta,
) -> x509.Certificate:
    """The serving certificate for ``request`` (already checked), signed by the CA."""
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    public_key = request.csr.public_key()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in request.dns_names]
    sans += [x509.IPAddress(ip) for ip in request.ips]
    return (
        x509.CertificateBuilder()
        .subject_name(request.csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(usages), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(pki._authority_key_identifier(ca_cert), critical=False)
        .sign(ca_key, pki.signature_hash_for(ca_key))
    )


def _key_usage(usages: frozenset[str]) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature="digital signature" in usages,
        content_commitment=False,
        key_encipherment="key encipherment" in usages,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
