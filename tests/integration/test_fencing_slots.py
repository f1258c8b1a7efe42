"""Rotation slots under attack and under a network fault, with real ``kucero node`` processes
against the real API server: slot 0 forged, rewritten, released or deleted by someone else
(written with the admin's rights: the clients must hold whatever admission lets through), a TCP
proxy that black-holes a control-plane node;
never two control-plane nodes restarting at once, and no node starting a step it no longer holds
a slot for.

"Restarting" is measured where it happens: each simulated node's kubelet stand-in records when
it stops and starts each component (monotonic clock, same process as the test), so a
kube-apiserver's down time is from its "stop" to its next "start"; two nodes' down times must
never overlap.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster import kube, leases
from reconciler.decide import desired, slots, status
from tests.controlplane import cluster
from tests.integration import faultproxy, nodesim

pytestmark = pytest.mark.controlplane

Phase = status.Phase
LEASE = 3.0  # nodesim's --rotation-lease-duration
# healthTimeout bounds the longest restart, which a peer still saying Rotating is waited for
BODY = "spec: {kubeadm: {restart: manifest-move, healthTimeout: 10s}}\n"


@pytest.fixture
def prefix() -> str:
    return f"f{uuid.uuid4().hex[:6]}"


@pytest.fixture
def forger(admin_kube: kube.Kube) -> kube.Kube:
    """Who writes the forged Leases: an identity admission does not stop. The shipped
    ValidatingAdmissionPolicy (kustomize/base/roles/lease-writes.yaml) now refuses most of these
    writes from the node identity; what these tests hold is the clients, whoever wrote it."""
    return admin_kube


@pytest.fixture
def sims(
    tmp_path: Path,
    admin_kube: kube.Kube,
    make_node: Callable[..., Any],
    control_plane: cluster.ControlPlane,
    namespace: str,
) -> Iterator[Callable[..., nodesim.SimNode]]:
    """``sims(name, due=..., start=True, kubeconfig=None, extra=())``: a control-plane Node
    with a kube-apiserver (and kube-controller-manager) stand-in, desired ``BODY``."""
    made: list[nodesim.SimNode] = []

    def make(
        name: str,
        due: tuple[str, ...] = ("apiserver",),
        manifests: tuple[str, ...] = ("kube-apiserver",),
        start: bool = True,
        kubeconfig: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> nodesim.SimNode:
        make_node(name, labels=nodesim.CONTROL_PLANE)
        nodesim.set_desired(admin_kube, name, BODY, nodesim.CONTROL_PLANE)
        root = nodesim.tree(tmp_path, name, True, due, manifests=manifests)
        sim = nodesim.SimNode(name, root, True)
        made.append(sim)
        if start:
            run(sim, kubeconfig, *extra)
        return sim

    def run(sim: nodesim.SimNode, kubeconfig: Path | None = None, *extra: str) -> None:
        nodesim.start(sim, kubeconfig or control_plane.admin_kubeconfig, namespace, *extra)

    make.run = run  # type: ignore[attr-defined]
    yield make
    nodesim.stop_all(made)
    print(nodesim.dump(made))
    nodesim.stop_standins()


def standin(sim: nodesim.SimNode) -> Any:
    return nodesim._STANDINS[sim.root]


def down(sim: nodesim.SimNode, component: str = "kube-apiserver") -> list[tuple[float, float]]:
    """When ``component`` was down on ``sim``: from each "stop" to the next "start"."""
    out, since = [], None
    for when, what, name in list(standin(sim).events):
        if name != component:
            continue
        if what == "stop" and since is None:
            since = when
        elif what == "start" and since is not None:
            out.append((since, when))
            since = None
    if since is not None:
        out.append((since, float("inf")))
    return out


def restarting(sim: nodesim.SimNode) -> list[tuple[float, float]]:
    """When any static pod of ``sim`` was down (its control plane restarting)."""
    return sorted(down(sim, "kube-apiserver") + down(sim, "kube-controller-manager"))


def overlaps(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[Any]:
    return [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]


def logged(sim: nodesim.SimNode, text: str) -> dt.datetime:
    """When ``sim`` first logged a line containing ``text``."""
    for line in sim.log.read_text().splitlines():
        if text in line:
            return dt.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f")
    raise AssertionError(f"{sim.name} never logged {text!r}")


def revision() -> str:
    return str(desired.decode(nodesim.desired_value(BODY, nodesim.CONTROL_PLANE)).revision)


def slot0(door: kube.Kube, namespace: str) -> dict[str, Any] | None:
    return leases.get(door, namespace, slots.name(0))


def status_of(door: kube.Kube, sim: nodesim.SimNode) -> status.Status | None:
    return nodesim.status_of(door, sim.name)


# --- forged values ----------------------------------------------------------------------------


def test_slot_0_forged_with_a_future_renew_time_and_huge_duration_delays_one_lease_duration(
    admin_kube: kube.Kube,
    make_node: Callable[..., Any],
    forger: kube.Kube,
    sims: Callable[..., nodesim.SimNode],
    prefix: str,
    namespace: str,
) -> None:
    """Slot 0 created first naming a worker (an existing Node) as the holder, renewed ten years
    from now for 30 years: control-plane rotation waits one lease duration, no more."""
    attacker = f"{prefix}-w-evil"
    make_node(attacker)
    future = leases.micro_time(dt.datetime.now(dt.UTC) + dt.timedelta(days=3650))
    forger.create(
        leases.collection(namespace),
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": slots.name(0)},
            "spec": {
                "holderIdentity": attacker,
                "leaseDurationSeconds": 10**9,
                "acquireTime": future,
                "renewTime": future,
            },
        },
    )
    cp = sims(f"{prefix}-cp-1")
    nodesim.wait_for(
        "slot 0 taken by the control-plane node",
        lambda: leases.holder(slot0(admin_kube, namespace)) == cp.name,
        30,
        [cp],
    )
    # from its first look at slot 0 to taking it, by its own log
    took = (
        logged(cp, "took rotation slot") - logged(cp, "reconciler.run.once: waiting: ")
    ).total_seconds()
    print(f"forged slot 0: taken {took:.2f}s after the node first saw it (lease {LEASE:g}s)")
    assert LEASE - 0.5 <= took <= LEASE + 2.0, f"slot 0 taken after {took:.1f}s"
    nodesim.wait_for(
        "converged", lambda: nodesim.converged(admin_kube, [cp.name], revision()), 60, [cp]
    )


def _delete(admin: kube.Kube, forger: kube.Kube, namespace: str, attacker: str) -> None:
    admin.delete(leases.path(namespace, slots.name(0)))


def _rewrite_holder(admin: kube.Kube, forger: kube.Kube, namespace: str, attacker: str) -> None:
    current = slot0(forger, namespace)
    assert current is not None
    now = leases.micro_time(dt.datetime.now(dt.UTC))
    spec = {**current["spec"], "holderIdentity": attacker, "renewTime": now}
    spec["leaseDurationSeconds"] = 1  # "expired" a second from now, by the wall clock
    forger.replace(leases.path(namespace, slots.name(0)), {**current, "spec": spec})


def _forge_release(admin: kube.Kube, forger: kube.Kube, namespace: str, attacker: str) -> None:
    current = slot0(forger, namespace)
    assert current is not None
    spec = {k: v for k, v in current["spec"].items() if k != "holderIdentity"}
    forger.replace(leases.path(namespace, slots.name(0)), {**current, "spec": spec})


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_delete, id="deleted-by-an-administrator"),
        pytest.param(_rewrite_holder, id="holder-rewritten"),
        pytest.param(_forge_release, id="released-by-someone-else"),
    ],
)
def test_slot_0_tampered_with_mid_restart_never_restarts_two_control_plane_nodes(
    admin_kube: kube.Kube,
    make_node: Callable[..., Any],
    forger: kube.Kube,
    sims: Callable[..., nodesim.SimNode],
    prefix: str,
    namespace: str,
    tamper: Callable[[kube.Kube, kube.Kube, str, str], None],
) -> None:
    attacker = f"{prefix}-w-evil"
    make_node(attacker)
    first = sims(f"{prefix}-cp-1", start=False)
    # its kube-apiserver stays down until healthTimeout (10 s) and the rollback bring it back
    standin(first).fail_next_start("kube-apiserver", "never")
    sims.run(first)  # type: ignore[attr-defined]
    second = sims(f"{prefix}-cp-2")
    nodesim.wait_for(
        "cp-1 restarting its kube-apiserver",
        lambda: down(first) and leases.holder(slot0(admin_kube, namespace)) == first.name,
        30,
        [first, second],
    )
    tamper(admin_kube, forger, namespace, attacker)
    nodesim.wait_for(
        "both converged",
        lambda: nodesim.converged(admin_kube, [first.name, second.name], revision()),
        90,
        [first, second],
    )
    a, b = restarting(first), restarting(second)
    assert a and b, (a, b)
    assert overlaps(a, b) == [], f"both control planes restarting at once: {overlaps(a, b)}"
    assert "LOST rotation slot" in first.log.read_text() or tamper is _forge_release


def test_a_node_that_loses_its_slot_mid_pass_starts_no_further_restart(
    admin_kube: kube.Kube,
    make_node: Callable[..., Any],
    forger: kube.Kube,
    sims: Callable[..., nodesim.SimNode],
    prefix: str,
    namespace: str,
) -> None:
    """Two restarts owed (kube-apiserver, then kube-controller-manager); the slot is rewritten
    during the first: the second is not started, the pass reports the reason and a
    later pass finishes once the forged holder has been quiet a lease duration."""
    attacker = f"{prefix}-w-evil"
    make_node(attacker)
    cp = sims(
        f"{prefix}-cp-1",
        due=("apiserver", "controller-manager.conf"),
        manifests=("kube-apiserver", "kube-controller-manager"),
        start=False,
    )
    standin(cp).stop_delay = 2.0  # a kubelet slow to notice the manifest went: a slow restart
    sims.run(cp, None, "--manifest-grace", "4", "--rotation-lease-duration", "6s")  # type: ignore[attr-defined]
    nodesim.wait_for("kube-apiserver restarting", lambda: down(cp), 30, [cp])
    _rewrite_holder(admin_kube, forger, namespace, attacker)
    reported = nodesim.wait_for(
        "the pass stopped for the lost slot",
        lambda: (
            (s := status_of(admin_kube, cp))
            and s.phase == Phase.WAITING_FOR_SLOT
            and "rotation slot lost" in s.message
            and s
        ),
        30,
        [cp],
    )
    assert "kube-controller-manager" in reported.message
    assert not down(cp, "kube-controller-manager"), "restarted without a slot"
    nodesim.wait_for(
        "converged later", lambda: nodesim.converged(admin_kube, [cp.name], revision()), 60, [cp]
    )
    assert down(cp, "kube-controller-manager")


# --- a network fault -------------------------------------------------------------------------


def test_a_control_plane_node_cut_off_mid_rotation_is_waited_out_and_reports_once_healed(
    admin_kube: kube.Kube,
    sims: Callable[..., nodesim.SimNode],
    prefix: str,
    namespace: str,
    control_plane: cluster.ControlPlane,
    tmp_path: Path,
) -> None:
    """cp-1's API connection is black-holed during its first of two restarts: it cannot renew
    its slot, so it starts no second one; cp-2 may take slot 0 once it is quiet, but waits while
    cp-1 still says Rotating (it cannot say anything else) for a lease duration plus the
    longest restart. Once healed, cp-1 reports within about a lease duration."""
    extra = ("--manifest-grace", "4", "--rotation-lease-duration", "6s")
    lease = 6.0
    with faultproxy.running(control_plane.server) as proxy:
        kubeconfig = proxy.kubeconfig(control_plane.admin_kubeconfig, tmp_path / "cp1.kubeconfig")
        first = sims(
            f"{prefix}-cp-1",
            due=("apiserver", "controller-manager.conf"),
            manifests=("kube-apiserver", "kube-controller-manager"),
            start=False,
        )
        standin(first).stop_delay = 2.0
        # its second restart would be long: kube-controller-manager comes back only after
        # healthTimeout (10 s) and a rollback, so starting it blind would overlap cp-2's turn
        standin(first).fail_next_start("kube-controller-manager", "never")
        sims.run(first, kubeconfig, *extra)  # type: ignore[attr-defined]
        second = sims(f"{prefix}-cp-2", start=False)
        sims.run(second, None, *extra)  # type: ignore[attr-defined]
        nodesim.wait_for("cp-1 restarting", lambda: down(first), 30, [first, second])
        proxy.set("blackhole")
        cut = time.monotonic()
        nodesim.wait_for(
            "cp-2 restarted its kube-apiserver", lambda: down(second), 120, [first, second]
        )
        waited = min(s for s, _ in down(second)) - cut
        proxy.set("forward")
        healed = time.monotonic()
        nodesim.wait_for(
            "cp-1 reports again",
            lambda: (s := status_of(admin_kube, first)) and s.phase != Phase.ROTATING,
            60,
            [first, second],
        )
        reported = time.monotonic() - healed
        nodesim.wait_for(
            "both converged",
            lambda: nodesim.converged(admin_kube, [first.name, second.name], revision()),
            90,
            [first, second],
        )
    bound = lease + 2 * (4.0 + 10.0) + 1.0  # lease + decide.slots.step_bound(grace 4, health 10)
    print(
        f"black-holed cp-1: cp-2 began restarting {waited:.2f}s after the cut (bound "
        f"{bound:g}s); cp-1 reported {reported:.2f}s after the fault ended"
    )
    both = overlaps(restarting(first), restarting(second))
    assert both == [], f"both control planes restarting at once: {both}"
    assert [n for n in ("kube-controller-manager",) if down(first, n)], "cp-1 never finished"
    assert waited >= lease, f"cp-2 started {waited:.1f}s after the cut"
    assert "still say Rotating" in second.log.read_text()
