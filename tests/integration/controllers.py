"""Helpers for the controller tests: the shipped RBAC applied to a test namespace, a service
account token for it, and ``kucero controller`` processes with short leader-election times."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from reconciler.cluster import configmaps, kube
from tests.controlplane import cluster
from tests.deploy import shipped

# The controller runs as the control-plane identity of kustomize/ (`kucero run` holds both
# roles); its RBAC comes from kustomize/, the single source (tests/deploy/shipped.py).
SERVICE_ACCOUNT = shipped.CONTROL_PLANE
REPO = Path(__file__).resolve().parents[2]
# Short election times keep the tests quick; the ratios are client-go's (15s, 10s, 2s).
LEASE_SECONDS = 3.0
ELECTION_FLAGS = (
    "--leader-election-lease-duration=3s",
    "--leader-election-renew-deadline=2s",
    "--leader-election-retry-period=500ms",
)
_PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}


def wait_until(
    check: Callable[[], Any], timeout: float = 30.0, what: str = "", interval: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or check}")
        time.sleep(interval)


@contextlib.contextmanager
def shipped_rbac(admin: kube.Kube, namespace: str) -> Iterator[None]:
    """The RBAC kustomize/ ships for ``SERVICE_ACCOUNT``, moved into ``namespace``."""
    with shipped.apply_identities(admin, namespace, SERVICE_ACCOUNT):
        yield


def put_policy(
    admin: kube.Kube, namespace: str, text: str | None, key: str = "policy.yaml"
) -> None:
    configmaps.create_or_replace(
        admin, namespace, "kucero-policy", {} if text is None else {key: text}
    )


class ControllerProcess:
    """One ``python -m reconciler controller`` child, its log in a file."""

    def __init__(self, kubeconfig: Path, namespace: str, identity: str, log_dir: Path, *extra: str):
        self.identity = identity
        self.port = cluster.free_port()
        self.log = log_dir / f"controller-{identity}.log"
        argv = [
            sys.executable,
            "-m",
            "reconciler",
            "controller",
            f"--kubeconfig={kubeconfig}",
            f"--ds-namespace={namespace}",
            f"--policy-configmap={namespace}/kucero-policy",
            f"--metrics-addr=127.0.0.1:{self.port}",
            "--metrics-secure=false",  # loopback, plain HTTP: the test scrapes it
            f"--leader-election-identity={identity}",
            *ELECTION_FLAGS,
            *extra,
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "KUCERO_LOG_LEVEL": "INFO"},
            )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return 0, ""

    def metric(self, line_prefix: str) -> float | None:
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(line_prefix + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
