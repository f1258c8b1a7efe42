"""What a node's files said when they were read: the gatherer's output, the plan's input.

Plain values; nothing here reads anything. Private key bytes are kept only where a renewal
needs the same PEM container, and never appear in a repr.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from reconciler.model import kubeadm, staticpod

if TYPE_CHECKING:  # annotations only: commands that print no certificate never load x509
    from cryptography import x509


@dataclasses.dataclass(frozen=True)
class FileIdentity:
    """Which file a host path ended at when observed: its host path with every link resolved,
    and its (device, inode). Two paths are one file when either matches."""

    resolved: str
    device: int
    inode: int


@dataclasses.dataclass(frozen=True)
class Credentials:
    user: str
    cert_data: bytes | None  # embedded PEM
    key_data: bytes | None
    cert_file: str | None  # absolute host path
    key_file: str | None

    @property
    def embedded(self) -> bool:
        return self.cert_data is not None


@dataclasses.dataclass(frozen=True)
class CAFile:
    name: str
    path: str
    cert: x509.Certificate | None
    key_present: bool
    error: str | None = None
    key_error: str | None = None  # the key is present but unusable (never its content)


@dataclasses.dataclass(frozen=True)
class LeafFile:
    name: str
    kind: kubeadm.Kind
    path: str
    ca: str
    cert: x509.Certificate | None = None
    # kept so a renewed key uses the same PEM container; never in a repr or a log
    key_pem: bytes | None = dataclasses.field(default=None, repr=False)
    key_matches: bool | None = None
    issued_by_ca: bool | None = None
    externally_managed: bool = False
    credentials: Credentials | None = dataclasses.field(default=None, repr=False)
    document: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    error: str | None = None
    # every host file this leaf is made of (certificate, key, kubeconfig, referenced files)
    files: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Kubelet:
    conf: LeafFile | None  # kubelet.conf's client credentials
    client_current: x509.Certificate | None
    client_current_key_matches: bool
    client_current_issued_by_ca: bool
    client_current_error: str | None
    config_text: str | None
    config: dict[str, Any] | None
    config_error: str | None


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A file that holds a CA certificate as a trust anchor (``decide.trustanchors`` says
    which): a PEM file (``pki/ca.crt``, the kubelet's ``clientCAFile``) or a kubeconfig's
    ``certificate-authority-data``. ``certs``: every certificate it holds (a bundle may hold
    several); ``data``: its bytes, kept to rewrite only the certificates of this CA."""

    ca: str  # the CA's name: ca, front-proxy-ca, etcd-ca
    path: str  # host path
    kind: str  # "pem" or "kubeconfig"
    certs: tuple[x509.Certificate, ...] = ()
    data: bytes | None = dataclasses.field(default=None, repr=False)
    document: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class PublishedCA:
    """One CA certificate published by the leader (or given with ``--ca-bundle``), parsed but
    not yet trusted: ``decide.caplan`` accepts it only if it is this node's CA, valid longer."""

    name: str
    cert: x509.Certificate | None
    error: str | None = None  # unparseable, fingerprint mismatch: refused as it stands
    refusal: str | None = None  # the reason to refuse it as it stands (a carenewal.Refusal)


@dataclasses.dataclass(frozen=True)
class Published:
    """What the cluster publishes about the CAs. ``None`` in ``Observed`` means no cluster at
    all (offline: a node with the CA key renews it itself)."""

    source: str  # where it was read, for messages ("ConfigMap kube-system/kucero-ca")
    cas: dict[str, PublishedCA] = dataclasses.field(default_factory=dict)
    # what cannot be read at all (garbage): refused, each a line
    refused: tuple[str, ...] = ()
    # certificates whose subject is none of this node's CAs: ignored, each a line
    ignored: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Observed:
    node_name: str | None
    cas: dict[str, CAFile]
    leaves: dict[str, LeafFile]  # only those present on the node, by kubeadm name
    kubelet: Kubelet
    manifests: frozenset[str]  # static pod components with a manifest
    pending_restarts: frozenset[str]  # from the state file: restarts owed by an earlier pass
    journal_pending: bool
    errors: tuple[str, ...] = ()
    # host path -> the file it resolved to, for every file a pass may read or write
    identities: dict[str, FileIdentity] = dataclasses.field(default_factory=dict)
    # static pods read from the kubelet's staticPodPath: the files they load, where they listen
    static_pods: dict[str, staticpod.StaticPod] = dataclasses.field(default_factory=dict)
    # components that still run an old certificate with kubeadm.restart none (state file)
    restart_required: frozenset[str] = frozenset()
    # every trust anchor of the three CAs on this node (decide.trustanchors)
    anchors: tuple[Anchor, ...] = ()
    # the CA certificates the cluster publishes; None: no cluster (offline)
    published: Published | None = None
