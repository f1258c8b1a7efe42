"""Uninstalling kucero as docs/uninstall.md says, from a real API server after a real rollout,
and what remains.

On a control plane of its own (etcd, kube-apiserver and kube-controller-manager: the DaemonSet
controller makes the pods, the garbage collector removes what the DaemonSets owned), the default
overlay is applied as the README says, into kube-system, the doc's namespace. kucero runs as its
DaemonSets run it: ``kucero run`` on a control-plane node whose apiserver certificate is due,
``kucero node`` on a worker whose kubelet files need kucero's repairs, each process with a token
bound to the pod the DaemonSet controller made for its node (daemonsets.py). The policy cordons
a rotating node. Once both nodes are Converged and kucero has approved a kubelet serving CSR,
the policy is edited to renew everything with a drain, and a PodDisruptionBudget holds the
drain: kucero is uninstalled in the middle of that rotation, its node cordoned and marked, its
rotation slot held, as an uninstall during a rollout finds it.

The uninstall is the doc's sections 1 and 2, their ```sh blocks run with bash as written (the
test's kubectl first on PATH). The test plays the kubelet: when the garbage collector deletes a
DaemonSet pod, its process gets SIGTERM, then SIGKILL after a grace, and the pod goes. Then
everything of kucero still in the API is listed and printed (leftovers.py); it must be exactly
what the doc says expires by itself. Each node's host root is listed too, and must match the
table of the doc's section 3.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import fabricate
from reconciler.cluster import configmaps, cordon, kube, leases, nodes
from reconciler.decide import desired, status
from tests import csrs
from tests.controlplane import cluster
from tests.deploy import daemonsets, leftovers, shipped, tools
from tests.integration import nodesim

pytestmark = pytest.mark.controlplane

NS = tools.NAMESPACES["default"]  # kube-system: the doc's commands name it
CP, WORKER = "uninstall-cp-1", "uninstall-w-1"
IPS = {CP: "10.0.4.11", WORKER: "10.0.4.21"}
DAEMONSETS = {CP: shipped.CONTROL_PLANE, WORKER: shipped.NODE}
# The kubelet's SIGTERM-to-SIGKILL grace: the DaemonSets give 60 s and 30 s; a drain held by a
# PodDisruptionBudget stops at SIGTERM (it would otherwise wait kubeadm.healthTimeout, 5 min),
# so less will do.
GRACE_SECONDS = 5.0
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
SHOP = "uninstall-shop"  # a namespace of someone else's, with a pod the drain must not evict
WORKER_KUBELET_FILES = ("etc/kubernetes/kubelet.conf", "var/lib/kubelet/config.yaml")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ControlPlane]:
    """A control plane of this test's own, with the controller manager (DaemonSet controller,
    garbage collector, disruption controller): kube-system is all kucero's here."""
    with cluster.guarded(tmp_path_factory.mktemp("uninstall"), with_controller_manager=True) as p:
        yield p


@pytest.fixture
def admin(plane: cluster.ControlPlane) -> Iterator[kube.Kube]:
    door = kube.connect(str(plane.admin_kubeconfig))
    yield door
    door.close()


def policy(drain: bool = False, **kubeadm: str) -> str:
    """The shipped policy as simulated nodes can follow it, cordoning a rotating node, signing
    serving certificates for the nodes' addresses."""
    document = yaml.safe_load(daemonsets.simulated_policy(**kubeadm))
    document["spec"]["rollout"] |= {"cordon": True, "drain": drain}
    document["spec"]["csrSigner"]["allowedIPRanges"] = ["10.0.4.0/24"]
    return yaml.safe_dump(document)


def make_nodes(admin: kube.Kube) -> None:
    for name, ip in IPS.items():
        labels = nodesim.CONTROL_PLANE if name == CP else {}
        admin.create(nodes.PATH, {"metadata": {"name": name, "labels": labels}})
        addresses = [{"type": "InternalIP", "address": ip}]
        admin.patch(f"{nodes.path(name)}/status", {"status": {"addresses": addresses}})


