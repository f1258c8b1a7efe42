"""Where each CA is trusted on a node, and how a renewed CA certificate is put there.

The trust-anchor table (kubeadm's layout):

| CA | file (host path) | kind | on |
| --- | --- | --- | --- |
| ca | /etc/kubernetes/pki/ca.crt | PEM | every node (workers get it from `kubeadm join`) |
| ca | admin.conf, super-admin.conf, controller-manager.conf, scheduler.conf, kubelet.conf in /etc/kubernetes | kubeconfig `certificate-authority-data` | control plane; kubelet.conf everywhere |
| ca | the kubelet's `authentication.x509.clientCAFile` (kubeadm: pki/ca.crt) | PEM | every node |
| front-proxy-ca | /etc/kubernetes/pki/front-proxy-ca.crt | PEM | control plane |
| etcd-ca | /etc/kubernetes/pki/etcd/ca.crt | PEM | control plane with stacked etcd |

Which components load each file is read from the static pod manifests (``decide.components``),
the kubelet loads kubelet.conf and its clientCAFile; ``caplan`` restarts them all.

An anchor may hold several certificates (a bundle). Only those of the CA being renewed (same
raw subject, same public key) are replaced, by one copy of the renewed certificate; every
other byte of a PEM file (other certificates, comments) and every other field of a
kubeconfig is kept. An anchor holding no certificate of that CA (a kubeconfig pointed at
another cluster's CA) is not an anchor of it and is left alone.

Pure: bytes and parsed documents in, bytes and documents out.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from cryptography import x509

from reconciler.decide import carenewal, pki
from reconciler.model import hoststate, kubeadm

KUBECONFIGS = (
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
    "kubelet.conf",
)
# The CA each PEM anchor file holds, by kubeadm's layout.
PEM_FILES = {ca.name: ca.cert for ca in kubeadm.CAS}
# The kubelet's own trust anchors (restarting the kubelet loads them).
KUBELET = "kubelet"

_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----\r?\n?"
)


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a CA may be trusted: its host path, the CA it holds, how it holds it."""

    ca: str
    path: str
    kind: str  # "pem" or "kubeconfig"


def client_ca_file(kubelet_config: Mapping[str, Any] | None) -> str | None:
    """The kubelet's ``authentication.x509.clientCAFile``, when it is an absolute path."""
    try:
        value = (kubelet_config or {})["authentication"]["x509"]["clientCAFile"]
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, str) and value.startswith("/") else None


def places(kubelet_config: Mapping[str, Any] | None) -> list[Place]:
    """Every place a CA of this node may be trusted, each path once."""
    out = [Place(name, path, "pem") for name, path in PEM_FILES.items()]
    out += [Place("ca", f"{kubeadm.KUBECONFIG_DIR}/{n}", "kubeconfig") for n in KUBECONFIGS]
    extra = client_ca_file(kubelet_config)
    if extra is not None and extra not in {p.path for p in out}:
        out.append(Place("ca", extra, "pem"))
    return out


def loaded_by_kubelet(path: str, kubelet_config: Mapping[str, Any] | None) -> bool:
    return path in (kubeadm.KUBELET_CONF, client_ca_file(kubelet_config))


def certs_in_pem(
    data: bytes, known: dict[bytes, x509.Certificate] | None = None
) -> tuple[x509.Certificate, ...]:
    """Every parseable certificate of a PEM bundle, in order (damaged blocks are skipped:
    they are left in the file untouched). ``known``: PEM block -> certificate already parsed
    (the CA files, an earlier anchor), reused and filled, so the same CA certificate embedded
    in five kubeconfigs is parsed once."""
    out = []
    for block in _PEM_BLOCK.findall(data):
        key = block.rstrip(b"\r\n").replace(b"\r\n", b"\n") + b"\n"
        if known is not None and key in known:
            out.append(known[key])
            continue
        try:
            cert = pki.load_cert(block)
        except pki.PKIError:
            continue
        if known is not None:
            known[key] = cert
        out.append(cert)
    return tuple(out)


def ca_data_of(document: Mapping[str, Any]) -> list[bytes]:
    """The decoded ``certificate-authority-data`` of every cluster of a kubeconfig."""
    out = []
    for entry in _clusters(document):
        data = _decoded(entry)
        if data is not None:
            out.append(data)
    return out


def trusted_until(anchor: hoststate.Anchor, ca: x509.Certificate) -> x509.Certificate | None:
    """The certificate of CA ``ca`` this anchor trusts longest, or None when it holds none."""
    mine = [c for c in anchor.certs if carenewal.same_ca(c, ca)]
    return max(mine, key=lambda c: c.not_valid_after_utc) if mine else None


def stale(anchor: hoststate.Anchor, target: x509.Certificate) -> bool:
    """The anchor holds the CA of ``target`` only in certificates that end before it."""
    held = trusted_until(anchor, target)
    return held is not None and held.not_valid_after_utc < target.not_valid_after_utc


def rewrite_pem(data: bytes, target: x509.Certificate) -> bytes:
    """``data`` with its certificates of ``target``'s CA replaced by one copy of ``target``."""
    pem = pki.cert_pem(target)
    placed = False

    def swap(match: re.Match[bytes]) -> bytes:
        nonlocal placed
        try:
            cert = pki.load_cert(match.group())
        except pki.PKIError:
            return match.group()
        if not carenewal.same_ca(cert, target):
            return match.group()
        if placed:
            return b""
        placed = True
        return pem

    return _PEM_BLOCK.sub(swap, data)


def rewrite_kubeconfig(document: Mapping[str, Any], target: x509.Certificate) -> dict[str, Any]:
    """A copy of the kubeconfig whose clusters trust ``target`` where they trusted its CA."""
    out = copy.deepcopy(dict(document))
    for entry in _clusters(out):
        data = _decoded(entry)
        if data is None:
            continue
        new = rewrite_pem(data, target)
        if new != data:
            entry["certificate-authority-data"] = base64.b64encode(new).decode()
    return out


def _clusters(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    clusters = document.get("clusters")
    if not isinstance(clusters, list):
        return []
    return [
        c["cluster"] for c in clusters if isinstance(c, dict) and isinstance(c.get("cluster"), dict)
    ]


def _decoded(cluster: Mapping[str, Any]) -> bytes | None:
    value = cluster.get("certificate-authority-data")
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
