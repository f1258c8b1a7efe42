"""Node trees made by the real kubeadm, and kubeadm's own verdict on a tree.

``build`` runs ``kubeadm init phase certs all`` and ``kubeadm init phase kubeconfig all`` with an
explicit configuration (so no cluster and no internet are needed) into ``<root>/etc/kubernetes``.

``check_expiration`` runs ``kubeadm certs check-expiration -o json`` as if the tree were the
machine. kubeadm reads kubeconfigs only from ``/etc/kubernetes`` and, without ``--config``, tries
to fetch its configuration from the cluster in ``admin.conf``. So it runs in a private mount
namespace whose scratch root (a tmpfs) holds the configuration file and the tree's
``etc/kubernetes`` bind-mounted read-only on ``/etc/kubernetes``, with ``kubeadm --rootfs`` on
that root. The tree is never written to, the machine's own ``/etc/kubernetes`` (which need not
exist) is never touched, and nothing is left behind however kubeadm ends. Needs root.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
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
{validity}"""
# Making the eleven certificates with RSA-2048 keys takes about 2 s; 2 minutes is a hang.
TIMEOUT_SECONDS = 120

# Runs in the private mount namespace: $1 scratch dir, $2 tree's etc/kubernetes, $3 kubeadm.
_CHECK = """\
set -e
mount -t tmpfs -o mode=0700 kucero-kubeadm "$1"
mkdir -p "$1/etc/kubernetes"
mount --bind "$2" "$1/etc/kubernetes"
mount -o remount,bind,ro "$1/etc/kubernetes"
cat > "$1/kubeadm.yaml"
exec "$3" --rootfs "$1" certs check-expiration --config /kubeadm.yaml -o json
"""


def config(
    pki: Path | str = "/etc/kubernetes/pki",
    node: str = "cp-1",
    ip: str = "10.0.0.11",
    algorithm: str = "RSA-2048",
    ca_validity: str | None = None,
    cert_validity: str | None = None,
) -> str:
    """A kubeadm InitConfiguration + ClusterConfiguration for a control-plane node.

    ``ca_validity``/``cert_validity``: kubeadm v1beta4's ``caCertificateValidityPeriod`` and
    ``certificateValidityPeriod`` (Go durations; kubeadm's defaults, 10 years and 1 year, when
    None), for trees whose CA ends soon."""
    validity = "".join(
        f"{field}: {value}\n"
        for field, value in (
            ("caCertificateValidityPeriod", ca_validity),
            ("certificateValidityPeriod", cert_validity),
        )
        if value is not None
    )
    return CONFIG.format(
        ip=ip,
        node=node,
        version=binaries.K8S_VERSION,
        pki=pki,
        algorithm=algorithm,
        validity=validity,
    )


def build(
    root: Path,
    node: str = "cp-1",
    ip: str = "10.0.0.11",
    algorithm: str = "RSA-2048",
    ca_validity: str | None = None,
    cert_validity: str | None = None,
) -> Path:
    """A control-plane node tree under ``root`` made by kubeadm itself; returns ``root``.

    ``algorithm`` is kubeadm's ``encryptionAlgorithm``: RSA-2048, RSA-3072, RSA-4096,
    ECDSA-P256 or ECDSA-P384. ``ca_validity``, ``cert_validity``: see ``config``.
    """
    kubeadm = binaries.path("kubeadm")
    etc = root / "etc/kubernetes"
    (etc / "pki").mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="kubeadm-") as cfg:
        cfg.write(config(etc / "pki", node, ip, algorithm, ca_validity, cert_validity))
        cfg.flush()
        _run([kubeadm, "init", "phase", "certs", "all", "--config", cfg.name])
        kubeconfigs = ["kubeconfig", "all", "--config", cfg.name, "--kubeconfig-dir", str(etc)]
        _run([kubeadm, "init", "phase", *kubeconfigs])
    return root


def check_expiration(
    root: Path, kubeadm: str | None = None, kubeadm_config: str | None = None
) -> dict[str, Any]:
    """kubeadm's ``certs check-expiration -o json`` for the node tree at ``root``, parsed.

    ``kubeadm`` is the binary (default: the test binaries' kubeadm) and ``kubeadm_config`` the
    configuration it is given (default: ``config()``, stacked etcd); the version matrix passes
    another minor's kubeadm, or an external-etcd configuration (kubeadm then leaves the etcd
    certificates out of its report).

    The result has ``certificates`` and ``certificateAuthorities``: lists of objects with
    ``name``, ``expirationDate`` (RFC 3339), ``residualTime`` (seconds), ``externallyManaged``,
    ``missing`` and, for leaves, ``caName``. Raises RuntimeError with kubeadm's output when
    kubeadm fails (it does on a file it cannot parse).
    """
    etc = (root / "etc/kubernetes").resolve(strict=True)
    with tempfile.TemporaryDirectory(prefix="kucero-kubeadm-") as scratch:
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _CHECK, "sh"]
        kubeadm = kubeadm or binaries.path("kubeadm")
        done = _run([*argv, scratch, str(etc), kubeadm], stdin=kubeadm_config or config())
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, check=False, timeout=TIMEOUT_SECONDS
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done
