"""Read a node's trust anchors, and the writes that put a renewed CA certificate in them.

Which files are anchors of which CA is ``decide.trustanchors``'s table; this module only reads
them (a missing file is not an anchor; one that cannot be read or holds no certificate is kept
with its ``error``, reported by the plan and never written) and turns an install into a
``transaction.Write``, so a CA renewal lands through the same transaction (backup, journal,
crash recovery) as a leaf renewal.

A kubeconfig already parsed as a leaf (``admin.conf``, ...) or as the kubelet's is reused, not
parsed again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography import x509

from reconciler.decide import kubeconfig, pki, trustanchors
from reconciler.model import hoststate, kubeadm
from reconciler.node import host as host_
from reconciler.node import transaction


def observe(
    host: host_.Host,
    leaves: Mapping[str, hoststate.LeafFile],
    kubelet: hoststate.Kubelet,
    cas: Mapping[str, hoststate.CAFile],
) -> tuple[hoststate.Anchor, ...]:
    """Every trust anchor present on the node; never raises for a bad file. A certificate
    already parsed (the CA files of ``cas``) is not parsed again."""
    parsed = {leaf.path: leaf.document for leaf in leaves.values() if leaf.document is not None}
    if kubelet.conf is not None and kubelet.conf.document is not None:
        parsed[kubeadm.KUBELET_CONF] = kubelet.conf.document
    known = {pki.cert_pem(ca.cert): ca.cert for ca in cas.values() if ca.cert is not None}
    out = []
    for place in trustanchors.places(kubelet.config):
        found = _read(host, place, parsed.get(place.path), known)
        if found is not None:
            out.append(found)
    return tuple(out)


def write(anchor: hoststate.Anchor, target: x509.Certificate) -> transaction.Write:
    """The anchor holding ``target`` instead of its older certificates of that CA; its mode
    and owner are kept by the transaction."""
    if anchor.kind == "kubeconfig":
        assert anchor.document is not None
        document = trustanchors.rewrite_kubeconfig(anchor.document, target)
        return transaction.Write(anchor.path, kubeconfig.dump(document))
    assert anchor.data is not None
    return transaction.Write(anchor.path, trustanchors.rewrite_pem(anchor.data, target))


def _read(
    host: host_.Host,
    place: trustanchors.Place,
    document: dict[str, Any] | None,
    known: dict[bytes, x509.Certificate],
) -> hoststate.Anchor | None:
    base = hoststate.Anchor(place.ca, place.path, place.kind)
    try:
        if place.kind == "pem":
            data = host.read(place.path)
            if data is None:
                return None
            certs = trustanchors.certs_in_pem(data, known)
            if not certs:
                return _error(base, f"{place.path}: no readable certificate")
            return hoststate.Anchor(place.ca, place.path, "pem", certs, data=data)
        if document is None:
            text = host.read(place.path)
            if text is None:
                return None
            document = kubeconfig.parse(text)
    except host_.HostError as e:
        return _error(base, str(e))
    except kubeconfig.KubeconfigError as e:
        return _error(base, f"{place.path}: {e}")
    pems = trustanchors.ca_data_of(document)
    certs = tuple(c for pem in pems for c in trustanchors.certs_in_pem(pem, known))
    return hoststate.Anchor(place.ca, place.path, "kubeconfig", certs, document=document)


def _error(base: hoststate.Anchor, message: str) -> hoststate.Anchor:
    return hoststate.Anchor(base.ca, base.path, base.kind, error=message)
