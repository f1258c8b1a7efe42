"""``kucero node`` as a real process against the real API server: simulated nodes (a Node
object, a fabricated tree, one process each) converge to ``kucero.io/desired``, take turns
through rotation slots, report ``kucero.io/status`` and Events, and survive bad input.

``kucero.io/desired`` is written by the test, as the controller would, so these tests are about
the node reconciler alone; the end-to-end loop with controllers is in test_cluster_loop.py.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster import kube, leases, nodes
from reconciler.decide import desired, slots, status
from reconciler.model import kubeadm
from tests.controlplane import cluster
from tests.deploy import shipped
from tests.integration import nodesim

pytestmark = pytest.mark.controlplane

Phase = status.Phase
RESTARTS = "spec: {kubeadm: {restart: manifest-move}}\n"


@pytest.fixture
def prefix() -> str:
    return f"n{uuid.uuid4().hex[:6]}"


@pytest.fixture
def sims(
    tmp_path: Path,
    admin_kube: kube.Kube,
    make_node: Callable[..., Any],
    control_plane: cluster.ControlPlane,
    namespace: str,
) -> Iterator[Callable[..., nodesim.SimNode]]:
    """``sims(name, control_plane=True, due=(), manifests=(), desired=RESTARTS, start=True)``:
    a Node, its tree and its ``kucero node`` process; all stopped after the test."""
    made: list[nodesim.SimNode] = []
    admin_kubeconfig = control_plane.admin_kubeconfig

    def make(
        name: str,
        control_plane: bool = True,
        due: tuple[str, ...] = (),
        manifests: tuple[str, ...] = (),
        desired_body: str | None = RESTARTS,
        start: bool = True,
        kubeconfig: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> nodesim.SimNode:
        labels = nodesim.CONTROL_PLANE if control_plane else {}
        make_node(name, labels=labels)
        if desired_body is not None:
            nodesim.set_desired(admin_kube, name, desired_body, labels)
        root = nodesim.tree(tmp_path, name, control_plane, due, manifests=manifests)
        sim = nodesim.SimNode(name, root, control_plane)
        made.append(sim)
        if start:
            nodesim.start(sim, kubeconfig or admin_kubeconfig, namespace, *extra)
        return sim

    def start_later(sim: nodesim.SimNode, *extra: str) -> nodesim.SimNode:
        return nodesim.start(sim, admin_kubeconfig, namespace, *extra)

    make.start = start_later  # type: ignore[attr-defined]
    yield make
    nodesim.stop_all(made)
    nodesim.stop_standins()


def test_nodes_converge_renew_due_certificates_and_report_the_revision(
    admin_kube: kube.Kube, sims: Callable[..., nodesim.SimNode], prefix: str
) -> None:
    fleet = [
        sims(f"{prefix}-cp-1", due=("apiserver", "admin.conf"), manifests=("kube-apiserver",)),
        sims(f"{prefix}-cp-2", due=("etcd-server",), manifests=("etcd",)),
        sims(f"{prefix}-w-1", control_plane=False),
    ]
    revision = str(desired.decode(nodesim.desired_value(RESTARTS)).revision)
    names = [s.name for s in fleet]
    nodesim.wait_for(
        "every node Converged at the revision",
        lambda: nodesim.converged(admin_kube, names, revision),
        sims=fleet,
    )
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    for sim, renewed in ((fleet[0], ("apiserver", "admin.conf")), (fleet[1], ("etcd-server",))):
        reported = nodesim.status_of(admin_kube, sim.name)
        assert reported is not None and reported.last_rotation is not None
        for name in renewed:
            assert dt.datetime.fromisoformat(reported.certificates[name]) > soon, name
        reasons = {e["reason"] for e in nodesim.node_events(admin_kube, sim.name)}
        assert "NearingExpiry" in reasons, reasons
    worker = nodesim.status_of(admin_kube, fleet[2].name)
    assert worker is not None and worker.last_rotation is None and worker.certificates["ca"]


def test_new_desired_revision_reaches_every_node_without_restarting_them(
    admin_kube: kube.Kube, sims: Callable[..., nodesim.SimNode], prefix: str
) -> None:
    fleet = [sims(f"{prefix}-cp-1"), sims(f"{prefix}-w-1", control_plane=False)]
    names = [s.name for s in fleet]
    first = str(desired.decode(nodesim.desired_value(RESTARTS)).revision)
    nodesim.wait_for(
        "first revision", lambda: nodesim.converged(admin_kube, names, first), sims=fleet
    )
    body = "spec: {kubeadm: {restart: manifest-move, renewBefore: 1000h}}\n"
    (second,) = {nodesim.set_desired(admin_kube, s.name, body) for s in fleet}
    assert second != first
    began = time.monotonic()
    nodesim.wait_for(
        "second revision", lambda: nodesim.converged(admin_kube, names, second), 15, fleet
    )
    assert time.monotonic() - began < 10
    assert all(s.proc is not None and s.proc.poll() is None for s in fleet)


class Recorder:
    """Watches the Nodes' status and the slot Leases; keeps every observed state with its time."""

    def __init__(self, door: kube.Kube, names: list[str], namespace: str) -> None:
        self.door, self.names, self.namespace = door, set(names), namespace
        self.phases: dict[str, str] = {}
        self.overlaps: list[tuple[float, list[str]]] = []
        self.rotated: list[str] = []
        self.holders: list[tuple[float, str, str]] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._nodes, daemon=True),
            threading.Thread(target=self._leases, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _nodes(self) -> None:
        def on_event(event: kube.WatchEvent) -> None:
            name = event.obj["metadata"]["name"]
            if name not in self.names:
                return
            value = status.decode(nodes.annotation(event.obj, status.ANNOTATION))
            self.phases[name] = value.phase if value else ""
            rotating = sorted(n for n, p in self.phases.items() if p == Phase.ROTATING)
            if value and value.phase == Phase.ROTATING:
                self.rotated.append(name)
            if len(rotating) > 1:
                self.overlaps.append((time.monotonic(), rotating))

        self.door.watch_forever(nodes.PATH, None, on_event, self.stop)

    def _leases(self) -> None:
        def on_event(event: kube.WatchEvent) -> None:
            self.holders.append(
                (time.monotonic(), event.obj["metadata"]["name"], leases.holder(event.obj))
            )

        self.door.watch_forever(leases.collection(self.namespace), None, on_event, self.stop)


def test_control_plane_nodes_never_rotate_together(
    admin_kube: kube.Kube, sims: Callable[..., nodesim.SimNode], prefix: str, namespace: str
) -> None:
    body = "spec: {kubeadm: {restart: manifest-move}, rollout: {maxConcurrentNodes: 3}}\n"
    names = [f"{prefix}-cp-{i}" for i in (1, 2, 3)]
    recorder = Recorder(admin_kube, names, namespace)
    try:
        fleet = [
            sims(n, due=("apiserver",), manifests=("kube-apiserver",), desired_body=body)
            for n in names
        ]
        revision = str(desired.decode(nodesim.desired_value(body, nodesim.CONTROL_PLANE)).revision)
        nodesim.wait_for(
            "all three rotated and converged",
            lambda: nodesim.converged(admin_kube, names, revision),
            90,
            fleet,
        )
    finally:
        recorder.stop.set()
    assert sorted(set(recorder.rotated)) == names, recorder.rotated
    assert recorder.overlaps == [], recorder.overlaps
    # every control-plane rotation went through slot 0, each holder in turn
    held = [h for _, lease, h in recorder.holders if h]
    assert {lease for _, lease, h in recorder.holders if h} == {slots.name(0)}
    assert set(held) == set(names)


def test_sigkill_of_a_slot_holder_lets_another_node_proceed_once_its_last_step_is_surely_over(
    admin_kube: kube.Kube, sims: Callable[..., nodesim.SimNode], prefix: str, namespace: str
) -> None:
    # A short healthTimeout bounds the longest restart (decide.slots.step_bound), which a peer
    # still saying Rotating makes the next control-plane node wait for.
    body = "spec: {kubeadm: {restart: manifest-move, healthTimeout: 10s}}\n"
    slow = sims(
        f"{prefix}-cp-1",
        due=("apiserver",),
        manifests=("kube-apiserver",),
        desired_body=body,
        start=False,
    )
    # its kube-apiserver never comes back: the restart waits out healthTimeout holding slot 0
    nodesim._STANDINS[slow.root].fail_next_start("kube-apiserver", "never")
    sims.start(slow)  # type: ignore[attr-defined]
    lease_path = leases.path(namespace, slots.name(0))
    nodesim.wait_for(
        "the first node holds slot 0 and says Rotating",
        lambda: (
            leases.holder(leases.get(admin_kube, namespace, slots.name(0))) == slow.name
            and (s := nodesim.status_of(admin_kube, slow.name))
            and s.phase == Phase.ROTATING
        ),
        sims=[slow],
    )
    slow.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    other = sims(
        f"{prefix}-cp-2", due=("apiserver",), manifests=("kube-apiserver",), desired_body=body
    )
    revision = str(desired.decode(nodesim.desired_value(body, nodesim.CONTROL_PLANE)).revision)
    nodesim.wait_for(
        "the second node converged",
        lambda: nodesim.converged(admin_kube, [other.name], revision),
        60,
        [slow, other],
    )
    took = time.monotonic() - killed_at
    # slot 0 quiet for the lease (3 s), and cp-1's Rotating status quiet for the lease plus
    # the longest restart (2 x (0.5 s + 10 s) + 1 s): cp-1 might still have been in one
    bound = 3.0 + slots.step_bound(0.5, 10.0)
    assert took >= bound - 1.0, f"went ahead after {took:.1f}s"
    log = other.log.read_text()
    assert f"{slow.name} still say Rotating" in log
    assert "LeaseMissing" not in log
    assert admin_kube.get(lease_path)["spec"].get("leaseTransitions", 0) >= 1


def test_paused_changes_nothing_and_shows_paused(
    admin_kube: kube.Kube, sims: Callable[..., nodesim.SimNode], prefix: str
) -> None:
    body = "spec: {paused: true, kubeadm: {restart: manifest-move}}\n"
    sim = sims(
        f"{prefix}-cp-1",
        due=("apiserver",),
        manifests=("kube-apiserver",),
        desired_body=body,
        start=False,
    )
    before = nodesim.hashes(sim.root)
    sims.start(sim)  # type: ignore[attr-defined]
    nodesim.wait_for(
        "Paused",
        lambda: (s := nodesim.status_of(admin_kube, sim.name)) and s.phase == Phase.PAUSED,
        sims=[sim],
    )
    time.sleep(1.0)
    assert nodesim.hashes(sim.root) == before
    reported = nodesim.status_of(admin_kube, sim.name)
    assert reported is not None and "renew apiserver" in reported.message
    assert reported.last_rotation is None


def test_garbage_desired_keeps_the_last_good_state_reports_failed_and_changes_nothing(
    admin_kube: kube.Kube, sims: Callable[..., nodesim.SimNode], prefix: str
) -> None:
    sim = sims(f"{prefix}-w-1", control_plane=False)
    good = str(desired.decode(nodesim.desired_value(RESTARTS)).revision)
    nodesim.wait_for(
        "converged", lambda: nodesim.converged(admin_kube, [sim.name], good), sims=[sim]
    )
    before = nodesim.hashes(sim.root)
    for garbage, why in (
        ("{not json", "is not JSON"),
        ('{"revision": "x", "spec": {"kubeadm": {"renewBefore": "-1h"}}}', "renewBefore"),
    ):
        nodes.patch_annotations(admin_kube, sim.name, {desired.ANNOTATION: garbage})
        reported = nodesim.wait_for(
            f"Failed because {why}",
            lambda why=why: (
                (s := nodesim.status_of(admin_kube, sim.name))
                and s.phase == Phase.FAILED
                and why in s.message
                and s
            ),
            sims=[sim],
        )
        assert reported.revision == good and f"keeping revision {good}" in reported.message
    assert nodesim.hashes(sim.root) == before
    reasons = [e["reason"] for e in nodesim.node_events(admin_kube, sim.name)]
    assert reasons.count("InvalidDesiredState") == 2, reasons
    assert sim.proc is not None and sim.proc.poll() is None
    fixed = nodesim.set_desired(admin_kube, sim.name, "spec: {checkInterval: 2h}\n")
    nodesim.wait_for(
        "converged again", lambda: nodesim.converged(admin_kube, [sim.name], fixed), sims=[sim]
    )


@pytest.mark.parametrize(
    "holder",
    [
        pytest.param("Not A Node!", id="garbage-holder"),
        pytest.param("node-that-does-not-exist", id="holder-whose-node-is-gone"),
    ],
)
def test_hand_edited_lease_holder_delays_rotation_by_one_lease_duration_at_most(
    admin_kube: kube.Kube,
    sims: Callable[..., nodesim.SimNode],
    prefix: str,
    namespace: str,
    holder: str,
) -> None:
    now = dt.datetime.now(dt.UTC)
    admin_kube.create(
        leases.collection(namespace),
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": slots.name(0)},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 3600,
                "renewTime": leases.micro_time(now),
            },
        },
    )
    began = time.monotonic()
    sim = sims(f"{prefix}-cp-1", due=("apiserver",), manifests=("kube-apiserver",))
    nodesim.wait_for(
        "slot 0 taken",
        lambda: leases.holder(leases.get(admin_kube, namespace, slots.name(0))) == sim.name,
        sims=[sim],
    )
    took = time.monotonic() - began
    # judged on this node's clock: one lease duration (3 s), not the 3600 s written
    assert 2.0 <= took <= 20.0, f"took slot 0 after {took:.1f}s"
    revision = str(desired.decode(nodesim.desired_value(RESTARTS, nodesim.CONTROL_PLANE)).revision)
    nodesim.wait_for(
        "converged", lambda: nodesim.converged(admin_kube, [sim.name], revision), sims=[sim]
    )
    lease = admin_kube.get(leases.path(namespace, slots.name(0)))
    assert lease["spec"]["leaseTransitions"] == 1


