"""Worker nodes made by ``kubeadm join``, for the version matrix: the real join of one minor's
kubeadm against a live test control plane, and that minor's kubelet bootstrapping its client
certificate.

``kubeadm join`` cannot work offline: discovery reads the ``cluster-info`` ConfigMap (signed by
kube-controller-manager's bootstrapsigner for the token), ``kubelet-start`` reads the cluster's
``kubeadm-config`` and ``kubelet-config`` ConfigMaps and checks the Node name, and the join ends
when the kubelet has written ``kubelet.conf`` from a CSR the controller manager approved and
signed. So:

1. ``prepare`` plays ``kubeadm init``'s cluster-side phases on the test control plane, with the
   same minor's kubeadm: ``upload-config kubeadm``, ``upload-config kubelet`` (the kubelet's
   ``healthzPort: 0``: kubeadm's wait for the kubelet's health then skips, as it documents,
   since no kubelet runs to answer), and ``bootstrap-token`` (a fresh token, the RBAC for
   bootstrapping nodes and the ``cluster-info`` ConfigMap).
2. ``join`` runs ``kubeadm --rootfs <tree> join --skip-phases preflight`` (preflight checks
   the machine: swap, ports, the container runtime) with token discovery and the CA's pin,
   while ``kubeletbootstrap`` does what the kubelet's systemd unit would: start, find
   ``bootstrap-kubelet.conf``, run the kubelet's own TLS bootstrap.

Every kubeadm command runs chrooted (``--rootfs``) into the tree or a scratch root holding a
flattened admin kubeconfig, so nothing of the machine is read or written.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
import subprocess
import tempfile
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.controlplane import cluster, matrix

CLUSTER = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: {token}
  ttl: 1h
  usages: [signing, authentication]
  groups: [system:bootstrappers:kubeadm:default-node-token]
nodeRegistration: {{name: cp-1, criSocket: {cri}}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
certificatesDir: /etc/kubernetes/pki
controlPlaneEndpoint: {endpoint}
networking: {{serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}}
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
healthzPort: 0
"""
JOIN = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: {endpoint}
    token: {token}
    caCertHashes: [{pin}]
nodeRegistration: {{name: {node}, criSocket: {cri}}}
timeouts: {{discovery: 1m, tlsBootstrap: 1m, kubernetesAPICall: 1m}}
"""
PHASES = (("upload-config", "kubeadm"), ("upload-config", "kubelet"), ("bootstrap-token",))


def token() -> str:
    """A bootstrap token: ``[a-z0-9]{6}.[a-z0-9]{16}``."""
    alphabet = string.ascii_lowercase + string.digits
    part = lambda n: "".join(secrets.choice(alphabet) for _ in range(n))  # noqa: E731
    return f"{part(6)}.{part(16)}"


def ca_pin(ca_crt: Path) -> str:
    """kubeadm's ``--discovery-token-ca-cert-hash``: SHA-256 of the CA's SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def flat_admin_kubeconfig(plane: cluster.ControlPlane) -> str:
    """The plane's admin kubeconfig with its files embedded, for a chrooted kubeadm."""
    doc = yaml.safe_load(plane.admin_kubeconfig.read_text())
    for entry, fields in (("clusters", ("certificate-authority",)),
                          ("users", ("client-certificate", "client-key"))):  # fmt: skip
        for item in doc[entry]:
            body = item["cluster" if entry == "clusters" else "user"]
            for field in fields:
                data = Path(body.pop(field)).read_bytes()
                body[f"{field}-data"] = base64.b64encode(data).decode()
    return yaml.safe_dump(doc)


def prepare(plane: cluster.ControlPlane, v: matrix.Version) -> str:
    """``kubeadm init``'s cluster-side phases by ``v``'s kubeadm on ``plane``; returns the new
    bootstrap token."""
    made = token()
    endpoint = plane.server.removeprefix("https://")
    config = CLUSTER.format(token=made, cri=matrix.CRI_SOCKET, version=v.version, endpoint=endpoint)
    with tempfile.TemporaryDirectory(prefix="kucero-join-") as scratch:
        root = Path(scratch)
        (root / "admin.conf").write_text(flat_admin_kubeconfig(plane))
        (root / "admin.conf").chmod(0o600)
        (root / "kubeadm.yaml").write_text(config)
        for phase in PHASES:
            matrix.run([v.path("kubeadm"), "--rootfs", scratch, "init", "phase", *phase,
                        "--config", "/kubeadm.yaml", "--kubeconfig", "/admin.conf"])  # fmt: skip
    return made


def join(root: Path, plane: cluster.ControlPlane, v: matrix.Version, node: str) -> Path:
    """A worker node under ``root`` made by ``v``'s ``kubeadm join`` to ``plane`` and ``v``'s
    kubelet TLS bootstrap; returns ``root``. ``plane`` needs its controller manager (it signs
    ``cluster-info`` and approves and signs the kubelet's CSR)."""
    made = prepare(plane, v)
    root.mkdir(parents=True, exist_ok=True)
    config = root / "join.yaml"
    config.write_text(
        JOIN.format(
            endpoint=plane.server.removeprefix("https://"),
            token=made,
            pin=ca_pin(plane.pki / "ca.crt"),
            node=node,
            cri=matrix.CRI_SOCKET,
        )
    )
    log = root.parent / f"{root.name}-kubelet.log"  # a file: a pipe nobody reads can fill
    with log.open("w") as out:
        kubelet = subprocess.Popen(
            [v.path("kubeletbootstrap"), "--root", str(root), "--node-name", node,
             "--timeout", "90s"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            matrix.run([v.path("kubeadm"), "--rootfs", str(root), "join", "--config",
                        "/join.yaml", "--skip-phases", "preflight"])  # fmt: skip
            if kubelet.wait(timeout=matrix.TIMEOUT_SECONDS) != 0:
                raise RuntimeError(f"kubeletbootstrap: exit {kubelet.returncode}")
        except RuntimeError as e:
            raise RuntimeError(f"{e}\nthe kubelet ({log}):\n{log.read_text()}") from e
        finally:
            if kubelet.poll() is None:
                kubelet.kill()
                kubelet.wait()
            config.unlink()
    return root
