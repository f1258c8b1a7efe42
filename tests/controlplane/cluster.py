"""Start and stop etcd, kube-apiserver and (optionally) kube-controller-manager on loopback.

The API server runs with the flags of a kubeadm control plane where they matter to kucero:
``--authorization-mode=Node,RBAC``, ``--enable-admission-plugins=NodeRestriction``, client
certificates signed by the cluster CA, a service-account issuer and signing key (TokenRequest
works) and ``--service-cluster-ip-range``. The controller manager signs approved CSRs with the
cluster CA, as kubeadm's does.

Everything lives in one directory: ``pki/``, ``admin.kubeconfig``, ``logs/``, etcd's data,
``<name>.pid`` and ``controlplane.json`` (server, PIDs, binaries). ``stop`` removes nothing, and
``start`` on a stopped directory restarts with the same CA and etcd data. Ports are free
loopback ports; one taken between choosing and binding it is retried with new ports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.controlplane import binaries, certs, flags, processes

STATE = "controlplane.json"
# Start-up takes about 5 s on 2 idle cores, 20 s while Go compiles beside it; 90 s is broken.
READY_TIMEOUT_SECONDS = 90.0
# A health endpoint answers in milliseconds; a port that accepts and stays silent is not ours.
PROBE_SECONDS = 1.0
# A port can be taken between free_port() and the server binding it.
START_ATTEMPTS = 3


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
        name = certs.file_name(user, groups)
        crt, key = self.ca().issue(self.dir / "users", name, user, groups)
        path = self.dir / "users" / f"{name}.kubeconfig"
        flags.write_kubeconfig(path, self.server, self.pki / "ca.crt", user, crt=crt, key=key)
        return path

    def token_kubeconfig(self, name: str, token: str) -> Path:
        """A kubeconfig that authenticates with a bearer ``token`` (a service account's)."""
        path = self.dir / "users" / f"{name}.kubeconfig"
        flags.write_kubeconfig(path, self.server, self.pki / "ca.crt", name, token=token)
        return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(directory: Path, with_controller_manager: bool = False) -> ControlPlane:
    """Start a control plane in ``directory`` and wait until it is ready."""
    missing = binaries.missing()
    if missing:
        raise RuntimeError(
            f"missing {', '.join(missing)} in {binaries.directory()}: run `make testbin`"
        )
    directory = directory.resolve()
    if still := _running(directory):
        raise RuntimeError(f"{directory} already runs {', '.join(still)}: stop it first")
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start_once(directory, with_controller_manager)
        except PortTaken:
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    """A process could not bind the port chosen for it."""


def _start_once(directory: Path, with_controller_manager: bool) -> ControlPlane:
    pki = directory / "pki"
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    for name in binaries.NAMES:  # stale ones from an earlier start
        (directory / f"{name}.pid").unlink(missing_ok=True)
    ca = certs.CA.load(pki) if (pki / "ca.key").exists() else certs.CA.create(pki)
    if not (pki / "sa.key").exists():
        certs.service_account_keys(pki)
    server = f"https://127.0.0.1:{free_port()}"
    ca.issue(pki, "apiserver", "kube-apiserver", server=True, sans=flags.APISERVER_SANS)
    admin_crt, admin_key = ca.issue(pki, "admin", "kubernetes-admin", ("system:masters",))
    flags.write_kubeconfig(
        directory / "admin.kubeconfig",
        server,
        pki / "ca.crt",
        "kubernetes-admin",
        crt=admin_crt,
        key=admin_key,
    )
    etcd_url = f"http://127.0.0.1:{free_port()}"
    plane = ControlPlane(directory, server, {})
    try:
        _launch(plane, "etcd", flags.etcd(directory, etcd_url, f"http://127.0.0.1:{free_port()}"))
        # etcd first: an API server stopped while it waits for etcd takes GRACE_SECONDS to go
        _wait(plane, lambda: _get(f"{etcd_url}/health", None))
        _launch(plane, "kube-apiserver", flags.apiserver(directory, server, etcd_url))
        _wait(plane, lambda: _get(f"{server}/readyz", ssl_context(pki, admin_crt, admin_key)))
        if with_controller_manager:
            kubeconfig = _controller_manager_kubeconfig(plane, ca)
            port = free_port()
            args = flags.controller_manager(plane.dir, kubeconfig, port)
            _launch(plane, "kube-controller-manager", args)
            healthz = f"https://127.0.0.1:{port}/healthz"
            _wait(plane, lambda: _get(healthz, ssl_context(None)))
    except BaseException:
        stop(directory)
        raise
    return plane


def _controller_manager_kubeconfig(plane: ControlPlane, ca: certs.CA) -> Path:
    user = "system:kube-controller-manager"
    crt, key = ca.issue(plane.pki, "controller-manager", user)
    path = plane.dir / "controller-manager.kubeconfig"
    flags.write_kubeconfig(path, plane.server, plane.pki / "ca.crt", user, crt=crt, key=key)
    return path


def _launch(plane: ControlPlane, name: str, args: list[str]) -> None:
    plane.pids[name] = processes.spawn(
        [binaries.path(name), *args], plane.dir / "logs" / f"{name}.log"
    )
    (plane.dir / f"{name}.pid").write_text(f"{plane.pids[name]}\n")
    try:
        launched = json.loads((plane.dir / STATE).read_text()).get("args", {})
    except FileNotFoundError:
        launched = {}
    launched[name] = args
    state = {
        "server": plane.server,
        "pids": plane.pids,
        "binaries": binaries.directory(),
        "args": launched,  # for start_apiserver: the same port, etcd and flags again
    }
    (plane.dir / STATE).write_text(json.dumps(state, indent=1, default=str) + "\n")


def stop_apiserver(plane: ControlPlane) -> None:
    """Stop only kube-apiserver (etcd keeps running), as an upgrade or a crash would."""
    processes.terminate(plane.pids["kube-apiserver"], binaries.path("kube-apiserver"))


def start_apiserver(plane: ControlPlane) -> None:
    """Start kube-apiserver again on the same address with the same flags; wait for /readyz.
    Clients keep their URL, so this is what a restart of the API server looks like to them."""
    args = json.loads((plane.dir / STATE).read_text())["args"]["kube-apiserver"]
    _launch(plane, "kube-apiserver", args)
    context = ssl_context(plane.pki, plane.pki / "admin.crt", plane.pki / "admin.key")
    _wait(plane, lambda: _get(f"{plane.server}/readyz", context))


def restart_controller_manager(plane: ControlPlane) -> None:
    """Stop kube-controller-manager and start it again with the same flags (a static pod
    restart, as after a CA renewal); wait until it is healthy."""
    processes.terminate(
        plane.pids["kube-controller-manager"], binaries.path("kube-controller-manager")
    )
    args = json.loads((plane.dir / STATE).read_text())["args"]["kube-controller-manager"]
    _launch(plane, "kube-controller-manager", args)
    port = next(a.split("=", 1)[1] for a in args if a.startswith("--secure-port="))
    _wait(plane, lambda: _get(f"https://127.0.0.1:{port}/healthz", ssl_context(None)))


def etcd_url(plane: ControlPlane) -> str:
    """The client URL of the plane's etcd (for tests that compact it)."""
    args = json.loads((plane.dir / STATE).read_text())["args"]["kube-apiserver"]
    return next(a.split("=", 1)[1] for a in args if a.startswith("--etcd-servers="))


def load(directory: Path) -> ControlPlane:
    state = json.loads((directory / STATE).read_text())
    return ControlPlane(directory.resolve(), state["server"], state["pids"])


def stop(directory: Path) -> list[str]:
    """Stop the processes started in ``directory`` that still run (in reverse order of start);
    remove nothing. Returns their names. Idempotent."""
    try:
        state = json.loads((directory / STATE).read_text())
    except FileNotFoundError:
        return []
    bindir = Path(state["binaries"])
    pids: dict[str, int] = state["pids"]
    return [n for n, pid in reversed(pids.items()) if processes.terminate(pid, str(bindir / n))]


def _running(directory: Path) -> list[str]:
    try:
        state = json.loads((directory / STATE).read_text())
    except FileNotFoundError:
        return []
    bindir = Path(state["binaries"])
    return [n for n, pid in state["pids"].items() if processes.running(pid, str(bindir / n))]


def ssl_context(
    pki: Path | None, crt: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context trusting the cluster CA in ``pki``, or trusting anything (for the
    controller manager's self-signed health endpoint on loopback) when ``pki`` is None."""
    if pki is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if crt and key:
        context.load_cert_chain(str(crt), str(key))
    return context


def _get(url: str, context: ssl.SSLContext | None) -> bool:
    with urllib.request.urlopen(url, context=context, timeout=PROBE_SECONDS) as response:
        return bool(response.status == 200)


def _wait(plane: ControlPlane, ready: Callable[[], bool]) -> None:
    """Poll ``ready`` until it returns True; fail early with the log of a process that died."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last = ""
    while time.monotonic() < deadline:
        for name, pid in plane.pids.items():
            if not processes.running(pid, binaries.path(name)):
                log = (plane.dir / "logs" / f"{name}.log").read_text(errors="replace")
                tail = "\n".join(log.splitlines()[-30:])
                error = PortTaken if "address already in use" in tail else RuntimeError
                raise error(f"{name} exited during start-up; end of its log:\n{tail}")
        try:
            if ready():
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError) as e:
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {READY_TIMEOUT_SECONDS:.0f}s: {last}")


# The guard stops a control plane in about a second; a minute means it is stuck.
GUARD_TIMEOUT_SECONDS = 60


@contextlib.contextmanager
def guarded(directory: Path, with_controller_manager: bool = False) -> Iterator[ControlPlane]:
    """A control plane in ``directory`` for as long as the ``with`` lasts: stopped at the end, and
    by the guard process even if the test process is killed; etcd's preallocated WAL is dropped
    (pytest keeps the last three sessions' directories), the logs and pki stay for a
    post-mortem. Without the binaries the calling test skips, or fails when ``CI`` is set."""
    needed = ("etcd", "kube-apiserver")
    binaries.require(*needed, *(("kube-controller-manager",) if with_controller_manager else ()))
    guard = processes.guard(directory)
    try:
        yield start(directory, with_controller_manager=with_controller_manager)
    finally:
        assert guard.stdin is not None
        guard.stdin.close()
        guard.wait(GUARD_TIMEOUT_SECONDS)
        stop(directory)  # a no-op unless the guard failed
        shutil.rmtree(directory / "etcd", ignore_errors=True)
