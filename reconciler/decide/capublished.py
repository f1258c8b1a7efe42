"""The published CA certificates: the ConfigMap the leader writes, and a ``--ca-bundle`` file.

The ConfigMap (``kucero-ca`` in kucero's namespace) holds **certificates only, never a key**:

| key | value |
| --- | --- |
| ``<name>.crt`` | the renewed CA certificate (PEM), for ``ca``, ``front-proxy-ca``, ``etcd-ca`` |
| ``<name>.sha256`` | its SHA-256 fingerprint (DER, hex) |
| ``<name>.previousNotAfter`` | the end of the certificate it replaces (RFC 3339): kubeconfigs handed out before the renewal embed that one and work until then |

Reading either source only parses; whether a node trusts what it reads is
``carenewal.check_published``'s decision, against the CA the node already has. A certificate
whose fingerprint does not match, that does not parse, or (in a bundle) whose subject is none
of this node's CAs is refused as it stands, with the reason.

Pure: mappings and bytes in, values out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from cryptography import x509

from reconciler.decide import carenewal, pki, trustanchors
from reconciler.model import hoststate, kubeadm

NAME = "kucero-ca"
NAMES = tuple(ca.name for ca in kubeadm.CAS)
# A ConfigMap's data is at most 1 MiB; three certificates are a few KiB. A bigger value is not
# ours: refused before it is parsed.
MAX_PEM_BYTES = 64 * 1024


def encode(
    certs: Mapping[str, x509.Certificate], previous: Mapping[str, dt.datetime]
) -> dict[str, str]:
    """The ConfigMap's ``data`` for these CA certificates."""
    out = {}
    for name, cert in sorted(certs.items()):
        out[f"{name}.crt"] = pki.cert_pem(cert).decode()
        out[f"{name}.sha256"] = carenewal.fingerprint(cert)
        if name in previous:
            out[f"{name}.previousNotAfter"] = previous[name].strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def decode(data: Mapping[str, object], source: str) -> hoststate.Published:
    """The published CAs in a ConfigMap's ``data`` (anything else in it is ignored)."""
    cas = {}
    for name in NAMES:
        pem = data.get(f"{name}.crt")
        if pem is None:
            continue
        cas[name] = _one(name, pem, data.get(f"{name}.sha256"))
    return hoststate.Published(source, cas)


def previous_not_after(data: Mapping[str, object]) -> dict[str, dt.datetime]:
    """``<name>.previousNotAfter`` of each CA, where it is a valid time."""
    out = {}
    for name in NAMES:
        value = data.get(f"{name}.previousNotAfter")
        if isinstance(value, str):
            try:
                when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if when.tzinfo is not None:
                out[name] = when.astimezone(dt.UTC)
    return out


def from_bundle(
    data: bytes, source: str, cas: Mapping[str, hoststate.CAFile]
) -> hoststate.Published:
    """A PEM bundle (``--ca-bundle``): each certificate goes to the local CA of its subject
    (preferring one with that CA's key, so a forged copy beside the real one is ignored);
    one whose subject is none of the node's CAs is ignored (one bundle serves every node: a
    worker has no front-proxy or etcd CA), a file with no certificate refused."""
    offered: dict[str, list[x509.Certificate]] = {}
    refused, ignored = [], []
    certs = trustanchors.certs_in_pem(data)
    if not certs:
        refused.append(f"{source}: no readable certificate")
    for cert in certs:
        name = _ca_of(cert, cas)
        if name is None:
            ignored.append(
                f"{source}: {cert.subject.rfc4514_string()!r} is the subject of none of this "
                "node's CAs (one it does not have, or another subject): ignored, nothing written"
            )
        else:
            offered.setdefault(name, []).append(cert)
    published = {}
    for name, candidates in offered.items():
        local = cas[name].cert
        assert local is not None
        honest = [c for c in candidates if carenewal.same_ca(c, local) and carenewal.self_signed(c)]
        chosen = max(honest, key=lambda c: c.not_valid_after_utc) if honest else candidates[0]
        published[name] = hoststate.PublishedCA(name, chosen)
    return hoststate.Published(source, published, tuple(refused), tuple(ignored))


def _ca_of(cert: x509.Certificate, cas: Mapping[str, hoststate.CAFile]) -> str | None:
    try:
        subject = carenewal.raw_subject(cert)
    except (ValueError, IndexError):
        return None
    for name, ca in cas.items():
        if ca.cert is not None and carenewal.raw_subject(ca.cert) == subject:
            return name
    return None


def _one(name: str, pem: object, sha: object) -> hoststate.PublishedCA:
    if not isinstance(pem, str) or len(pem) > MAX_PEM_BYTES:
        return hoststate.PublishedCA(
            name, None, "not a PEM certificate of a sane size", carenewal.Refusal.UNPARSEABLE
        )
    try:
        cert = pki.load_cert(pem.encode())
    except pki.PKIError as e:
        return hoststate.PublishedCA(name, None, str(e), carenewal.Refusal.UNPARSEABLE)
    actual = carenewal.fingerprint(cert)
    if sha != actual:
        return hoststate.PublishedCA(
            name,
            None,
            f"its fingerprint is {actual}, the ConfigMap says {str(sha)[:64]!r}",
            carenewal.Refusal.FINGERPRINT_MISMATCH,
        )
    return hoststate.PublishedCA(name, cert)
