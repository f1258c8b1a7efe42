"""The whole GitOps loop with real processes: a policy ConfigMap, two ``kucero controller``
processes (one leads), simulated nodes each with its own ``kucero node`` process; and
``kucero run`` (both roles in one process). Also what a long run meets: the API server stopped
and started again, and the recovery path (API server down, a certificate already expired).

The API server restart and recovery tests use a control plane of their own, so stopping its API
server disturbs no other test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler import config, flags
from reconciler.cluster import kube, nodes
from reconciler.decide import desired, policy, status
from tests.controlplane import binaries, cluster, processes
from tests.integration import controllers, nodesim

pytestmark = pytest.mark.controlplane

Phase = status.Phase
BODY = "spec: {kubeadm: {restart: manifest-move}}\n"
POLICY = nodesim.HEAD + BODY
EDITED = nodesim.HEAD + "spec: {kubeadm: {restart: manifest-move, renewBefore: 1000h}}\n"


def revision(text: str) -> str:
    """The revision a controller with default flags gives ``text``."""
    defaults = config.settings_from(flags.parser().parse_args(["plan"])).policy_defaults
    return policy.load(text, "policy.yaml", defaults).revision


class Fleet:
    """Nodes (Node object, tree, process) and controllers of one test, stopped at its end."""

    def __init__(self, door: kube.Kube, plane: cluster.ControlPlane, namespace: str, tmp: Path):
        self.door, self.plane, self.namespace, self.tmp = door, plane, namespace, tmp
        self.prefix = f"n{uuid.uuid4().hex[:6]}"
        self.sims: list[nodesim.SimNode] = []
        self.controllers: list[controllers.ControllerProcess] = []
        self.runs: list[subprocess.Popen[bytes]] = []

    def node(
        self,
        suffix: str,
        control_plane: bool = True,
        due: tuple[str, ...] = (),
        *extra: str,
        start: bool = True,
    ) -> nodesim.SimNode:
        name = f"{self.prefix}-{suffix}"
        labels = nodesim.CONTROL_PLANE if control_plane else {}
        self.door.create(nodes.PATH, {"metadata": {"name": name, "labels": labels}})
        manifests = ("kube-apiserver",) if control_plane else ()
        root = nodesim.tree(self.tmp, name, control_plane, due, manifests=manifests)
        sim = nodesim.SimNode(name, root, control_plane)
        self.sims.append(sim)
        if start:
            nodesim.start(sim, self.plane.admin_kubeconfig, self.namespace, *extra)
        return sim

    def controller(self, identity: str) -> controllers.ControllerProcess:
        proc = controllers.ControllerProcess(
            self.plane.admin_kubeconfig, self.namespace, identity, self.tmp
        )
        self.controllers.append(proc)
        return proc

    def names(self) -> list[str]:
        return [s.name for s in self.sims]

    def converged(self, rev: str) -> Callable[[], bool]:
        return lambda: nodesim.converged(self.door, self.names(), rev)

    def close(self) -> None:
        nodesim.stop_all(self.sims)
        for ctl in self.controllers:
            ctl.stop()
            print(f"--- {ctl.identity} ---\n{ctl.output()[-3000:]}")
        print(nodesim.dump(self.sims))
        nodesim.stop_standins()
        for sim in self.sims:
            with contextlib.suppress(kube.NotFound):
                self.door.delete(nodes.path(sim.name))


@pytest.fixture
def fleet(
    admin_kube: kube.Kube, control_plane: cluster.ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[Fleet]:
    made = Fleet(admin_kube, control_plane, namespace, tmp_path)
    yield made
    made.close()


def test_policy_configmap_reaches_every_node_and_an_edit_moves_them_all(fleet: Fleet) -> None:
    controllers.put_policy(fleet.door, fleet.namespace, POLICY)
    fleet.controller("ctl-a")
    fleet.controller("ctl-b")
    for i in (1, 2, 3):
        fleet.node(f"cp-{i}", True, ("apiserver", "front-proxy-client"))
    fleet.node("w-1", False)
    fleet.node("w-2", False)
    first = revision(POLICY)
    nodesim.wait_for("every node at the policy", fleet.converged(first), 120, fleet.sims)
    renewed_after = dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    for sim in fleet.sims[:3]:
        reported = nodesim.status_of(fleet.door, sim.name)
        assert reported is not None
        for name in ("apiserver", "front-proxy-client"):
            assert dt.datetime.fromisoformat(reported.certificates[name]) > renewed_after
    controllers.put_policy(fleet.door, fleet.namespace, EDITED)
    began = time.monotonic()
    nodesim.wait_for("every node at the edit", fleet.converged(revision(EDITED)), 60, fleet.sims)
    print(f"ConfigMap edit to {len(fleet.sims)} nodes converged: {time.monotonic() - began:.2f}s")


def test_kucero_run_is_node_reconciler_and_controller_in_one_process(fleet: Fleet) -> None:
    controllers.put_policy(fleet.door, fleet.namespace, POLICY)
    election = (
        *controllers.ELECTION_FLAGS,
        f"--policy-configmap={fleet.namespace}/kucero-policy",
    )
    sims = [fleet.node(f"cp-{i}", True, ("apiserver",), start=False) for i in (1, 2)]
    for sim in sims:
        nodesim.start(sim, fleet.plane.admin_kubeconfig, fleet.namespace, *election, command="run")
    nodesim.wait_for("both converged", fleet.converged(revision(POLICY)), 120, sims)
    logs = [s.log.read_text() for s in sims]
    assert sum("became leader" in log for log in logs) >= 1, logs


# --- a control plane of our own: stopped and started again -------------------------------


@pytest.fixture(scope="module")
def own_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ControlPlane]:
    directory = tmp_path_factory.mktemp("restartable")
    with cluster.guarded(directory) as plane:
        yield plane


@pytest.fixture
def own_fleet(own_plane: cluster.ControlPlane, tmp_path: Path) -> Iterator[Fleet]:
    door = kube.connect(str(own_plane.admin_kubeconfig))
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    door.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    made = Fleet(door, own_plane, namespace, tmp_path)
    yield made
    if not processes.running(own_plane.pids["kube-apiserver"], binaries.path("kube-apiserver")):
        cluster.start_apiserver(own_plane)
    made.close()
    door.close()


def test_api_server_restart_loses_nothing_and_every_node_converges(own_fleet: Fleet) -> None:
    fleet = own_fleet
    controllers.put_policy(fleet.door, fleet.namespace, POLICY)
    fleet.controller("ctl-a")
    fleet.node(
        "cp-1", True, ("apiserver",), "--manifest-grace", "3", "--rotation-lease-duration", "5s"
    )
    fleet.node("cp-2", True, ("apiserver",))
    fleet.node("w-1", False)
    nodesim.wait_for(
        "a rotation in flight",
        lambda: any(
            (s := nodesim.status_of(fleet.door, n)) and s.phase == Phase.ROTATING
            for n in fleet.names()
        ),
        60,
        fleet.sims,
    )
    cluster.stop_apiserver(fleet.plane)
    time.sleep(4)  # the rotation in flight ends while the API server is away
    cluster.start_apiserver(fleet.plane)
    nodesim.wait_for(
        "converged after the restart", fleet.converged(revision(POLICY)), 120, fleet.sims
    )
    controllers.put_policy(fleet.door, fleet.namespace, EDITED)
    nodesim.wait_for(
        "the edit after the restart", fleet.converged(revision(EDITED)), 60, fleet.sims
    )
    assert all(s.proc is not None and s.proc.poll() is None for s in fleet.sims)
    for sim in fleet.sims[:2]:
        reported = nodesim.status_of(fleet.door, sim.name)
        assert reported is not None and reported.last_rotation is not None


def test_expired_certificate_with_api_server_down_rotates_alone_and_tells_afterwards(
    own_fleet: Fleet,
) -> None:
    fleet = own_fleet
    sim = fleet.node("cp-1", True, start=False)
    value = nodesim.desired_value(BODY, nodesim.CONTROL_PLANE)
    nodes.patch_annotations(fleet.door, sim.name, {desired.ANNOTATION: value})
    shutil.rmtree(sim.root)  # the same node, with its apiserver certificate expired yesterday
    nodesim.tree(fleet.tmp, sim.name, True, manifests=("kube-apiserver",), expired=("apiserver",))
    cluster.stop_apiserver(fleet.plane)
    nodesim.start(sim, fleet.plane.admin_kubeconfig, fleet.namespace)
    nodesim.wait_for(
        "a renewal without a slot",
        lambda: (
            "rotating WITHOUT a rotation slot" in sim.log.read_text()
            and "reconciler.run.once: pass " in sim.log.read_text()  # and that pass ended
        ),
        120,
        [sim],
    )
    assert "CRITICAL" in sim.log.read_text()
    cluster.start_apiserver(fleet.plane)
    nodesim.wait_for(
        "the Event once the API server is back",
        lambda: (
            "RotatedWithoutSlot" in {e["reason"] for e in nodesim.node_events(fleet.door, sim.name)}
        ),
        90,
        [sim],
    )
    rev = str(desired.decode(value).revision)
    nodesim.wait_for("converged", lambda: nodesim.converged(fleet.door, [sim.name], rev), 60, [sim])
