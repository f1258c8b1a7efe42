"""Start and stop etcd, kube-apiserver and (optionally) kube-controller-manager on loopback.

The API server runs with the flags of a kubeadm control plane where they matter to kucero:
``--authorization-mode=Node,RBAC``, ``--enable-admission-plugins=NodeRestriction``, client
certificates signed by the cluster CA, a service-account issuer and signing key (TokenRequest
works) and ``--service-cluster-ip-range``. Everything lives in one directory: ``pki/``,
``admin.kubeconfig``, ``logs/``, etcd's data and ``controlplane.json`` (ports and PIDs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.controlplane import binaries, certs

STATE = "controlplane.json"
# Start-up on 2 cores takes a few seconds; a minute means something is wrong.
READY_TIMEOUT_SECONDS = 90.0
SERVICE_CIDR = "10.96.0.0/12"


@dataclasses.dataclass(frozen=True)
class ControlPlane:
    dir: Path
    server: str
    pids: dict[str, int]

    @property
    def admin_kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    def ca(self) -> certs.CA:
        return certs.CA.load(self.pki)

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig with a client certificate for ``user`` in ``groups``."""
        safe = user.replace(":", "_")
        crt, key = self.ca().issue(self.dir / "users", safe, user, groups)
        path = self.dir / "users" / f"{safe}.kubeconfig"
        write_kubeconfig(path, self.server, self.pki / "ca.crt", crt, key, user)
        return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_kubeconfig(path: Path, server: str, ca: Path, crt: Path, key: Path, user: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)


def start(directory: Path, with_controller_manager: bool = False) -> ControlPlane:
    missing = binaries.missing()
    if missing:
        raise RuntimeError(
            f"missing {', '.join(missing)} in {binaries.directory()}: run `make testbin`"
        )
    directory = directory.resolve()
    pki = directory / "pki"
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ca = certs.CA.create(pki)
    certs.service_account_keys(pki)
    api_port, etcd_port, peer_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    ca.issue(
        pki,
        "apiserver",
        "kube-apiserver",
        server=True,
        sans=(
            "127.0.0.1",
            "localhost",
            "10.96.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
    )
    admin_crt, admin_key = ca.issue(pki, "admin", "kubernetes-admin", ("system:masters",))
    write_kubeconfig(
        directory / "admin.kubeconfig",
        server,
        pki / "ca.crt",
        admin_crt,
        admin_key,
        "kubernetes-admin",
    )

    pids: dict[str, int] = {}
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    pids["etcd"] = _spawn(
        [
            binaries.path("etcd"),
            "--name=test",
            f"--data-dir={directory / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--unsafe-no-fsync=true",  # test data: durability buys nothing, fsync costs seconds
            "--log-level=warn",
        ],
        logs / "etcd.log",
    )
    pids["kube-apiserver"] = _spawn(
        [
            binaries.path("kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # A loopback advertise address cannot back the kubernetes Service endpoints.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={directory / 'apiserver-certs'}",
        ],
        logs / "kube-apiserver.log",
    )
    plane = ControlPlane(directory, server, pids)
    _save(plane)
    try:
        _wait_ready(plane, admin_crt, admin_key)
        if with_controller_manager:
            pids["kube-controller-manager"] = _start_controller_manager(plane, ca)
            _save(plane)
    except BaseException:
        stop(directory)
        raise
    return plane


def _start_controller_manager(plane: ControlPlane, ca: certs.CA) -> int:
    pki = plane.pki
    crt, key = ca.issue(pki, "controller-manager", "system:kube-controller-manager")
    kubeconfig = plane.dir / "controller-manager.kubeconfig"
    write_kubeconfig(
        kubeconfig, plane.server, pki / "ca.crt", crt, key, "system:kube-controller-manager"
    )
    return _spawn(
        [
            binaries.path("kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cert-dir={plane.dir / 'controller-manager-certs'}",
        ],
        plane.dir / "logs" / "kube-controller-manager.log",
    )


def load(directory: Path) -> ControlPlane:
    state = json.loads((directory / STATE).read_text())
    return ControlPlane(directory.resolve(), state["server"], state["pids"])


def stop(directory: Path) -> list[str]:
    """Stop the processes started in ``directory``; remove nothing else. Returns their names."""
    try:
        plane = load(directory)
    except FileNotFoundError:
        return []
    stopped = []
    for name, pid in reversed(list(plane.pids.items())):
        if _terminate(pid):
            stopped.append(name)
    (directory / STATE).unlink(missing_ok=True)
    return stopped


def _spawn(argv: list[str], log: Path) -> int:
    """Start a detached process (own session, output to ``log``) and return its PID.

    posix_spawn rather than Popen: the processes outlive this call (``start`` by hand exits
    while they run), and a collected Popen of a running child warns.
    """
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(fd)


def _terminate(pid: int) -> bool:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (started by another process): poll
            waited = 0
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        if waited == pid:
            return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited != pid
    except ChildProcessError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _wait_ready(plane: ControlPlane, crt: Path, key: Path) -> None:
    context = ssl.create_default_context(cafile=str(plane.pki / "ca.crt"))
    context.load_cert_chain(str(crt), str(key))
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last = ""
    while time.monotonic() < deadline:
        for name, pid in plane.pids.items():
            if not _alive(pid):
                tail = (plane.dir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited during start-up; end of its log:\n{tail}")
        try:
            with urllib.request.urlopen(
                f"{plane.server}/readyz", context=context, timeout=5
            ) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError) as e:
            last = str(e)
        time.sleep(0.25)
    raise RuntimeError(f"kube-apiserver not ready after {READY_TIMEOUT_SECONDS:.0f}s: {last}")


def _save(plane: ControlPlane) -> None:
    (plane.dir / STATE).write_text(
        json.dumps({"server": plane.server, "pids": plane.pids}, indent=1)
    )
