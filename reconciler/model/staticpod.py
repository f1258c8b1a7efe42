"""What a static pod manifest says about its component: the files it loads, where it listens,
and how to ask it whether it is healthy.

Plain values, read from the manifests by ``decide.components``; nothing here reads anything.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One TLS port of a component, as the node reaches it (loopback when it listens on all
    addresses or on 127.0.0.1)."""

    role: str  # "serving" (clients connect here) or "peer" (etcd's peer port)
    host: str
    port: int
    # host path of the certificate it serves; None when it serves one made in memory
    # (kube-controller-manager and kube-scheduler as kubeadm sets them up)
    cert_file: str | None


@dataclasses.dataclass(frozen=True)
class StaticPod:
    name: str  # kubeadm's component name: kube-apiserver, etcd, ...
    manifest: str  # host path of the manifest in the kubelet's static pod directory
    files: frozenset[str]  # host paths of every file its flags name, through its hostPath mounts
    endpoints: tuple[Endpoint, ...]  # endpoints[0] answers the health path
    health_path: str  # /readyz, /health or /healthz
    # etcd's /health needs a client certificate: (cert, key) host paths, else None
    health_client: tuple[str, str] | None = None
    label: str = ""  # metadata.labels.component, which crictl filters pod sandboxes by
    # spec.terminationGracePeriodSeconds (Kubernetes' default 30 s when absent): how long the
    # kubelet lets the old container run after its manifest leaves before it kills it
    grace_seconds: float = 30.0
    # the container's command and args: the command line of the process the pod runs
    argv: tuple[str, ...] = ()

    @property
    def serving(self) -> Endpoint:
        return self.endpoints[0]
