"""Kubelet serving CSRs for the tests and the benchmark, well-formed or hostile on purpose.

``request_pem`` makes the PKCS#10 request a kubelet would send (or a tampered one), and
``csr_object`` wraps it in the API's JSON as the API server would return it (with the
requestor the API server fills in), so the pure checks see exactly what the signer sees.
Keys are cached per type: generating RSA keys dominates otherwise.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import ipaddress
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

SIGNER = "kubernetes.io/kubelet-serving"
ECDSA_USAGES = ("digital signature", "server auth")
RSA_USAGES = ("key encipherment", "digital signature", "server auth")


@functools.cache
def key(kind: str = "ecdsa") -> Any:
    """A cached private key: ecdsa (P-256), ecdsa-p384, ecdsa-p521, rsa (2048), rsa-1024,
    rsa-4096, ed25519."""
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ecdsa-p521":
        return ec.generate_private_key(ec.SECP521R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    bits = {"rsa": 2048, "rsa-1024": 1024, "rsa-4096": 4096}[kind]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def request_pem(
    node: str = "n1",
    *,
    cn: str | None = None,
    orgs: Sequence[str] = ("system:nodes",),
    dns: Sequence[str] = (),
    ips: Sequence[str] = ("10.0.0.1",),
    emails: Sequence[str] = (),
    uris: Sequence[str] = (),
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    key_kind: str = "ecdsa",
    private_key: Any = None,
) -> bytes:
    """A PEM CSR for ``system:node:<node>`` (or subject ``cn``) with these SANs."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn or f"system:node:{node}"))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    names += [x509.RFC822Name(e) for e in emails]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    signer = private_key or key(key_kind)
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signer, algorithm).public_bytes(serialization.Encoding.PEM)


def csr_object(
    pem: bytes,
    node: str = "n1",
    *,
    username: str | None = None,
    groups: Sequence[str] = ("system:nodes", "system:authenticated"),
    usages: Sequence[str] = ECDSA_USAGES,
    signer: str = SIGNER,
    expiration_seconds: int | None = None,
    created: dt.datetime | None = None,
    name: str = "csr-1",
) -> dict[str, Any]:
    """The CSR as the API returns it (``spec.request`` base64 of the PEM)."""
    spec: dict[str, Any] = {
        "request": base64.b64encode(pem).decode(),
        "signerName": signer,
        "usages": list(usages),
        "username": f"system:node:{node}" if username is None else username,
        "groups": list(groups),
    }
    if expiration_seconds is not None:
        spec["expirationSeconds"] = expiration_seconds
    stamp = (created or dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name, "creationTimestamp": stamp},
        "spec": spec,
        "status": {},
    }


def body(
    pem: bytes, name: str, usages: Sequence[str] = ECDSA_USAGES, **spec: Any
) -> dict[str, Any]:
    """A create body for the API (what a client POSTs)."""
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64.b64encode(pem).decode(),
            "signerName": spec.pop("signer", SIGNER),
            "usages": list(usages),
            **spec,
        },
    }


def node_object(
    name: str = "n1", addresses: Sequence[tuple[str, str]] = (("InternalIP", "10.0.0.1"),)
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {}},
        "status": {"addresses": [{"type": t, "address": a} for t, a in addresses]},
    }