def test_node_deleted_mid_pass_finishes_the_pass_and_comes_back(
    admin_kube: kube.Kube, sims: Callable[..., nodesim.SimNode], prefix: str
) -> None:
    sim = sims(
        f"{prefix}-cp-1",
        due=("apiserver",),
        manifests=("kube-apiserver",),
        extra=("--manifest-grace", "3", "--rotation-lease-duration", "5s"),
    )
    manifest = sim.root / "etc/kubernetes/manifests/kube-apiserver.yaml"
    nodesim.wait_for(
        "Rotating",
        lambda: (s := nodesim.status_of(admin_kube, sim.name)) and s.phase == Phase.ROTATING,
        sims=[sim],
    )
    admin_kube.delete(nodes.path(sim.name))
    nodesim.wait_for(
        "the manifest back",
        lambda: manifest.exists() and "status not written" in sim.log.read_text(),
        30,
        [sim],
    )
    assert sim.proc is not None and sim.proc.poll() is None
    admin_kube.create(nodes.PATH, {"metadata": {"name": sim.name, "labels": nodesim.CONTROL_PLANE}})
    revision = nodesim.set_desired(admin_kube, sim.name, RESTARTS, nodesim.CONTROL_PLANE)
    nodesim.wait_for(
        "converged", lambda: nodesim.converged(admin_kube, [sim.name], revision), sims=[sim]
    )
    reported = nodesim.status_of(admin_kube, sim.name)
    assert reported is not None and reported.last_rotation is not None


