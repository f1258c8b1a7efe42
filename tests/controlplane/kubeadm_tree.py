"""Node trees made by the real kubeadm, and kubeadm's own verdict on a tree.

``build`` runs ``kubeadm init phase certs all`` and ``kubeadm init phase kubeconfig all`` with an
explicit configuration, so no cluster and no internet are needed. ``check_expiration`` runs
``kubeadm certs check-expiration -o json`` *inside* the tree: kubeadm reads kubeconfigs only from
``/etc/kubernetes``, so it runs chrooted into the tree in a private mount namespace (the static
binary is bind-mounted in; the machine's own ``/etc/kubernetes`` is never touched). Needs root.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

from tests.controlplane import binaries

CONFIG = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: {ip}, bindPort: 6443}}
nodeRegistration: {{name: {node}, criSocket: unix:///var/run/containerd/containerd.sock}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
certificatesDir: {pki}
controlPlaneEndpoint: {ip}:6443
encryptionAlgorithm: {algorithm}
networking: {{serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}}
"""


def config(
    root: Path | None, node: str = "cp-1", ip: str = "10.0.0.11", algorithm: str = "RSA-2048"
) -> str:
    pki = (root / "etc/kubernetes/pki") if root else Path("/etc/kubernetes/pki")
    return CONFIG.format(
        ip=ip, node=node, version=binaries.K8S_VERSION, pki=pki, algorithm=algorithm
    )


def build(
    root: Path, node: str = "cp-1", ip: str = "10.0.0.11", algorithm: str = "RSA-2048"
) -> Path:
    """A control-plane node tree under ``root`` made by kubeadm itself; returns ``root``."""
    kubeadm = binaries.path("kubeadm")
    (root / "etc/kubernetes/pki").mkdir(parents=True, exist_ok=True)
    cfg = root.parent / f"{root.name}-kubeadm.yaml"
    cfg.write_text(config(root, node, ip, algorithm))
    _run([kubeadm, "init", "phase", "certs", "all", "--config", str(cfg)])
    _run(
        [
            kubeadm,
            "init",
            "phase",
            "kubeconfig",
            "all",
            "--config",
            str(cfg),
            "--kubeconfig-dir",
            str(root / "etc/kubernetes"),
        ]
    )
    cfg.unlink()
    return root


def check_expiration(root: Path) -> dict[str, Any]:
    """kubeadm's ``certs check-expiration -o json`` for the tree, as seen from inside it."""
    (root / "kubeadm-check.yaml").write_text(config(None))
    (root / "kubeadm").touch()
    script = " && ".join(
        [
            f"mount --bind {shlex.quote(binaries.path('kubeadm'))} {shlex.quote(str(root / 'kubeadm'))}",
            f"exec chroot {shlex.quote(str(root))} /kubeadm certs check-expiration -o json --config /kubeadm-check.yaml",
        ]
    )
    try:
        done = _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    finally:
        (root / "kubeadm").unlink()
        (root / "kubeadm-check.yaml").unlink()
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done
