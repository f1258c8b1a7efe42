"""kucero's processes as its DaemonSets run them, for the tests that run kucero against the real
API server with the shipped identities alone (test_e2e.py, test_uninstall.py).

``Pod`` starts ``python -m reconciler`` with the container args of a DaemonSet of the default
overlay (``$(POD_NAMESPACE)`` expanded, the host root and the metrics port pointed at the
test's, no kubelet to restart), ``NODE_NAME`` as the downward API sets it, a kubeconfig holding
only a ServiceAccount token, and the test-speed settings ``FAST``/``FAST_ELECTION`` on top:
nothing else.

``scheduled`` and ``token_for`` give a process the credential the kubelet gives a real
DaemonSet pod: the pod the DaemonSet controller made for a node, bound to it as the scheduler
binds it (no kube-scheduler runs here), and a TokenRequest token bound to that pod (the API
server adds the node's name to the user, which kucero's admission policies check). Like a real
pod's, the token is refused once the pod or its ServiceAccount is gone (after the API server's
authentication cache, a few seconds: RBAC is what stops a pod that is still stopping).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from reconciler.cluster import kube, nodes
from reconciler.decide import desired, status
from tests.controlplane import cluster
from tests.deploy import tools
from tests.integration import nodesim

# Test-speed settings on top of the DaemonSets' args; nothing else is added.
FAST = (
    "--rotation-lease-duration=3s",
    "--slot-retry-period=1s",
    "--retry-period=2s",
    "--manifest-grace=0.5",
)
FAST_ELECTION = (
    "--leader-election-lease-duration=3s",
    "--leader-election-renew-deadline=2s",
    "--leader-election-retry-period=500ms",
)
ROLLOUT_SECONDS = 90.0
# The DaemonSet controller makes a pod a moment after a Node or the DaemonSet appears.
POD_SECONDS = 60.0


def daemonset_args(name: str, namespace: str, root: Path, port: int) -> list[str]:
    """The container args of DaemonSet ``name`` in the default overlay, as the kubelet passes
    them (``$(POD_NAMESPACE)`` expanded), pointed at a tree and a free metrics port."""
    ds = tools.find(tools.objects("kustomize/overlays/default"), "DaemonSet", name)
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    out = []
    for arg in container["args"]:
        arg = arg.replace("$(POD_NAMESPACE)", namespace)
        if arg == "--host-root=/host":
            arg = f"--host-root={root}"
        elif arg.startswith("--metrics-addr="):
            arg = f"--metrics-addr=127.0.0.1:{port}"
        elif arg.startswith("--kubelet-restart-command="):
            arg = "--kubelet-restart-command=true"  # no kubelet here
        out.append(arg)
    return out


class Pod:
    """One process as its DaemonSet would run it on a node."""

    def __init__(
        self,
        daemonset: str,
        node: str,
        root: Path,
        kubeconfig: Path,
        namespace: str,
        log: Path,
        command: str | None = None,
    ):
        """``command`` replaces the DaemonSet's (``run`` -> ``controller`` or ``node``: the
        two halves of ``kucero run`` as separate processes, with the same identity)."""
        self.daemonset, self.node, self.log = daemonset, node, log
        self.port = cluster.free_port()
        args = daemonset_args(daemonset, namespace, root, self.port)
        if command is not None:
            args[0] = command
        self.command = args[0]
        if args[0] == "controller":  # the node half's flags
            node_flags = ("--kubelet-restart-command=", "--crictl-command=")
            args = [a for a in args if not a.startswith(node_flags)]
        extra = [
            *(FAST if args[0] in ("run", "node") else ()),
            *(FAST_ELECTION if args[0] in ("run", "controller") else ()),
        ]
        argv = [sys.executable, "-m", "reconciler", *args, *extra, f"--kubeconfig={kubeconfig}"]
        # NODE_NAME comes from the downward API in the DaemonSet; the token is the only credential.
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env |= {"NODE_NAME": node, "KUCERO_LOG_LEVEL": "INFO"}
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop(self, grace: float = 30) -> int:
        """As the kubelet stops a container: SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def scheduled(door: kube.Kube, namespace: str, daemonset: str, node: str) -> dict[str, Any]:
    """The pod DaemonSet ``daemonset`` made for ``node``, bound to the node as the scheduler
    binds it (``pods/binding``); waits for the DaemonSet controller to make it."""

    def made() -> dict[str, Any] | None:
        listed = door.list(f"/api/v1/namespaces/{namespace}/pods")
        for pod in listed.get("items") or []:
            owners = pod["metadata"].get("ownerReferences") or []
            if any(o["kind"] == "DaemonSet" and o["name"] == daemonset for o in owners) and (
                _target(pod) == node
            ):
                return dict(pod)
        return None

    pod = nodesim.wait_for(f"the {daemonset} pod for {node}", made, POD_SECONDS)
    if not pod["spec"].get("nodeName"):
        name = pod["metadata"]["name"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        door.create(f"/api/v1/namespaces/{namespace}/pods/{name}/binding", binding)
        pod = door.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return pod


def _target(pod: dict[str, Any]) -> str | None:
    """The node a DaemonSet pod is for: its nodeName once bound, else the node its affinity
    names (the DaemonSet controller pins each pod with a ``metadata.name`` field selector)."""
    if pod["spec"].get("nodeName"):
        return str(pod["spec"]["nodeName"])
    affinity = (pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field["key"] == "metadata.name" and len(field.get("values") or []) == 1:
                return str(field["values"][0])
    return None


def token_for(door: kube.Kube, pod: dict[str, Any]) -> str:
    """A TokenRequest token of the pod's ServiceAccount bound to the pod, as its kubelet gets
    it (the API server then names the pod's node in the token's user extra)."""
    meta = pod["metadata"]
    account = pod["spec"]["serviceAccountName"]
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [],
            "expirationSeconds": 3600,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }
    path = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token"
    return str(door.create(path, request)["status"]["token"])


def shipped_policy() -> str:
    configmap = tools.find(
        tools.objects("kustomize/overlays/default"), "ConfigMap", "kucero-policy"
    )
    return str(configmap["data"]["policy.yaml"])


def simulated_policy(**kubeadm: str) -> str:
    """The shipped policy with what simulated nodes cannot do turned off: no static pod runs
    here to restart and verify (kubeadm.restart: none), and no kubelet asks for a serving
    certificate (rotateServerCertificates: false)."""
    document = yaml.safe_load(shipped_policy())
    document["spec"]["kubeadm"] |= {"restart": "none", **kubeadm}
    document["spec"]["kubelet"]["rotateServerCertificates"] = False
    return yaml.safe_dump(document)


def rolled_out(
    door: kube.Kube, names: list[str], not_revision: str | None = None
) -> Callable[[], str | None]:
    """The revision every node converged to, once each reports its desired one."""

    def check() -> str | None:
        revisions = set()
        for name in names:
            node = nodes.get(door, name)
            wanted = nodes.annotation(node, desired.ANNOTATION)
            reported = nodes.annotation(node, status.ANNOTATION)
            if not wanted or not reported:
                return None
            want = json.loads(wanted)["revision"]
            got = status.decode(reported)
            if got.revision != want or got.phase != status.Phase.CONVERGED:
                return None
            revisions.add(want)
        if len(revisions) != 1 or revisions == {not_revision}:
            return None
        return revisions.pop()

    return check
