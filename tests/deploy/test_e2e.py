"""kucero as deployed, end to end, against the real API server: the processes the DaemonSets
start (their very args, with $(POD_NAMESPACE) and the host paths filled in as the kubelet
would), each authenticated only by a TokenRequest token of its DaemonSet's ServiceAccount with
the RBAC kustomize/ ships, roll out the shipped policy and then an edit of it on simulated
nodes: a control-plane node running `kucero run` as its DaemonSet does, a second one running
the two halves as separate `kucero controller` and `kucero node` processes (two controllers,
one leader), and two workers running `kucero node`.

No process may be refused anything by the API server along the way. The peak memory of each
process is checked against its DaemonSet's memory limit (and printed: the measured figures
behind the requests and limits).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.cluster import configmaps, kube, nodes
from reconciler.decide import desired, status
from tests import csrs
from tests.controlplane import cluster
from tests.deploy import shipped, tools
from tests.integration import nodesim

pytestmark = pytest.mark.controlplane

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
MEBI = 1024 * 1024
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


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


def memory_limit(name: str) -> int:
    ds = tools.find(tools.objects("kustomize/overlays/default"), "DaemonSet", name)
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    text = container["resources"]["limits"]["memory"]
    assert text.endswith("Mi"), text
    return int(text[:-2]) * MEBI


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


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

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


Tokens = Callable[[str, str], Path]


@pytest.fixture
def tokens(
    admin_kube: kube.Kube, namespace: str, clients: Any, control_plane: cluster.ControlPlane
) -> Iterator[Tokens]:
    """``tokens(service_account, node)`` -> a kubeconfig holding only the token the kubelet of
    ``node`` gets for a pod of that ServiceAccount (TokenRequest, bound to a Pod on the node),
    with the RBAC and admission policies of kustomize/ moved into the test's namespace."""

    def kubeconfig(sa: str, node: str) -> Path:
        token = clients.bound_token(namespace, sa, node)
        return control_plane.token_kubeconfig(f"{sa}-{node}-{namespace}", token)

    with shipped.apply_identities(admin_kube, namespace, shipped.CONTROL_PLANE, shipped.NODE):
        yield kubeconfig


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[list[Pod]]:
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.stop()
        print(f"--- {pod.daemonset} on {pod.node} ---\n{pod.output()[-6000:]}")


def control_plane_pod(node: str, root: Path, tokens: Tokens, namespace: str, tmp_path: Path) -> Pod:
    """The shipped control-plane DaemonSet's pod on ``node``, with its ServiceAccount's token."""
    return Pod(
        "kucero-control-plane",
        node,
        root,
        tokens(shipped.CONTROL_PLANE, node),
        namespace,
        tmp_path / f"{node}.log",
    )


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


def test_policy_rollout_with_the_shipped_daemonsets_and_rbac_alone(
    admin_kube: kube.Kube,
    clients: Any,
    namespace: str,
    make_node: Callable[..., Any],
    tokens: Tokens,
    pods: list[Pod],
    tmp_path: Path,
) -> None:
    cp, cp2, workers = "e2e-cp-1", "e2e-cp-2", ["e2e-w-1", "e2e-w-2"]
    names = [cp, cp2, *workers]
    for name in (cp, cp2):
        make_node(name, labels=nodesim.CONTROL_PLANE)
    for name in workers:
        make_node(name)
    configmaps.create_or_replace(
        admin_kube, namespace, "kucero-policy", {"policy.yaml": simulated_policy()}
    )

    cp_root = nodesim.tree(tmp_path, cp, True, due=("apiserver",))
    pods.append(control_plane_pod(cp, cp_root, tokens, namespace, tmp_path))
    # cp-2 runs the two halves of `kucero run` as separate `kucero controller` and `kucero
    # node` processes, with the same identity: two controllers, one leader.
    cp2_root = nodesim.tree(tmp_path, cp2, True, due=("apiserver",))
    for command in ("controller", "node"):
        log = tmp_path / f"{cp2}-{command}.log"
        token = tokens(shipped.CONTROL_PLANE, cp2)
        pods.append(Pod("kucero-control-plane", cp2, cp2_root, token, namespace, log, command))
    for name in workers:
        root = nodesim.tree(tmp_path, name, False)
        pods.append(
            Pod(
                "kucero-node",
                name,
                root,
                tokens(shipped.NODE, name),
                namespace,
                tmp_path / f"{name}.log",
            )
        )

    first = nodesim.wait_for(
        "the shipped policy on every node", rolled_out(admin_kube, names), ROLLOUT_SECONDS
    )
    for name in (cp, cp2):  # the due apiserver certificates were renewed, one node at a time
        renewed = status.decode(nodes.annotation(nodes.get(admin_kube, name), status.ANNOTATION))
        assert renewed.last_rotation is not None, name

    # "Change the policy in Git": the ConfigMap gets a new policy.yaml, every node follows.
    configmaps.create_or_replace(
        admin_kube,
        namespace,
        "kucero-policy",
        {"policy.yaml": simulated_policy(renewBefore="1000h")},
    )
    second = nodesim.wait_for(
        "the edited policy on every node", rolled_out(admin_kube, names, first), ROLLOUT_SECONDS
    )
    assert second != first

    # Prometheus, as the monitoring component sets it up: its own token, over HTTPS
    # (answers are cached 10 s per token, as the API server's delegated authorization does)
    scraper, stranger = (clients.token(namespace, sa) for sa in ("prometheus", "stranger"))
    for pod in pods:
        assert pod.proc.poll() is None, f"{pod.node} exited\n{pod.output()}"
        assert _get(pod.port, "/metrics")[0] == 401  # no token: nothing
        assert _get(pod.port, "/metrics", stranger)[0] == 403  # a token without the role
        with shipped.metrics_reader(admin_kube, namespace, "prometheus"):
            code, text = _get(pod.port, "/metrics", scraper)
        assert code == 200, text
        # what KuceroNodeNotConverged watches
        if pod.command != "controller":
            assert f'kucero_node_phase{{node="{pod.node}",phase="Converged"}} 1.0' in text, text
            assert f'kucero_node_phase{{node="{pod.node}",phase="Failed"}} 0.0' in text
        # what the DaemonSets' liveness and readiness probes ask
        for probe in ("/healthz", "/readyz"):
            # the kubelet asks every few seconds: a standby controller that has not yet seen
            # the leader Lease answers 503 for a moment after it starts, then 200
            nodesim.wait_for(
                f"{pod.node} {pod.command} {probe} 200",
                lambda p=probe, port=pod.port: _get(port, p)[0] == 200,
                15,
            )
        log = pod.output()
        assert "Forbidden" not in log and "forbidden" not in log, f"{pod.node}:\n{log}"
        peak = peak_rss(pod.proc.pid)
        cpu = cpu_seconds(pod.proc.pid)
        print(
            f"peak RSS kucero {pod.command} ({pod.daemonset}, {pod.node}): {peak / MEBI:.1f} MiB,"
            f" CPU {cpu:.2f} s since start"
        )
        assert peak < memory_limit(pod.daemonset), (pod.daemonset, peak)


