"""A real etcd cluster of a few members on loopback, with a kubeadm stacked etcd's TLS: each
member serves a server and a peer certificate signed by the node tree's etcd CA and requires
client certificates on both ports (``--client-cert-auth``, ``--peer-client-cert-auth``).

For kucero's etcd quorum check (``reconciler.node.etcdquorum``): it asks the member a tree's
etcd manifest points at, with that tree's healthcheck client certificate, exactly as on a node.
Each member runs in its own directory with a guard process (``processes.guard``), so a killed
test session leaves no etcd behind.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import ssl
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from reconciler import fabricate
from reconciler.decide import pki
from tests.controlplane import binaries, cluster, processes

# Three members elect a leader in about a second on idle cores; a loaded CI machine is slower.
READY_SECONDS = 60.0


@dataclasses.dataclass
class Member:
    name: str
    dir: Path
    client_port: int
    peer_port: int
    pid: int = 0

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"


class EtcdCluster:
    """``size`` members whose certificates the etcd CA in ``pki`` (a tree's
    ``etc/kubernetes/pki/etcd``) signs; ``client`` is the (cert, key) to ask them with."""

    def __init__(self, directory: Path, pki_dir: Path, size: int = 3) -> None:
        binaries.require("etcd")
        self.dir, self.pki = directory, pki_dir
        self.client = (pki_dir / "healthcheck-client.crt", pki_dir / "healthcheck-client.key")
        self.members = [
            Member(f"m{i}", directory / f"m{i}", cluster.free_port(), cluster.free_port())
            for i in range(1, size + 1)
        ]
        self._guards: dict[str, object] = {}

    def __enter__(self) -> EtcdCluster:
        ca = self._ca()
        for member in self.members:
            self._certs(member, ca)
        try:
            for member in self.members:
                self._launch(member, "new")
            for member in self.members:
                self.wait_healthy(member)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for member in self.members:
            self.stop(member)
        for guard in self._guards.values():
            guard.stdin.close()  # type: ignore[attr-defined]
            guard.wait(30)  # type: ignore[attr-defined]

    def stop(self, member: Member) -> None:
        """SIGTERM (then SIGKILL) the member, if it runs."""
        if member.pid:
            processes.terminate(member.pid, binaries.path("etcd"))
            member.pid = 0

    def restart(self, member: Member) -> None:
        """Start a stopped member again with its data (it rejoins the cluster)."""
        self._launch(member, "existing")
        self.wait_healthy(member)

    def healthy(self, member: Member) -> bool:
        try:
            with urllib.request.urlopen(
                f"{member.client_url}/health", context=self._context(), timeout=2
            ) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError, ssl.SSLError):
            return False

    def wait_healthy(self, member: Member) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while not self.healthy(member):
            if not processes.running(member.pid, binaries.path("etcd")):
                log = (member.dir / "etcd.log").read_text(errors="replace")
                raise RuntimeError(f"etcd {member.name} exited:\n{log[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd {member.name} not healthy after {READY_SECONDS:.0f}s")
            time.sleep(0.2)

    # --- plumbing --------------------------------------------------------------------------

    def _ca(self) -> tuple[x509.Certificate, pki.PrivateKey]:
        cert = pki.load_cert((self.pki / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((self.pki / "ca.key").read_bytes(), None)
        return cert, key  # type: ignore[return-value]

    def _certs(self, member: Member, ca: tuple[x509.Certificate, pki.PrivateKey]) -> None:
        member.dir.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        sans = (member.name, "localhost", "127.0.0.1", "::1")
        for kind in ("server", "peer"):
            cert, key = fabricate.make_leaf(
                ca, member.name, (), fabricate.BOTH, sans, now, dt.timedelta(days=30), "ecdsa"
            )
            (member.dir / f"{kind}.crt").write_bytes(pki.cert_pem(cert))
            (member.dir / f"{kind}.key").write_bytes(pki.key_pem(key))
            (member.dir / f"{kind}.key").chmod(0o600)

    def _launch(self, member: Member, state: str) -> None:
        d, ca = member.dir, self.pki / "ca.crt"
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        argv = [
            binaries.path("etcd"),
            f"--name={member.name}",
            f"--data-dir={d / 'data'}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-state={state}",
            "--initial-cluster-token=kucero-test",
            f"--cert-file={d / 'server.crt'}",
            f"--key-file={d / 'server.key'}",
            "--client-cert-auth=true",
            f"--trusted-ca-file={ca}",
            f"--peer-cert-file={d / 'peer.crt'}",
            f"--peer-key-file={d / 'peer.key'}",
            "--peer-client-cert-auth=true",
            f"--peer-trusted-ca-file={ca}",
            "--unsafe-no-fsync=true",  # test data: durability buys nothing
            "--log-level=warn",
        ]
        member.pid = processes.spawn(argv, d / "etcd.log")
        # the guard stops it however the session ends (cluster.stop reads this file)
        state_file = {
            "server": "",
            "pids": {"etcd": member.pid},
            "binaries": str(binaries.directory()),
        }
        (d / cluster.STATE).write_text(json.dumps(state_file))
        if member.name not in self._guards:
            self._guards[member.name] = processes.guard(d)

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.client[0]), str(self.client[1]))
        return context
