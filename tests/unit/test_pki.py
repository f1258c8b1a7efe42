"""Native renewal keeps kubeadm's certificate profiles, for every kind and key type."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from reconciler.decide import pki
from reconciler.model import kubeadm
from reconciler.node import host, keys, observe

LEAVES = [leaf.name for leaf in kubeadm.LEAVES]


def _ca_key(root: Path, ca: str) -> pki.PrivateKey:
    return pki.load_key((root / kubeadm.CA_BY_NAME[ca].key.lstrip("/")).read_bytes())


def _extensions(cert: x509.Certificate) -> dict[Any, tuple[bool, Any]]:
    skip = (x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier)
    return {e.oid: (e.critical, e.value) for e in cert.extensions if not isinstance(e.value, skip)}


@pytest.mark.parametrize("key_type", ["rsa", "ecdsa"])
@pytest.mark.parametrize("name", LEAVES)
def test_renewal_preserves_profile(
    make_tree: Any, now: dt.datetime, key_type: str, name: str
) -> None:
    root = make_tree(key_type=key_type)
    seen = observe.observe(host.Host(root))
    leaf = seen.leaves[name]
    ca_cert = seen.cas[leaf.ca].cert
    assert leaf.cert is not None and ca_cert is not None
    later = now + dt.timedelta(days=200)
    new_key = keys.new_key_like(leaf.cert.public_key())  # type: ignore[arg-type]
    new = pki.renew(
        leaf.cert, ca_cert, _ca_key(root, leaf.ca), new_key, 4242, later, dt.timedelta(days=365)
    )

    assert new.subject == leaf.cert.subject
    assert new.issuer == ca_cert.subject
    assert _extensions(new) == _extensions(leaf.cert)  # SANs, key usages, EKUs, constraints
    assert pki.issued_by(new, ca_cert)
    assert pki.key_matches(new, new_key)
    assert new.serial_number == 4242 != leaf.cert.serial_number
    assert new.not_valid_before_utc == later - pki.BACKDATE
    assert new.not_valid_after_utc == later + dt.timedelta(days=365)
    assert pki.describe_key(new.public_key()) == pki.describe_key(leaf.cert.public_key())  # type: ignore[arg-type]
    assert pki.public_bytes(new.public_key()) != pki.public_bytes(leaf.cert.public_key())  # type: ignore[arg-type]
    aki = new.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest


def test_renewal_never_outlives_its_ca(now: dt.datetime) -> None:
    from reconciler import fabricate

    ca = fabricate.make_ca("kubernetes", now, "ecdsa", lifetime=dt.timedelta(days=100))
    leaf, _ = fabricate.make_leaf(
        ca, "x", (), fabricate.CLIENT, (), now, dt.timedelta(days=10), "ecdsa"
    )
    new = pki.renew(
        leaf, ca[0], ca[1], keys.new_key_like(leaf.public_key()), 7, now, dt.timedelta(days=365)
    )  # type: ignore[arg-type]
    assert new.not_valid_after_utc == ca[0].not_valid_after_utc


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (rsa.generate_private_key(65537, 3072), "RSA-3072"),
        (ec.generate_private_key(ec.SECP384R1()), "ECDSA-secp384r1"),
    ],
    ids=["rsa-3072", "ecdsa-p384"],
)
def test_new_key_has_same_algorithm_and_size(key: pki.PrivateKey, expected: str) -> None:
    assert pki.describe_key(keys.new_key_like(key.public_key())) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "key_type"),
    [("RSA PRIVATE KEY", "rsa"), ("EC PRIVATE KEY", "ecdsa"), ("PRIVATE KEY", "pkcs8")],
)
def test_key_pem_keeps_the_container_of_the_key_it_replaces(header: str, key_type: str) -> None:
    from cryptography.hazmat.primitives import serialization

    key = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type != "rsa"
        else rsa.generate_private_key(65537, 2048)
    )
    fmt = (
        serialization.PrivateFormat.PKCS8
        if key_type == "pkcs8"
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    old = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    new = pki.key_pem(keys.new_key_like(key.public_key()), like=old)
    assert new.startswith(f"-----BEGIN {header}-----".encode())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"\x00\xff" * 100,
    ],
    ids=["empty", "text", "bad-base64-body", "binary"],
)
def test_garbage_certificates_raise_pki_error(data: bytes) -> None:
    with pytest.raises(pki.PKIError):
        pki.load_cert(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"],
    ids=["empty", "bad-body"],
)
def test_garbage_keys_raise_pki_error(data: bytes) -> None:
    with pytest.raises(pki.PKIError):
        pki.load_key(data)