def test_sigterm_finishes_the_pass_releases_the_slot_and_exits_0(
    admin_kube: kube.Kube, sims: Callable[..., nodesim.SimNode], prefix: str, namespace: str
) -> None:
    sim = sims(
        f"{prefix}-cp-1",
        due=("apiserver",),
        manifests=("kube-apiserver",),
        extra=("--manifest-grace", "5", "--rotation-lease-duration", "7s"),
    )
    nodesim.wait_for(
        "holding slot 0",
        lambda: leases.holder(leases.get(admin_kube, namespace, slots.name(0))) == sim.name,
        sims=[sim],
    )
    began = time.monotonic()
    assert sim.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - began < 2.0  # the manifest-move wait ended early
    assert leases.holder(leases.get(admin_kube, namespace, slots.name(0))) == ""
    assert (sim.root / "etc/kubernetes/manifests/kube-apiserver.yaml").exists()
    reported = nodesim.status_of(admin_kube, sim.name)
    assert reported is not None
    assert reported.phase == Phase.FAILED and "interrupted by SIGTERM" in reported.message


def test_node_reconciler_works_with_a_service_account_token_and_the_shipped_rbac(
    admin_kube: kube.Kube,
    sims: Callable[..., nodesim.SimNode],
    prefix: str,
    namespace: str,
    control_plane: cluster.ControlPlane,
    clients: Any,
) -> None:
    # The worker identity's RBAC exactly as kustomize/ ships it (the single source).
    # A token bound to a Pod on the node, as the DaemonSet pod's: the admission policies
    # shipped with the RBAC let a node write its own Node and slots only with it.
    with shipped.apply_identities(admin_kube, namespace, shipped.NODE):
        token = clients.bound_token(namespace, shipped.NODE, f"{prefix}-cp-1")
        kubeconfig = control_plane.token_kubeconfig(f"kucero-node-{namespace}", token)
        sim = sims(
            f"{prefix}-cp-1",
            due=("apiserver",),
            manifests=("kube-apiserver",),
            kubeconfig=kubeconfig,
        )
        revision = str(
            desired.decode(nodesim.desired_value(RESTARTS, nodesim.CONTROL_PLANE)).revision
        )
        nodesim.wait_for(
            "converged as the service account",
            lambda: nodesim.converged(admin_kube, [sim.name], revision),
            sims=[sim],
        )
        reasons = {e["reason"] for e in nodesim.node_events(admin_kube, sim.name)}
        assert "NearingExpiry" in reasons
        assert leases.get(admin_kube, namespace, slots.name(0)) is not None
        log = sim.log.read_text()
        assert "Forbidden" not in log and "forbidden" not in log, log