def make_trees(plane: cluster.ControlPlane, base: Path) -> dict[str, Path]:
    """The control-plane node: its apiserver certificate due, and the kubelet's client
    certificate from the cluster's CA (the drain runs as the kubelet). The worker: kubelet
    files as kubeadm < 1.17 left them (the client certificate embedded in kubelet.conf, no
    rotation in config.yaml), which kucero repairs."""
    cp = nodesim.tree(base, CP, True, due=("apiserver",))
    crt, key = plane.ca().issue(base / "kubelet", CP, f"system:node:{CP}", ("system:nodes",))
    current = cp / "var/lib/kubelet/pki/kubelet-client-current.pem"  # a link, as the kubelet's
    (cp / os.readlink(current).lstrip("/")).write_bytes(crt.read_bytes() + key.read_bytes())
    worker = base / WORKER
    options = fabricate.Options(
        node_name=WORKER, node_ip=IPS[WORKER], key_type="ecdsa", control_plane=False, etcd=False
    )
    fabricate.build(worker, dt.datetime.now(dt.UTC), options)
    return {CP: cp, WORKER: worker}


Started = dict[str, tuple[str, daemonsets.Pod]]


def start(admin: kube.Kube, plane: cluster.ControlPlane, roots: dict[str, Path]) -> Started:
    """node -> (its DaemonSet pod's name, the process run with that pod's token)."""
    started = {}
    for node, daemonset in DAEMONSETS.items():
        pod = daemonsets.scheduled(admin, NS, daemonset, node)
        token = daemonsets.token_for(admin, pod)
        kubeconfig = plane.token_kubeconfig(f"{daemonset}-{node}", token)
        log = roots[node].with_suffix(".log")
        process = daemonsets.Pod(daemonset, node, roots[node], kubeconfig, NS, log)
        started[node] = (pod["metadata"]["name"], process)
    return started


def approve_a_serving_csr(admin: kube.Kube, plane: cluster.ControlPlane) -> None:
    """The worker's kubelet asks for a serving certificate; the leader approves it."""
    kubelet = kube.connect(str(plane.user_kubeconfig(f"system:node:{WORKER}", ("system:nodes",))))
    try:
        pem = csrs.request_pem(WORKER, ips=(IPS[WORKER],))
        kubelet.create(CSR_PATH, csrs.body(pem, "uninstall-serving"))
    finally:
        kubelet.close()

    def approved() -> bool:
        got = admin.get(f"{CSR_PATH}/uninstall-serving")
        conditions = (got.get("status") or {}).get("conditions") or []
        return any(c["reason"] == "KuceroApproved" for c in conditions)

    nodesim.wait_for("the serving CSR approved", approved, daemonsets.ROLLOUT_SECONDS)


def hold_a_rotation(admin: kube.Kube, before: str) -> None:
    """Someone else's pod on the control-plane node, Running and guarded by a
    PodDisruptionBudget that allows no disruption; then a policy that renews every
    certificate (renewBefore beyond what is left of them) with a drain. Returns once the node
    rotates, cordoned with kucero's mark and draining."""
    admin.create("/api/v1/namespaces", {"metadata": {"name": SHOP}})
    admin.create(f"/api/v1/namespaces/{SHOP}/serviceaccounts", {"metadata": {"name": "till"}})
    pods = f"/api/v1/namespaces/{SHOP}/pods"
    admin.create(pods, _till_pod())
    # as its kubelet would report it: a Pending pod is evicted whatever a budget says
    running = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    admin.patch(f"{pods}/till/status", {"status": running})
    budget = {
        "metadata": {"name": "till"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "till"}}},
    }
    admin.create(f"/apis/policy/v1/namespaces/{SHOP}/poddisruptionbudgets", budget)
    renew_all = policy(drain=True, certificateValidity="17520h", renewBefore="9000h")
    configmaps.create_or_replace(admin, NS, "kucero-policy", {"policy.yaml": renew_all})

    def draining() -> bool:
        node = nodes.get(admin, CP)
        reported = status.decode(nodes.annotation(node, status.ANNOTATION))
        return bool(
            reported.phase == status.Phase.ROTATING
            and reported.revision != before
            and node["spec"].get("unschedulable")
            and nodes.annotation(node, cordon.MARK)
        )

    nodesim.wait_for("the control-plane node draining", draining, daemonsets.ROLLOUT_SECONDS)
    assert "deletionTimestamp" not in admin.get(f"{pods}/till")["metadata"]


