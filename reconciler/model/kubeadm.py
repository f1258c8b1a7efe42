"""What kubeadm puts on a node: names, host paths, issuing CAs and the components that load them.

Names are kubeadm's own (``kubeadm certs renew <name>``, ``kubeadm certs check-expiration``), so
an operator can move between the two tools without a translation table. Paths are host paths
(``/etc/kubernetes/...``); the ``host`` module maps them under ``--host-root``.

A certificate is *externally managed*, as kubeadm defines it, when the key of its CA is absent:
then kubeadm (and we) cannot sign a replacement, and someone else owns its renewal.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

PKI = "/etc/kubernetes/pki"
KUBECONFIG_DIR = "/etc/kubernetes"
MANIFESTS = "/etc/kubernetes/manifests"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
KUBELET_CLIENT_CURRENT = "/var/lib/kubelet/pki/kubelet-client-current.pem"
# kucero's own working area; kubeadm uses /etc/kubernetes/tmp for its backups too.
TMP = "/etc/kubernetes/tmp"

Kind = Literal["certificate", "kubeconfig", "ca"]


@dataclasses.dataclass(frozen=True)
class CA:
    name: str
    cert: str
    key: str


@dataclasses.dataclass(frozen=True)
class Leaf:
    """A kubeadm-managed leaf: a PKI certificate/key pair or a kubeconfig's client cert."""

    name: str
    kind: Kind
    ca: str  # name of the issuing CA
    path: str  # the .crt, or the kubeconfig
    key: str | None  # the .key (None for kubeconfigs: the key lives in or beside them)
    components: tuple[str, ...]  # static pods that load it and must restart after renewal


CAS = (
    CA("ca", f"{PKI}/ca.crt", f"{PKI}/ca.key"),
    CA("etcd-ca", f"{PKI}/etcd/ca.crt", f"{PKI}/etcd/ca.key"),
    CA("front-proxy-ca", f"{PKI}/front-proxy-ca.crt", f"{PKI}/front-proxy-ca.key"),
)
CA_BY_NAME = {ca.name: ca for ca in CAS}


def _pki(name: str, file: str, ca: str, *components: str) -> Leaf:
    return Leaf(name, "certificate", ca, f"{PKI}/{file}.crt", f"{PKI}/{file}.key", components)


def _conf(name: str, *components: str) -> Leaf:
    return Leaf(name, "kubeconfig", "ca", f"{KUBECONFIG_DIR}/{name}", None, components)


# kubeadm's order in `kubeadm certs check-expiration` is alphabetical; we keep it.
LEAVES = (
    _conf("admin.conf"),
    _pki("apiserver", "apiserver", "ca", "kube-apiserver"),
    _pki("apiserver-etcd-client", "apiserver-etcd-client", "etcd-ca", "kube-apiserver"),
    _pki("apiserver-kubelet-client", "apiserver-kubelet-client", "ca", "kube-apiserver"),
    _conf("controller-manager.conf", "kube-controller-manager"),
    # Used by probes and etcdctl, not loaded by the etcd process itself.
    _pki("etcd-healthcheck-client", "etcd/healthcheck-client", "etcd-ca"),
    _pki("etcd-peer", "etcd/peer", "etcd-ca", "etcd"),
    _pki("etcd-server", "etcd/server", "etcd-ca", "etcd"),
    _pki("front-proxy-client", "front-proxy-client", "front-proxy-ca", "kube-apiserver"),
    _conf("scheduler.conf", "kube-scheduler"),
    _conf("super-admin.conf"),
)
LEAF_BY_NAME = {leaf.name: leaf for leaf in LEAVES}
NAMES = tuple(leaf.name for leaf in LEAVES)

# Static pods in restart order: etcd last and alone, so quorum is touched once.
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")


def manifest(component: str) -> str:
    return f"{MANIFESTS}/{component}.yaml"
