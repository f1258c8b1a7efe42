"""Simulated nodes for the cluster-mode tests: a Node object in the real API server, a
kubeadm-like tree on disk (``reconciler.fabricate``) and a real ``kucero node`` process.

No kubelet runs here, so the kubelet restart command is ``true``; a tree with static pod
manifests gets its own kubelet stand-in (``tests.controlplane.kubelet_standin``: real TLS
processes on free ports, started and stopped as the manifests come and go), so ``manifest-move``
restarts are verified for real. Each process logs to ``<root>.log``; a
test that fails prints the logs of its nodes (``dump``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from reconciler import fabricate
from reconciler.cluster import kube, nodes
from reconciler.decide import desired, policy, status
from reconciler.model import paths
from tests.controlplane import cluster, kubelet_standin

HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
CONTROL_PLANE = {"node-role.kubernetes.io/control-plane": ""}
# Short enough that a test waiting out a crashed holder stays fast, long enough for a loaded CI
# machine to renew it (every third of it).
LEASE = "3s"


@dataclasses.dataclass
class SimNode:
    name: str
    root: Path
    control_plane: bool
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root.with_suffix(".log")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def tree(
    base: Path,
    name: str,
    control_plane: bool = True,
    due: Iterable[str] = (),
    now: dt.datetime | None = None,
    manifests: Iterable[str] = (),
    expired: Iterable[str] = (),
    ca_from: Path | None = None,
    ca_left: dt.timedelta | None = None,
) -> Path:
    """A converged kubelet, certificates due in 3 days for the kubeadm names in ``due``, expired
    a day ago for those in ``expired``, and static pod manifests for ``manifests`` (so renewals
    plan restarts). ``ca_from``: share that tree's CAs (one cluster); ``ca_left``: the three
    CAs end that long from now (CA renewal tests)."""
    now = now or dt.datetime.now(dt.UTC)
    root = base / name
    fabricate.build(
        root,
        now,
        fabricate.Options(
            node_name=name,
            key_type="ecdsa",
            control_plane=control_plane,
            etcd=control_plane,
            embedded_kubelet_conf=False,
            kubelet_config_rotation=True,
            expiries=tuple((n, dt.timedelta(days=3)) for n in due)
            + tuple((n, dt.timedelta(days=-1)) for n in expired)
            + tuple((n, ca_left) for n in ("ca", "etcd-ca", "front-proxy-ca") if ca_left),
            ca_from=str(ca_from) if ca_from else "",
        ),
    )
    stop_standin(root)
    if manifests:
        (root / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
        # free ports: several simulated nodes (and the test API server) share this machine
        ports = {c: cluster.free_port() for c in (*fabricate.PORTS, "etcd-peer")}
        for component in manifests:
            manifest = fabricate._manifest(component, ports=ports)  # a kubeadm-shaped static pod
            (root / f"etc/kubernetes/manifests/{component}.yaml").write_bytes(manifest)
        # only those: the others fabricate wrote name kubeadm's fixed ports, which the
        # stand-ins of several simulated nodes cannot all listen on
        for other in (root / "etc/kubernetes/manifests").glob("*.yaml"):
            if other.stem not in manifests:
                other.unlink()
        standin = kubelet_standin.KubeletStandin(root).__enter__()
        _STANDINS[root] = standin
        standin.wait_serving(list(manifests))
    return root


# The kubelet stand-in of each tree with manifests, stopped by ``stop_standins``.
_STANDINS: dict[Path, kubelet_standin.KubeletStandin] = {}


def stop_standin(root: Path) -> None:
    standin = _STANDINS.pop(root, None)
    if standin is not None:
        standin.__exit__(None, None, None)


def stop_standins() -> None:
    """Stop every stand-in this module started (at the end of each test)."""
    for root in list(_STANDINS):
        stop_standin(root)


def stop_all(sims: Iterable[SimNode]) -> None:
    """End each ``kucero node`` process (SIGTERM; killed if still running after 30 s: the
    test has failed anyway)."""
    for sim in sims:
        try:
            sim.stop(timeout=30)
        except subprocess.TimeoutExpired:
            if sim.proc is not None:
                sim.proc.kill()
                sim.proc.wait()


def spec_text(body: str = "") -> str:
    return HEAD + body


def desired_value(body: str = "", labels: Mapping[str, str] | None = None) -> str:
    return desired.encode(policy.resolve(policy.load(spec_text(body)), labels or {}))


def set_desired(
    door: kube.Kube, name: str, body: str = "", labels: Mapping[str, str] | None = None
) -> str:
    """Write ``kucero.io/desired`` as the controller would; returns the revision."""
    value = desired_value(body, labels)
    nodes.patch_annotations(door, name, {desired.ANNOTATION: value})
    return str(json.loads(value)["revision"])


def start(
    node: SimNode,
    kubeconfig: Path,
    namespace: str,
    *extra: str,
    env: Mapping[str, str] | None = None,
    command: str = "node",
    kubelet_restart: str | None = "true",
) -> SimNode:
    """Start ``kucero <command>`` for ``node``; ``kubelet_restart=None`` leaves the flag out
    (kucero's own default, refused for a host root that is not PID 1's)."""
    restart = ["--kubelet-restart-command", kubelet_restart] if kubelet_restart else []
    argv = [
        sys.executable,
        "-m",
        "reconciler",
        command,
        "--node-name",
        node.name,
        "--host-root",
        str(node.root),
        "--kubeconfig",
        str(kubeconfig),
        "--ds-namespace",
        namespace,
        "--rotation-lease-duration",
        LEASE,
        "--slot-retry-period",
        "1s",
        "--retry-period",
        "2s",
        *restart,
        "--manifest-grace",
        "0.5",
        "--metrics-addr",
        "127.0.0.1:0",
        # loopback and plain HTTP, scraped by the test (docs/deploy.md: the loopback mode)
        "--metrics-secure=false",
        *extra,
    ]
    log = node.log.open("ab")
    node.proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    log.close()
    return node


def status_of(door: kube.Kube, name: str) -> status.Status | None:
    try:
        return status.decode(nodes.annotation(nodes.get(door, name), status.ANNOTATION))
    except kube.NotFound:
        return None


def wait_for(
    what: str, condition: Callable[[], Any], timeout: float = 60.0, sims: Iterable[SimNode] = ()
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{dump(sims)}")


def converged(door: kube.Kube, names: Iterable[str], revision: str) -> bool:
    for name in names:
        s = status_of(door, name)
        if s is None or s.revision != revision or s.phase != status.Phase.CONVERGED:
            return False
    return True


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, kucero's tmp directory included; only the empty
    lock file a pass holds (``paths.LOCK``) is left out: creating it changes nothing."""
    lock = root / paths.LOCK.lstrip("/")
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p != lock
    }


def dump(sims: Iterable[SimNode]) -> str:
    out = []
    for sim in sims:
        text = sim.log.read_text(errors="replace") if sim.log.exists() else "(no log)"
        out.append(f"--- {sim.name} ---\n" + "\n".join(text.splitlines()[-40:]))
    return "\n".join(out)


def node_events(door: kube.Kube, name: str) -> list[dict[str, Any]]:
    listed = door.list(
        "/apis/events.k8s.io/v1/namespaces/default/events",
        {"fieldSelector": f"regarding.name={name}"},
    )
    return list(listed.get("items") or [])


def metric(port: int, prefix: str) -> list[tuple[str, float]]:
    """Lines of ``/metrics`` starting with ``prefix``: (series, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = []
    for line in text.splitlines():
        if line.startswith(prefix):
            series, value = line.rsplit(" ", 1)
            out.append((series, float(value)))
    return out