def _till_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "till", "labels": {"app": "till"}},
        "spec": {
            "serviceAccountName": "till",
            "nodeName": CP,
            "tolerations": [{"operator": "Exists"}],  # no kubelet: the Nodes go unreachable
            "containers": [{"name": "till", "image": "till"}],
        },
    }


def desired_states(admin: kube.Kube) -> dict[str, str | None]:
    return {n: nodes.annotation(nodes.get(admin, n), desired.ANNOTATION) for n in IPS}


def play_the_kubelet(admin: kube.Kube, started: Started) -> None:
    """What each node's kubelet does once the garbage collector deletes its DaemonSet pod:
    stop the container (SIGTERM, SIGKILL after the grace), then remove the pod."""
    for pod, process in started.values():
        path = f"/api/v1/namespaces/{NS}/pods/{pod}"

        def deleting(path: str = path) -> bool:
            try:
                return "deletionTimestamp" in admin.get(path)["metadata"]
            except kube.NotFound:
                return True

        nodesim.wait_for(f"the garbage collector deleting {pod}", deleting, 60)
        process.stop(GRACE_SECONDS)
        with contextlib.suppress(kube.NotFound):
            admin.delete(path, {"gracePeriodSeconds": 0})


def test_uninstalling_as_documented_leaves_only_what_expires(
    plane: cluster.ControlPlane, admin: kube.Kube, tmp_path: Path
) -> None:
    kubeconfig = plane.admin_kubeconfig
    rendered = tools.render("kustomize/overlays/default")
    tools.kubectl("apply", "--server-side", "-f", "-", stdin=rendered, kubeconfig=kubeconfig)
    configmaps.create_or_replace(admin, NS, "kucero-policy", {"policy.yaml": policy()})
    make_nodes(admin)
    roots = make_trees(plane, tmp_path)
    worker_kubelet = {p: (roots[WORKER] / p).read_bytes() for p in WORKER_KUBELET_FILES}
    started = start(admin, plane, roots)
    try:
        first = nodesim.wait_for(
            "every node Converged",
            daemonsets.rolled_out(admin, list(IPS)),
            daemonsets.ROLLOUT_SECONDS,
        )
        cp_log = started[CP][1].output()
        assert f"cordoned {CP} for its rotation" in cp_log and f"uncordoned {CP}" in cp_log
        approve_a_serving_csr(admin, plane)
        hold_a_rotation(admin, first)

        slot = leases.get(admin, NS, "kucero-rotation-0")
        assert CP in leases.holder(slot), slot  # the rotation in flight holds it
        before = leftovers.in_api(kubeconfig)
        print("kucero in the API before the uninstall:", *before, sep="\n  ")
        pods = [f"{NS}/{pod}" for pod, _ in started.values()]
        assert_there_is_something_to_remove(before, rendered, pods)

        wanted = desired_states(admin)
        # the kubelets act while section 1 runs (it waits for the pods to go)
        with concurrent.futures.ThreadPoolExecutor(1) as kubelets:
            stopped = kubelets.submit(play_the_kubelet, admin, started)
            leftovers.run(1, tmp_path / "bin", kubeconfig)
            stopped.result()
        # the leader saw its policy ConfigMap go (and keeps the policy in force), and its
        # rights had gone first: nothing reached the nodes' desired states while it stopped
        assert desired_states(admin) == wanted
        leftovers.run(2, tmp_path / "bin", kubeconfig)
    finally:
        for _, process in started.values():
            process.stop(GRACE_SECONDS)
            print(f"--- {process.daemonset} on {process.node} ---\n{process.output()[-6000:]}")

    after = leftovers.in_api(kubeconfig)
    print("kucero in the API after the uninstall:", *after, sep="\n  ")
    said = leftovers.expiring_kinds(leftovers.section(2))
    unsaid = [str(left) for left in after if left.kind not in said]
    assert not unsaid, "left behind, and the doc does not say so:\n" + "\n".join(unsaid)
    assert {left.kind for left in after} == said  # and the doc's list is not stale
    # section 2 gave back the cordon kucero made for the rotation it never finished
    assert not nodes.get(admin, CP)["spec"].get("unschedulable")
    # the commands hold when run again (after an interrupted uninstall, say)
    for number in (1, 2):
        leftovers.run(number, tmp_path / "bin", kubeconfig)
    assert leftovers.in_api(kubeconfig) == after

    assert_the_nodes_hold_what_the_table_says(roots, worker_kubelet)


