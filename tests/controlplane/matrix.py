"""The kubeadm version matrix: the Kubernetes minors kucero is tested against, and node trees
that each minor's own kubeadm makes, as ``kubeadm init`` and ``kubeadm join`` would.

Each minor is a Go module (``versions/<minor>/go.mod``; the newest is ``k8s/go.mod``) whose
``kubeadm`` and ``kubeletbootstrap`` (the kubelet's TLS bootstrap and its start-up reading of
its files, ``k8s/kubeletbootstrap``) ``matrix.sh`` builds into ``<cache>/matrix-<version>/``.

Every kubeadm command runs with ``kubeadm --rootfs <tree>``, which chroots into the tree first:
the files land where kubeadm puts them on a machine (``/etc/kubernetes``, ``/var/lib/kubelet``)
and name host paths, and nothing outside the tree is written. Needs root (chroot).

All four minors accept ``kubeadm.k8s.io/v1beta4`` (v1.34 to v1.36 also read the deprecated
v1beta3; v1.37 rejects it), whose ``ClusterConfiguration.encryptionAlgorithm`` picks RSA or
ECDSA keys, so one configuration serves them all.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.controlplane import binaries, certs

HERE = Path(__file__).resolve().parent
BINARIES = ("kubeadm", "kubeletbootstrap")
# Five kubeadm phases with RSA keys take a few seconds; a join waits for a CSR to be signed.
TIMEOUT_SECONDS = 120
CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"

# kubeadm's names per etcd topology: with external etcd it neither makes nor reports the etcd
# certificates (its CA key stays with the etcd cluster).
KUBECONFIGS = frozenset(
    {"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf"}
)
STACKED_LEAVES = KUBECONFIGS | {
    "apiserver",
    "apiserver-kubelet-client",
    "apiserver-etcd-client",
    "front-proxy-client",
    "etcd-server",
    "etcd-peer",
    "etcd-healthcheck-client",
}
EXTERNAL_LEAVES = KUBECONFIGS | {"apiserver", "apiserver-kubelet-client", "front-proxy-client"}
STACKED_CAS = frozenset({"ca", "etcd-ca", "front-proxy-ca"})
EXTERNAL_CAS = frozenset({"ca", "front-proxy-ca"})

# Where kubeadm's documentation for external etcd puts the files copied from an etcd node.
EXTERNAL_ETCD_FILES = {
    "caFile": "/etc/kubernetes/pki/etcd/ca.crt",
    "certFile": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
    "keyFile": "/etc/kubernetes/pki/apiserver-etcd-client.key",
}

INIT = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: {ip}, bindPort: 6443}}
nodeRegistration: {{name: {node}, criSocket: {cri}}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
certificatesDir: /etc/kubernetes/pki
controlPlaneEndpoint: {ip}:6443
encryptionAlgorithm: {algorithm}
networking: {{serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}}
"""
EXTERNAL_ETCD = """\
etcd:
  external:
    endpoints: [https://10.0.0.50:2379]
    caFile: {caFile}
    certFile: {certFile}
    keyFile: {keyFile}
"""


@dataclasses.dataclass(frozen=True)
class Version:
    """One minor of the matrix: its pinned release and where its binaries are built."""

    version: str  # v1.34.4
    module: Path  # the directory of its go.mod

    @property
    def minor(self) -> str:
        return self.version.rsplit(".", 1)[0]

    def directory(self) -> Path:
        return binaries.cache() / f"matrix-{self.version}"

    def path(self, name: str) -> str:
        return str(self.directory() / name)

    def missing(self) -> list[str]:
        return [n for n in BINARIES if not os.access(self.directory() / n, os.X_OK)]

    def require(self) -> None:
        """Skip (or with ``CI`` set, fail) when this minor's binaries are not built."""
        absent = self.missing()
        if absent:
            binaries.gate(
                f"{', '.join(absent)} {self.version} not built in {self.directory()}: "
                "run `make matrix` (needs Go)"
            )


