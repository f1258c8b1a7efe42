"""What a user would look at on the node, read the way they would read it: the real
``kubeadm certs check-expiration``, ``crictl``'s containers, the certificate a port serves,
``kubectl``'s objects, the kucero process's peak memory."""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.e2e import node

PKI = Path("/etc/kubernetes/pki")


def kubectl_json(bin_dir: Path, *args: str) -> Any:
    return json.loads(node.kubectl(bin_dir, *args, "-o", "json", timeout=30))


def wait_for(what: str, ok: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = ok()
        except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(poll)
    raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")


def check_expiration(bin_dir: Path) -> dict[str, int]:
    """``kubeadm certs check-expiration``: each certificate's and kubeconfig's residual days."""
    out = subprocess.run(
        [str(bin_dir / "kubeadm"), "certs", "check-expiration"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    days = {}
    section = False
    for line in out.splitlines():
        if line.startswith("CERTIFICATE AUTHORITY"):
            break
        if line.startswith("CERTIFICATE "):
            section = True
            continue
        if section and line.strip():
            name = line.split()[0]
            m = re.search(r"\s(?:(\d+)y)?(?:(\d+)d)?(?:(\d+)h)?\s+\S+\s+(?:yes|no)\s*$", line)
            assert m, f"cannot read kubeadm's line {line!r}"
            years, d, _h = (int(g) if g else 0 for g in m.groups())
            days[name] = years * 365 + d
    return days


def containers(bin_dir: Path) -> list[dict[str, Any]]:
    """Every container crictl knows (running or exited), with name, id, state, createdAt."""
    out = subprocess.run(
        [str(bin_dir / "crictl"), "-r", f"unix://{node.SOCKET}", "ps", "-a", "-o", "json"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [
        {
            "name": c["metadata"]["name"],
            "id": c["id"],
            "state": c["state"],
            "created": int(c["createdAt"]) / 1e9,
            "attempt": c["metadata"].get("attempt", 0),
        }
        for c in json.loads(out)["containers"]
    ]


def served(port: int, client: tuple[Path, Path] | None = None, host: str = "127.0.0.1") -> bytes:
    """The DER certificate the TLS server on ``port`` presents."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if client:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    with (
        socket.create_connection((host, port), timeout=5) as sock,
        ctx.wrap_socket(sock) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der, f"{host}:{port} presented no certificate"
    return der


def on_disk(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )


def cert(der_or_pem: bytes) -> x509.Certificate:
    if der_or_pem.lstrip().startswith(b"-----"):
        return x509.load_pem_x509_certificate(der_or_pem)
    return x509.load_der_x509_certificate(der_or_pem)


def kucero_pids() -> list[int]:
    """The ``kucero run`` processes of the DaemonSet's pods on this node."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cgroup = (entry / "cgroup").read_bytes()
        except OSError:
            continue
        # `/opt/kucero/bin/python /opt/kucero/bin/kucero run ...` (a console script)
        words = [w.rsplit(b"/", 1)[-1] for w in argv]
        if b"kubepods" in cgroup and any(
            a == b"kucero" and b == b"run" for a, b in itertools.pairwise(words)
        ):
            pids.append(int(entry.name))
    return pids


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmHWM for pid {pid}")


def node_annotation(bin_dir: Path, key: str) -> dict[str, Any]:
    obj = kubectl_json(bin_dir, "get", "node", node.node_name())
    text = obj["metadata"].get("annotations", {}).get(key)
    return dict(json.loads(text)) if text else {}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def foreign_listeners() -> list[str]:
    """Processes other than the node's own holding kubeadm's ports: on a machine shared with
    the integration tests, their stand-in components take 2379, 2380, 10257 and 10259 for
    seconds at a time, and a component restarting then fails with `address already in use`."""
    ours = ("kube-apiserver", "kube-controller", "kube-scheduler", "etcd", "kubelet")
    return [line for line in node._listeners(node.NODE_PORTS) if not any(o in line for o in ours)]
