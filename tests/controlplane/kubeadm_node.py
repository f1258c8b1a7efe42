"""A whole control-plane node tree written by the real kubeadm: certificates, kubeconfigs,
static pod manifests (``kubeadm init phase control-plane all`` and ``etcd local``) and the
kubelet's ``config.yaml`` (``kubelet-start``), with ports of our choosing so that several trees
can run side by side on one machine.

kubeadm writes manifests and the kubelet configuration only to fixed paths
(``/etc/kubernetes/manifests``, ``/var/lib/kubelet``), so every phase runs with
``kubeadm --rootfs <tree>``, which chroots into the tree first: the manifests then name host
paths (``/etc/kubernetes/pki/apiserver.crt``), as on a real node. Needs root (chroot).
"""

from __future__ import annotations

import shlex
import socket
import subprocess
from pathlib import Path

from tests.controlplane import binaries

# The component names and etcd's peer port, in the order kucero restarts them.
PORT_NAMES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "etcd-peer")
# Five kubeadm phases with ECDSA keys take about 6 s; a minute is a hang.
TIMEOUT_SECONDS = 60

CONFIG = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: {ip}, bindPort: {p[kube-apiserver]}}}
nodeRegistration: {{name: {node}, criSocket: unix:///var/run/containerd/containerd.sock}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
certificatesDir: /etc/kubernetes/pki
controlPlaneEndpoint: {ip}:{p[kube-apiserver]}
encryptionAlgorithm: {algorithm}
networking: {{serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}}
controllerManager:
  extraArgs: [{{name: secure-port, value: "{p[kube-controller-manager]}"}}]
scheduler:
  extraArgs: [{{name: secure-port, value: "{p[kube-scheduler]}"}}]
etcd:
  local:
    extraArgs:
    - {{name: listen-client-urls, value: "https://127.0.0.1:{p[etcd]}"}}
    - {{name: advertise-client-urls, value: "https://127.0.0.1:{p[etcd]}"}}
    - {{name: listen-peer-urls, value: "https://127.0.0.1:{p[etcd-peer]}"}}
    - {{name: initial-advertise-peer-urls, value: "https://127.0.0.1:{p[etcd-peer]}"}}
    - {{name: initial-cluster, value: "{node}=https://127.0.0.1:{p[etcd-peer]}"}}
"""
PHASES = (
    ("certs", "all"),
    ("kubeconfig", "all"),
    ("control-plane", "all"),
    ("etcd", "local"),
    ("kubelet-start",),
)


def free_ports(n: int = len(PORT_NAMES)) -> dict[str, int]:
    """Loopback ports free right now, one per name of ``PORT_NAMES``."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return {name: s.getsockname()[1] for name, s in zip(PORT_NAMES, sockets, strict=True)}
    finally:
        for s in sockets:
            s.close()


def build(
    root: Path,
    ports: dict[str, int],
    node: str = "cp-1",
    ip: str = "10.0.0.11",
    algorithm: str = "ECDSA-P256",
) -> Path:
    """A stacked-etcd control-plane node under ``root`` made by kubeadm; returns ``root``."""
    kubeadm = binaries.path("kubeadm")
    root.mkdir(parents=True, exist_ok=True)
    config = root / "kubeadm.yaml"
    config.write_text(
        CONFIG.format(ip=ip, node=node, p=ports, version=binaries.K8S_VERSION, algorithm=algorithm)
    )
    try:
        for phase in PHASES:
            argv = [kubeadm, "--rootfs", str(root), "init", "phase", *phase]
            argv += ["--config", "/kubeadm.yaml"]
            done = subprocess.run(
                argv, capture_output=True, text=True, check=False, timeout=TIMEOUT_SECONDS
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"{shlex.join(argv)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
                )
    finally:
        config.unlink()
    return root