def test_metrics_serve_certificate_expiry_and_counters(
    admin_kube: kube.Kube, sims: Callable[..., nodesim.SimNode], prefix: str
) -> None:
    port = cluster.free_port()
    sim = sims(
        f"{prefix}-cp-1",
        due=("apiserver",),
        manifests=("kube-apiserver",),
        extra=("--metrics-addr", f"127.0.0.1:{port}"),
    )
    revision = str(desired.decode(nodesim.desired_value(RESTARTS, nodesim.CONTROL_PLANE)).revision)
    nodesim.wait_for(
        "converged", lambda: nodesim.converged(admin_kube, [sim.name], revision), sims=[sim]
    )
    expiry = dict(nodesim.metric(port, "kucero_certificate_expiration_timestamp_seconds{"))
    apiserver = [v for k, v in expiry.items() if 'name="apiserver"' in k]
    assert apiserver and apiserver[0] > time.time() + 300 * 86400, expiry
    assert any('name="ca"' in k and 'kind="ca"' in k for k in expiry)
    renewals = dict(nodesim.metric(port, "kucero_renewals_total{"))
    assert renewals == {
        f'kucero_renewals_total{{name="apiserver",node="{sim.name}",result="success"}}': 1.0
    }, renewals
    restarts = dict(nodesim.metric(port, "kucero_restarts_total{"))
    assert restarts == {
        f'kucero_restarts_total{{component="kube-apiserver",node="{sim.name}",result="restarted"}}': 1.0
    }, restarts
    assert nodesim.metric(port, "kucero_reconcile_duration_seconds_count")[0][1] >= 1
    assert nodesim.metric(port, "kucero_rotation_slot_wait_seconds_count")[0][1] == 1


