"""The command lines of the test control plane, and the kubeconfigs it hands out.

Where a flag matters to what kucero does, it is the one a kubeadm control plane runs with
(compare ``kubeadm init phase control-plane`` manifests): Node and RBAC authorization,
NodeRestriction, client certificates from the cluster CA, a service-account issuer, a service
CIDR, bootstrap tokens, and a controller manager that signs with the cluster CA. Everything else
is what loopback and a throw-away etcd need.
"""

from __future__ import annotations

from pathlib import Path

import yaml

SERVICE_CIDR = "10.96.0.0/12"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
APISERVER_SANS = (
    "127.0.0.1",
    "localhost",
    "10.96.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def etcd(directory: Path, client_url: str, peer_url: str) -> list[str]:
    return [
        "--name=test",
        f"--data-dir={directory / 'etcd'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=test={peer_url}",
        "--unsafe-no-fsync=true",  # test data: durability buys nothing, fsync costs seconds
        "--log-level=warn",
    ]


def apiserver(directory: Path, server: str, etcd_url: str) -> list[str]:
    pki = directory / "pki"
    return [
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={server.rsplit(':', 1)[1]}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=Node,RBAC",
        # kubeadm's list. ValidatingAdmissionPolicy (kucero's *-writes.yaml) is on by default
        # (GA since 1.30), and so is the node name in Pod-bound tokens
        # (ServiceAccountTokenPodNodeInfo, locked on since 1.32): nothing to add for them.
        "--enable-admission-plugins=NodeRestriction",
        "--enable-bootstrap-token-auth=true",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allow-privileged=true",
        # A loopback advertise address cannot back the kubernetes Service's endpoints.
        "--endpoint-reconciler-type=none",
        f"--cert-dir={directory / 'apiserver-certs'}",
    ]


def controller_manager(directory: Path, kubeconfig: Path, port: int) -> list[str]:
    pki = directory / "pki"
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        "--use-service-account-credentials=true",
        "--controllers=*,bootstrapsigner,tokencleaner",  # kubeadm's list
        "--leader-elect=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--cert-dir={directory / 'controller-manager-certs'}",
    ]


def write_kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    user: str,
    crt: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
) -> None:
    """A kubeconfig for ``user`` with a client certificate (``crt``/``key``) or a ``token``."""
    credentials: dict[str, str] = {}
    if crt and key:
        credentials = {"client-certificate": str(crt), "client-key": str(key)}
    if token:
        credentials["token"] = token
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