def test_kubelet_serving_csr_is_approved_and_signed_with_the_shipped_rbac_alone(
    admin_kube: kube.Kube,
    namespace: str,
    make_node: Callable[..., Any],
    tokens: Tokens,
    pods: list[Pod],
    control_plane: cluster.ControlPlane,
    tmp_path: Path,
) -> None:
    """A worker's kubelet asks for its serving certificate (as ``system:node:<name>``, the way
    a kubelet with serverTLSBootstrap does); the leader, running with the control-plane
    ServiceAccount's token only, approves it and signs it with the CA on its node. The shipped
    policy allows no IP address: this one allows the simulated nodes' range."""
    cp, worker, ip = "e2e-csr-cp", "e2e-csr-w", "10.0.3.21"
    make_node(cp, labels=nodesim.CONTROL_PLANE, addresses={"InternalIP": "10.0.3.11"})
    make_node(worker, addresses={"InternalIP": ip})
    document = yaml.safe_load(simulated_policy())
    document["spec"]["csrSigner"]["allowedIPRanges"] = ["10.0.3.0/24"]
    configmaps.create_or_replace(
        admin_kube, namespace, "kucero-policy", {"policy.yaml": yaml.safe_dump(document)}
    )
    cp_root = nodesim.tree(tmp_path, cp, True)
    pods.append(control_plane_pod(cp, cp_root, tokens, namespace, tmp_path))
    nodesim.wait_for(
        "the leader's policy on both nodes",
        lambda: all(
            nodes.annotation(nodes.get(admin_kube, n), desired.ANNOTATION) for n in (cp, worker)
        ),
        ROLLOUT_SECONDS,
    )

    kubelet = kube.connect(
        str(control_plane.user_kubeconfig(f"system:node:{worker}", ("system:nodes",)))
    )
    try:
        name = f"e2e-{namespace}"
        kubelet.create(CSR_PATH, csrs.body(csrs.request_pem(worker, ips=(ip,)), name))
    finally:
        kubelet.close()

    def signed() -> dict[str, Any] | None:
        got = admin_kube.get(f"{CSR_PATH}/{name}")
        conditions = {c["type"]: c for c in got.get("status", {}).get("conditions", [])}
        return got if "Approved" in conditions and got["status"].get("certificate") else None

    got = nodesim.wait_for("the CSR approved and signed", signed, ROLLOUT_SECONDS)
    approved = [c for c in got["status"]["conditions"] if c["type"] == "Approved"]
    assert approved[0]["reason"] == "KuceroApproved", approved
    admin_kube.delete(f"{CSR_PATH}/{name}")
    for pod in pods:
        log = pod.output()
        assert "Forbidden" not in log and "forbidden" not in log, f"{pod.node}:\n{log}"


# The kubelet's HTTPS probes and Prometheus's tlsConfig (insecureSkipVerify) do not verify the
# self-signed certificate kucero makes at start-up: neither does this.
INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE


def _get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=INSECURE, timeout=15) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode()
    except urllib.error.URLError:
        return 0, ""