@pytest.mark.parametrize(
    "cordoned_by_admin",
    [
        pytest.param(False, id="kucero-cordons-and-uncordons"),
        pytest.param(True, id="an-administrators-cordon-stays"),
    ],
)
def test_rollout_cordon_never_undoes_an_administrators_cordon(
    admin_kube: kube.Kube,
    sims: Callable[..., nodesim.SimNode],
    prefix: str,
    cordoned_by_admin: bool,
) -> None:
    body = "spec: {kubeadm: {restart: manifest-move}, rollout: {cordon: true}}\n"
    sim = sims(
        f"{prefix}-cp-1",
        due=("apiserver",),
        manifests=("kube-apiserver",),
        desired_body=body,
        start=False,
        extra=(),
    )
    if cordoned_by_admin:
        admin_kube.patch(nodes.path(sim.name), {"spec": {"unschedulable": True}})
    sims.start(sim, "--manifest-grace", "2", "--rotation-lease-duration", "4s")  # type: ignore[attr-defined]
    nodesim.wait_for(
        "cordoned while rotating",
        lambda: (
            (n := nodes.get(admin_kube, sim.name)).get("spec", {}).get("unschedulable")
            and (s := status.decode(nodes.annotation(n, status.ANNOTATION)))
            and s.phase == Phase.ROTATING
        ),
        sims=[sim],
    )
    revision = str(desired.decode(nodesim.desired_value(body, nodesim.CONTROL_PLANE)).revision)
    nodesim.wait_for(
        "converged", lambda: nodesim.converged(admin_kube, [sim.name], revision), sims=[sim]
    )
    node = nodes.get(admin_kube, sim.name)
    assert bool(node.get("spec", {}).get("unschedulable")) is cordoned_by_admin
    assert nodes.annotation(node, "kucero.io/cordoned") is None