def assert_there_is_something_to_remove(
    before: list[leftovers.Leftover], rendered: str, pods: list[str]
) -> None:
    """Not vacuous: every object of the overlay, the Leases, the DaemonSets' pods and
    revisions, kucero's annotations, Events and an approved CSR are all seen by the listing."""
    seen = {(left.kind, left.where) for left in before}
    for obj in yaml.safe_load_all(rendered):
        meta = obj["metadata"]
        where = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
        assert (obj["kind"], where) in seen, f"{obj['kind']} {where} not listed"
    for lease in ("kucero-leader-election", "kucero-rotation-0"):
        assert ("Lease", f"{NS}/{lease}") in seen
    assert {("Pod", pod) for pod in pods} <= seen
    revisions = [left for left in before if left.kind == "ControllerRevision"]
    assert len(revisions) == len(DAEMONSETS), revisions
    reasons = {(left.kind, left.where, left.why) for left in before}
    for node in IPS:
        for key in ("kucero.io/desired", "kucero.io/status"):
            assert ("Node", node, f"annotation {key}") in reasons
    assert ("Node", CP, f"annotation {cordon.MARK}") in reasons
    assert {"Event", "CertificateSigningRequest"} <= {left.kind for left in before}


def assert_the_nodes_hold_what_the_table_says(
    roots: dict[str, Path], worker_kubelet: dict[str, bytes]
) -> None:
    """Every kucero path on each node is a row of the doc's table; what stays is there; what
    exists only while a pass or restart is under way is not (the pass killed mid-drain had
    not started changing files); the worker's original kubelet files are in its oldest
    backup, as the doc says, and the live ones are what the doc says kucero leaves."""
    rows = leftovers.table(leftovers.section(3))
    in_flight = [row for row in rows if row.remove.startswith("**no**")]
    assert len(in_flight) == 1, rows
    tmp = "etc/kubernetes/tmp/"
    for node, root in roots.items():
        found = leftovers.on_host(root)
        print(f"kucero on {node}:", *found, sep="\n  ")
        assert all(path.startswith(tmp) for path in found), found
        unlisted = [path for path in found if not any(row.matches(path) for row in rows)]
        assert not unlisted, f"{node}: not in the doc's table: {unlisted}"
        assert not any(in_flight[0].matches(path) for path in found), found
        for row in rows:
            if row not in in_flight:
                assert any(row.matches(path) for path in found), (node, row)
    assert b"client-certificate-data" in worker_kubelet[WORKER_KUBELET_FILES[0]]  # embedded
    backups = sorted((roots[WORKER] / tmp).glob("kucero-backup-*"))
    for path, original in worker_kubelet.items():
        assert (backups[0] / "old" / path).read_bytes() == original, path
    conf = yaml.safe_load((roots[WORKER] / WORKER_KUBELET_FILES[0]).read_text())
    (user,) = conf["users"]
    assert user["user"]["client-certificate"] == "/var/lib/kubelet/pki/kubelet-client-current.pem"
    config = yaml.safe_load((roots[WORKER] / WORKER_KUBELET_FILES[1]).read_text())
    assert config["rotateCertificates"] is True
