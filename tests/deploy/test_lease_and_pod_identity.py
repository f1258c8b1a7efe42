"""Which Leases and Pods kucero's identities may touch, tried against the real API server with
the RBAC and admission policies kustomize/ ships (kustomize/base/roles/lease-writes.yaml; no
Pod rights at all, since drain runs as the node's kubelet).

The attacker holds worker ``w1``'s kucero-node token (bound to its DaemonSet pod, so it names
``w1``) and its kubelet's client certificate. Refused: listing every pod of the cluster
(environment values included), evicting any pod, writing a slot Lease for another node or
emptying one another node holds, creating the leader Lease first, writing any other Lease.
What kucero needs still works: a node takes, renews and releases its slot, the controller its
leader Lease, and a real ``kucero node`` on a control-plane node rotates with cordon and drain
under these identities, evicting its own node's pods and no other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster import cordon, kube, leases, nodes
from reconciler.decide import status
from tests.controlplane import cluster
from tests.deploy import shipped
from tests.deploy.identities import SECRET_VALUE, World, plain_pod, refused
from tests.integration import nodesim

pytestmark = pytest.mark.controlplane

LEADER = "kucero-leader-election"
SLOTS = [f"kucero-rotation-{i}" for i in range(10)]
YEAR_SECONDS = 365 * 24 * 3600


def lease(name: str, holder: str, seconds: int = 15) -> dict[str, object]:
    now = leases.micro_time(dt.datetime.now(dt.UTC))
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": seconds,
            "acquireTime": now,
            "renewTime": now,
        },
    }


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def cleanup_leases(world: World) -> Iterator[None]:
    yield None
    for name in (*SLOTS, LEADER, "kucero-rotation-10", "kube-scheduler"):
        with contextlib.suppress(kube.NotFound):
            world.door("admin").delete(leases.path(world.namespace, name))


# --- Pods ---------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["w1", "controller"])
def test_a_node_identity_cannot_list_pods_anywhere(world: World, who: str) -> None:
    door = world.door(who)
    every = refused(lambda: door.list("/api/v1/pods"))
    own = refused(lambda: door.list("/api/v1/pods", {"fieldSelector": f"spec.nodeName={world.w1}"}))
    here = refused(lambda: door.list(f"/api/v1/namespaces/{world.namespace}/pods"))
    for message in (every, own, here):
        assert "forbidden" in message, message


@pytest.mark.parametrize("who", ["w1", "controller"])
@pytest.mark.parametrize("on", ["w1", "w2"])
def test_a_node_identity_cannot_evict_a_pod(world: World, who: str, on: str) -> None:
    """Whether drain is on or not, on its node or another: the ServiceAccounts never evict."""
    name = world.pods[world.node(on)]
    path = f"/api/v1/namespaces/{world.namespace}/pods/{name}"
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}}
    assert "forbidden" in refused(lambda: world.door(who).create(path + "/eviction", body))
    assert "deletionTimestamp" not in world.door("admin").get(path)["metadata"]


def test_drain_as_the_kubelet_evicts_the_pods_of_its_node_and_no_other(
    world: World, control_plane: cluster.ControlPlane
) -> None:
    """What kucero drains with: the kubelet's identity, limited by the Node authorizer (list
    only with spec.nodeName=<itself>) and NodeRestriction (evict only pods bound to it)."""
    admin, ns = world.door("admin"), world.namespace
    node = f"{ns}-w-3"  # a node of its own: the drain takes every movable pod of it
    admin.create(nodes.PATH, {"metadata": {"name": node}})
    kubelet = kube.connect(
        str(control_plane.user_kubeconfig(f"system:node:{node}", ("system:nodes",)))
    )
    try:
        mine = f"drained-{node}"
        admin.create(f"/api/v1/namespaces/{ns}/pods", plain_pod(mine, node))
        assert "forbidden" in refused(lambda: kubelet.list("/api/v1/pods"))
        for other in world.pods.values():
            evict = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": other}}
            path = f"/api/v1/namespaces/{ns}/pods/{other}/eviction"
            message = refused(lambda p=path, e=evict: kubelet.create(p, e))
            assert "different node" in message or "forbidden" in message, message

        assert cordon.drain(kubelet, node, timeout=5.0) == []

        pods = f"/api/v1/namespaces/{ns}/pods"
        assert "deletionTimestamp" in admin.get(f"{pods}/{mine}")["metadata"]
        for other in world.pods.values():
            assert "deletionTimestamp" not in admin.get(f"{pods}/{other}")["metadata"]
    finally:
        kubelet.close()
        with contextlib.suppress(kube.NotFound):
            admin.delete(nodes.path(node))


# --- Leases -------------------------------------------------------------------------------


@pytest.mark.usefixtures("cleanup_leases")
@pytest.mark.parametrize("who", ["w1", "unbound"])
def test_a_node_cannot_create_the_leader_lease_first(world: World, who: str) -> None:
    """With an enormous duration the controller would never lead (while /readyz said 200)."""
    collection = leases.collection(world.namespace)
    body = lease(LEADER, f"{world.w1}_evil", YEAR_SECONDS)
    assert "kucero-lease-writes" in refused(lambda: world.door(who).create(collection, body))
    assert leases.get(world.door("admin"), world.namespace, LEADER) is None


@pytest.mark.usefixtures("cleanup_leases")
@pytest.mark.parametrize("name", ["kube-scheduler", "kucero-rotation-10", "anything"])
@pytest.mark.parametrize("who", ["w1", "controller"])
def test_a_node_identity_cannot_create_any_other_lease(world: World, who: str, name: str) -> None:
    body = lease(name, world.w1 if who == "w1" else world.cp)
    collection = leases.collection(world.namespace)
    assert "kucero-lease-writes" in refused(lambda: world.door(who).create(collection, body))


@pytest.mark.usefixtures("cleanup_leases")
def test_a_worker_cannot_write_any_slot_for_another_node(world: World) -> None:
    """One worker's token writing every slot for the control-plane node (or a forged holder)
    would block rotation or let a second control-plane node start."""
    collection, door = leases.collection(world.namespace), world.door("w1")
    for name in SLOTS:
        for holder in (world.cp, world.w2, "forged-node"):
            body = lease(name, holder, YEAR_SECONDS)
            assert "may name only itself" in refused(lambda b=body: door.create(collection, b))
    assert all(leases.get(world.door("admin"), world.namespace, n) is None for n in SLOTS)


@pytest.mark.usefixtures("cleanup_leases")
def test_a_token_bound_to_no_node_holds_no_slot(world: World) -> None:
    collection = leases.collection(world.namespace)
    body = lease(SLOTS[0], world.w1)
    assert "not bound to a Pod" in refused(lambda: world.door("unbound").create(collection, body))


@pytest.mark.usefixtures("cleanup_leases")
def test_a_worker_cannot_empty_hand_over_or_delete_a_slot_another_node_holds(
    world: World,
) -> None:
    ns, admin, thief = world.namespace, world.door("admin"), world.door("w1")
    held = leases.acquire(world.door("controller"), ns, SLOTS[0], world.cp, 15, now(), None)
    for holder in (None, "", world.w2):
        forged = {**held, "spec": {**held["spec"], "holderIdentity": holder}}
        path = leases.path(ns, SLOTS[0])
        message = refused(lambda f=forged, p=path: thief.replace(p, f))
        assert "kucero-lease-writes" in message, message
    refused(lambda: thief.delete(leases.path(ns, SLOTS[0])))
    assert leases.holder(leases.get(admin, ns, SLOTS[0])) == world.cp


@pytest.mark.usefixtures("cleanup_leases")
def test_a_node_takes_renews_and_releases_its_slot_with_the_shipped_code(world: World) -> None:
    ns, door = world.namespace, world.door("w1")
    taken = leases.acquire(door, ns, SLOTS[9], world.w1, 15, now(), None)
    renewed = leases.renew(door, taken, world.w1, 15, now())
    leases.release(door, renewed, world.w1, now())
    assert leases.holder(leases.get(world.door("admin"), ns, SLOTS[9])) == ""
    again = leases.get(door, ns, SLOTS[9])
    leases.acquire(door, ns, SLOTS[9], world.w1, 15, now(), again)  # a released slot, retaken
    assert leases.holder(leases.get(world.door("admin"), ns, SLOTS[9])) == world.w1


@pytest.mark.usefixtures("cleanup_leases")
def test_a_node_may_take_over_a_slot_another_node_holds(world: World) -> None:
    """Needed when the holder stopped renewing or its Node is gone; whether it did is a
    question of time, which an admission policy cannot ask, so this stays possible for a
    compromised node too (the node-side fencing is what limits it; docs/deploy.md)."""
    ns = world.namespace
    held = leases.acquire(world.door("w2"), ns, SLOTS[1], world.w2, 1, now(), None)
    leases.acquire(world.door("w1"), ns, SLOTS[1], world.w1, 15, now(), held)
    assert leases.holder(leases.get(world.door("admin"), ns, SLOTS[1])) == world.w1


@pytest.mark.usefixtures("cleanup_leases")
@pytest.mark.parametrize("who", ["controller", "controller-unbound"])
def test_the_controller_creates_renews_and_releases_the_leader_lease(
    world: World, who: str
) -> None:
    ns, door, me = world.namespace, world.door(who), f"{world.cp}_1234"
    taken = leases.acquire(door, ns, LEADER, me, 15, now(), None)
    renewed = leases.renew(door, taken, me, 15, now())
    stolen = {**renewed, "spec": {**renewed["spec"], "holderIdentity": f"{world.w1}_evil"}}
    refused(lambda: world.door("w1").replace(leases.path(ns, LEADER), stolen))
    leases.release(door, renewed, me, now())
    assert leases.holder(leases.get(world.door("admin"), ns, LEADER)) == ""


# --- a real node reconciler under these identities -------------------------------------


def test_a_control_plane_node_rotates_with_cordon_and_drain_under_the_shipped_identities(
    world: World,
    clients: Any,
    control_plane: cluster.ControlPlane,
    tmp_path: Path,
) -> None:
    """``kucero node`` with the control-plane DaemonSet's token (bound to its pod on the node)
    and the kubelet's client certificate in its host tree: it takes slot 0, cordons its Node,
    drains it as the kubelet, renews, uncordons, releases the slot and reports Converged;
    nothing it does is refused."""
    admin, ns = world.door("admin"), world.namespace
    name = f"{ns}-cp-2"
    admin.create(nodes.PATH, {"metadata": {"name": name, "labels": nodesim.CONTROL_PLANE}})
    try:
        body = "spec: {kubeadm: {restart: none}, rollout: {drain: true}}\n"
        revision = nodesim.set_desired(admin, name, body, nodesim.CONTROL_PLANE)
        evicted = f"drained-{name}"
        admin.create(f"/api/v1/namespaces/{ns}/pods", plain_pod(evicted, name))
        root = nodesim.tree(tmp_path, name, True, due=("apiserver",))
        # the kubelet's client certificate, from the cluster CA as a real kubelet's
        crt, key = control_plane.ca().issue(
            tmp_path / "kubelet", name, f"system:node:{name}", ("system:nodes",)
        )
        current = root / "var/lib/kubelet/pki/kubelet-client-current.pem"  # a link, as kubelet's
        (root / os.readlink(current).lstrip("/")).write_bytes(crt.read_bytes() + key.read_bytes())
        token = clients.bound_token(ns, shipped.CONTROL_PLANE, name)
        kubeconfig = control_plane.token_kubeconfig(f"cp-2-{ns}", token)
        sim = nodesim.start(nodesim.SimNode(name, root, True), kubeconfig, ns)
        try:
            nodesim.wait_for(
                "converged", lambda: nodesim.converged(admin, [name], revision), sims=[sim]
            )
        finally:
            sim.stop()
        node = nodes.get(admin, name)
        reported = status.decode(nodes.annotation(node, status.ANNOTATION))
        assert reported.last_rotation is not None
        assert not node["spec"].get("unschedulable")
        assert nodes.annotation(node, cordon.MARK) is None
        assert leases.holder(leases.get(admin, ns, SLOTS[0])) == ""
        pods = f"/api/v1/namespaces/{ns}/pods"
        assert "deletionTimestamp" in admin.get(f"{pods}/{evicted}")["metadata"]
        for other in world.pods.values():
            assert "deletionTimestamp" not in admin.get(f"{pods}/{other}")["metadata"]
        log = sim.log.read_text()
        assert f"cordoned {name} for its rotation" in log and f"uncordoned {name}" in log, log
        assert "forbidden" not in log.lower() and "drain left" not in log, log
        assert SECRET_VALUE not in log
    finally:
        with contextlib.suppress(kube.NotFound):
            admin.delete(nodes.path(name))
        with contextlib.suppress(kube.NotFound):
            admin.delete(leases.path(ns, SLOTS[0]))


def test_sigterm_during_a_drain_held_by_a_disruption_budget_ends_the_pass_at_once(
    world: World,
    clients: Any,
    control_plane: cluster.ControlPlane,
    tmp_path: Path,
) -> None:
    """A PodDisruptionBudget refuses the eviction, so the drain would wait ``healthTimeout``
    (5 minutes), longer than the pod's 60 s termination grace: SIGTERM went unheard until the
    kubelet's SIGKILL. Now the drain stops at once, the pass starts nothing, lifts kucero's
    cordon and gives the slot back, and the process exits well inside the grace period; the
    renewal is left whole to the next pass."""
    admin, ns = world.door("admin"), world.namespace
    name = f"{ns}-cp-3"
    admin.create(nodes.PATH, {"metadata": {"name": name, "labels": nodesim.CONTROL_PLANE}})
    held = f"held-{name}"
    budget = f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets"
    try:
        body = "spec: {kubeadm: {restart: none}, rollout: {drain: true}}\n"
        nodesim.set_desired(admin, name, body, nodesim.CONTROL_PLANE)
        pod = plain_pod(held, name)
        pod["metadata"]["labels"] = {"app": held}
        admin.create(f"/api/v1/namespaces/{ns}/pods", pod)
        # Running (a Pending pod is evicted whatever its budget says), not Ready: the budget
        # (one available at least) allows no disruption, so its eviction is refused (429)
        admin.patch(f"/api/v1/namespaces/{ns}/pods/{held}/status", {"status": {"phase": "Running"}})
        admin.create(
            budget,
            {
                "metadata": {"name": held},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": held}}},
            },
        )
        root = nodesim.tree(tmp_path, name, True, due=("apiserver",))
        crt, key = control_plane.ca().issue(
            tmp_path / "kubelet", name, f"system:node:{name}", ("system:nodes",)
        )
        current = root / "var/lib/kubelet/pki/kubelet-client-current.pem"
        (root / os.readlink(current).lstrip("/")).write_bytes(crt.read_bytes() + key.read_bytes())
        before = (root / "etc/kubernetes/pki/apiserver.crt").read_bytes()
        token = clients.bound_token(ns, shipped.CONTROL_PLANE, name)
        kubeconfig = control_plane.token_kubeconfig(f"cp-3-{ns}", token)
        sim = nodesim.start(nodesim.SimNode(name, root, True), kubeconfig, ns)
        try:
            nodesim.wait_for(
                "the drain held by the budget",
                lambda: "eviction of" in sim.log.read_text(),
                60,
                [sim],
            )
            sent = time.monotonic()
            code = sim.stop(timeout=30)
            took = time.monotonic() - sent
        finally:
            if sim.proc is not None and sim.proc.poll() is None:
                sim.proc.kill()
                sim.proc.wait()
        log = sim.log.read_text()
        assert took < 10, (took, log)  # the DaemonSet's grace is 60 s
        assert code is not None, log
        assert "cut short by SIGTERM" in log, log
        node = nodes.get(admin, name)
        assert not node["spec"].get("unschedulable") and nodes.annotation(node, cordon.MARK) is None
        assert leases.holder(leases.get(admin, ns, SLOTS[0])) == ""
        assert (root / "etc/kubernetes/pki/apiserver.crt").read_bytes() == before
        pods = f"/api/v1/namespaces/{ns}/pods"
        assert "deletionTimestamp" not in admin.get(f"{pods}/{held}")["metadata"]
    finally:
        for path in (f"{budget}/{held}", f"/api/v1/namespaces/{ns}/pods/{held}", nodes.path(name)):
            with contextlib.suppress(kube.NotFound):
                admin.delete(path)
        with contextlib.suppress(kube.NotFound):
            admin.delete(leases.path(ns, SLOTS[0]))