def test_default_kubelet_restart_is_judged_per_desired_state_not_at_start_up(
    admin_kube: kube.Kube,
    sims: Callable[..., nodesim.SimNode],
    prefix: str,
    control_plane: cluster.ControlPlane,
    namespace: str,
) -> None:
    # A host root that is not PID 1's, no --kubelet-restart-command: the daemon starts, and a
    # desired state that restarts the kubelet with the default gets a pass that changes nothing
    # and says so (status, one Event), retried with back-off, never a crash loop.
    sim = sims(f"{prefix}-cp-1", due=("apiserver",), desired_body="", start=False)
    nodesim.start(sim, control_plane.admin_kubeconfig, namespace, kubelet_restart=None)
    before = nodesim.hashes(sim.root)
    refused = nodesim.wait_for(
        "Failed: the default kubelet restart refused",
        lambda: (
            (s := nodesim.status_of(admin_kube, sim.name))
            and s.phase == Phase.FAILED
            and "--kubelet-restart-command" in s.message
            and s
        ),
        sims=[sim],
    )
    assert "kubelet.restart: none" in refused.message and "PID 1" in refused.message
    time.sleep(4)  # two more tries (1-2 s, then 2-4 s): still one Event, still running
    reasons = [e["reason"] for e in nodesim.node_events(admin_kube, sim.name)]
    assert reasons.count("HostCommandRefused") == 1, reasons
    assert sim.proc is not None and sim.proc.poll() is None
    assert nodesim.hashes(sim.root) == before
    body = "spec: {kubelet: {restart: none}, kubeadm: {restart: none}}\n"
    never = nodesim.set_desired(admin_kube, sim.name, body, nodesim.CONTROL_PLANE)
    nodesim.wait_for(
        "converged with kubelet.restart: none",
        lambda: nodesim.converged(admin_kube, [sim.name], never),
        sims=[sim],
    )
    reported = nodesim.status_of(admin_kube, sim.name)
    assert reported is not None and reported.last_rotation is not None  # apiserver renewed


def test_kucero_status_shows_one_line_per_node_from_the_annotations(
    admin_kube: kube.Kube,
    sims: Callable[..., nodesim.SimNode],
    prefix: str,
    control_plane: cluster.ControlPlane,
    make_node: Callable[..., Any],
) -> None:
    body = "spec: {kubeadm: {restart: none}}\n"
    fleet = [
        sims(f"{prefix}-cp-1", due=("apiserver",), desired_body=body),
        sims(f"{prefix}-w-1", control_plane=False, desired_body=body),
    ]
    make_node(f"{prefix}-x-1")  # kucero never reached it
    revision = str(desired.decode(nodesim.desired_value(body)).revision)
    names = [s.name for s in fleet]
    nodesim.wait_for(
        "converged", lambda: nodesim.converged(admin_kube, names, revision), sims=fleet
    )
    fleet[1].stop()  # a node that does not follow a new desired state
    newer = nodesim.set_desired(admin_kube, fleet[1].name, "spec: {checkInterval: 2h}\n")

    def kucero_status(*extra: str) -> str:
        argv = [sys.executable, "-m", "reconciler", "status"]
        argv += ["--kubeconfig", str(control_plane.admin_kubeconfig), *extra]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    rows = {r["node"]: r for r in json.loads(kucero_status("-o", "json"))}
    cp, worker, other = (rows[f"{prefix}-{n}"] for n in ("cp-1", "w-1", "x-1"))
    assert (cp["phase"], cp["revision"], cp["upToDate"]) == ("Converged", revision, True)
    reported = nodesim.status_of(admin_kube, fleet[0].name)
    assert reported is not None and reported.last_rotation is not None
    assert cp["lastRotation"] == status.rfc3339(reported.last_rotation)
    renew_before = dt.timedelta(hours=720)
    leaves = {n: t for n, t in reported.certificates.items() if n in kubeadm.NAMES}
    first = min(leaves, key=lambda n: leaves[n])
    assert cp["nextRenewalCertificate"] == first
    assert cp["nextRenewal"] == status.rfc3339(
        dt.datetime.fromisoformat(leaves[first]) - renew_before
    )
    assert (worker["revision"], worker["desiredRevision"], worker["upToDate"]) == (
        revision,
        newer,
        False,
    )
    assert worker["nextRenewal"] is None  # a worker has no kubeadm certificate
    assert (other["phase"], other["upToDate"], other["desiredRevision"]) == ("<none>", None, None)
    table = kucero_status().splitlines()
    assert table[0].split()[:4] == ["NODE", "PHASE", "REVISION", "UP-TO-DATE"]
    lines = {line.split()[0]: line.split() for line in table[1:]}
    assert lines[fleet[0].name][1:4] == ["Converged", revision, "yes"]
    assert lines[fleet[1].name][1:4] == ["Converged", revision, "no"]
    assert lines[f"{prefix}-x-1"][1:4] == ["<none>", "<none>", "-"]