def _pinned(go_mod: Path) -> str:
    """The k8s.io/kubernetes version ``go_mod`` requires, alone or in a require block."""
    match = re.search(r"^(?:require\s+|\s+)k8s\.io/kubernetes (v\S+)", go_mod.read_text(), re.M)
    if not match:
        raise RuntimeError(f"{go_mod}: requires no k8s.io/kubernetes")
    return match.group(1)


def _minor_number(v: Version) -> int:
    return int(v.minor.split(".")[1])


VERSIONS = tuple(
    sorted(
        (
            Version(_pinned(mod), mod.parent)
            for mod in [*HERE.glob("versions/*/go.mod"), HERE / "k8s" / "go.mod"]
        ),
        key=_minor_number,
    )
)


# The test binaries' own minor (k8s/go.mod), the newest of the matrix.
TESTBIN = next(v for v in VERSIONS if v.module == HERE / "k8s")


def init_config(
    v: Version,
    algorithm: str,
    etcd: str = "stacked",
    node: str = "cp-1",
    ip: str = "10.0.0.11",
) -> str:
    """The InitConfiguration + ClusterConfiguration ``init`` gives kubeadm (and
    ``check-expiration`` needs, to know the etcd topology). ``etcd``: stacked or external."""
    text = INIT.format(ip=ip, node=node, cri=CRI_SOCKET, version=v.version, algorithm=algorithm)
    if etcd == "external":
        text += EXTERNAL_ETCD.format(**EXTERNAL_ETCD_FILES)
    elif etcd != "stacked":
        raise ValueError(f"etcd must be stacked or external, not {etcd!r}")
    return text


def init(
    root: Path,
    v: Version,
    algorithm: str,
    etcd: str = "stacked",
    node: str = "cp-1",
    ip: str = "10.0.0.11",
) -> Path:
    """A control-plane node under ``root`` made by ``v``'s kubeadm: ``kubeadm init``'s phases
    that write files (certs, kubeconfigs, static pod manifests, the local etcd's manifest when
    stacked, the kubelet's configuration). With external etcd, the files an operator copies from
    the etcd cluster (its CA certificate, without its key, and the API server's client pair) are
    there first, as kubeadm's documentation asks. Returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    if etcd == "external":
        external_etcd_files(root)
    phases = [("certs", "all"), ("kubeconfig", "all"), ("control-plane", "all")]
    phases += [("etcd", "local")] if etcd == "stacked" else []
    phases += [("kubelet-start",)]
    config = root / "kubeadm.yaml"
    config.write_text(init_config(v, algorithm, etcd, node, ip))
    try:
        for phase in phases:
            run([v.path("kubeadm"), "--rootfs", str(root), "init", "phase", *phase,
                 "--config", "/kubeadm.yaml"])  # fmt: skip
    finally:
        config.unlink()
    return root


def external_etcd_files(root: Path) -> None:
    """An external etcd cluster's CA certificate and a client pair it issued to the API server,
    at ``EXTERNAL_ETCD_FILES``' paths under ``root``; the CA's key stays with "etcd" (a
    directory deleted here)."""
    with tempfile.TemporaryDirectory(prefix="external-etcd-") as etcd:
        ca = certs.CA.create(Path(etcd))
        crt, key = ca.issue(Path(etcd), "client", "kube-apiserver-etcd-client")
        for field, source in (
            ("caFile", Path(etcd) / "ca.crt"),
            ("certFile", crt),
            ("keyFile", key),
        ):
            path = root / EXTERNAL_ETCD_FILES[field].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path)  # with its mode: 0600 for the key


def kubelet_check(root: Path, v: Version, node: str, whoami: bool = False) -> str:
    """``v``'s kubelet reading the tree at start-up (``kubeletbootstrap --check``): its
    kubeconfig valid and unexpired, its client certificate store, ``config.yaml`` through its
    loader and validation; with ``whoami``, one request with ``kubelet.conf`` that must
    authenticate as ``system:node:<node>``. Returns its JSON line; raises with its words."""
    argv = [v.path("kubeletbootstrap"), "--root", str(root), "--node-name", node, "--check"]
    return run([*argv, *(["--whoami"] if whoami else [])]).stdout


def run(argv: list[str], timeout: float = TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; raise RuntimeError with its output when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done
