"""Two ``kucero controller`` processes against the real API server, one of them behind a TCP
proxy that black-holes, delays or resets its connections (``faultproxy``), or a Lease forged by
a third party: never two leaders acting at once, and leadership back within a lease duration
once the fault ends.

Who wrote what is told apart by the seed flags: ``ctl-a`` runs with ``--renew-before=100h``,
``ctl-b`` with ``200h``, so the ``kucero.io/desired`` each writes carries its own revision. A
churn thread clears one Node's desired state every 0.15 s, so the leader writes all the time.
Two records are checked:

- the server's: a watch sees every write land, in the order the API server committed them;
  once ``ctl-b``'s revision has landed, ``ctl-a``'s never lands again;
- the processes' own: each logs (DEBUG) every write it sends through its term's door; no write
  of ``ctl-a`` is sent after its "stopped leading", which comes before ``ctl-b``'s "became
  leader".

Election times are the suite's (lease 3 s, renew deadline 2 s, retry 0.5 s).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import config, flags
from reconciler.cluster import kube, leases, nodes
from reconciler.decide import desired, policy
from tests.integration import controllers, faultproxy
from tests.integration.controllers import wait_until

pytestmark = pytest.mark.controlplane

HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
LEASE = controllers.LEASE_SECONDS
LEADER_LEASE = "kucero-leader-election"
A_FLAGS = ("--renew-before=100h",)
B_FLAGS = ("--renew-before=200h",)
NODES = ("fe-n1", "fe-n2", "fe-n3")


def revision(*given: str) -> str:
    defaults = config.settings_from(flags.parser().parse_args(["plan", *given])).policy_defaults
    return policy.load(HEAD, "policy.yaml", defaults).revision


REV_A, REV_B = revision(*A_FLAGS), revision(*B_FLAGS)


# --- what the server saw, and what the processes said -------------------------------------


class Writes:
    """Every ``kucero.io/desired`` value that lands on the test's Nodes, in commit order, with
    the time the test's watch saw it; and a churn thread that clears one every 0.15 s."""

    def __init__(self, door: kube.Kube, names: tuple[str, ...]) -> None:
        self.door, self.names = door, names
        self.landed: list[tuple[float, str, str]] = []  # (monotonic, node, revision)
        self._last: dict[str, str | None] = {}
        self.stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, daemon=True),
            threading.Thread(target=self._churn, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _watch(self) -> None:
        def on_event(event: kube.WatchEvent) -> None:
            name = nodes.name(event.obj)
            if name not in self.names:
                return
            value = nodes.annotation(event.obj, desired.ANNOTATION)
            if value != self._last.get(name) and value:
                self.landed.append((time.monotonic(), name, json.loads(value)["revision"]))
            self._last[name] = value

        self.door.watch_forever(nodes.PATH, None, on_event, self.stop)

    def _churn(self) -> None:
        i = 0
        while not self.stop.wait(0.15):
            with contextlib.suppress(kube.KubeError):
                nodes.patch_annotations(self.door, self.names[i % 3], {desired.ANNOTATION: None})
            i += 1

    def of(self, rev: str, after: float = -1.0) -> list[float]:
        return [t for t, _, r in self.landed if r == rev and t > after]

    def close(self) -> None:
        self.stop.set()


# reconciler.logs' text format: "<RFC 3339 UTC, ms> LEVEL logger: message key=value ..."
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (\w+) ([\w.]+): (.*)$")
WRITE = re.compile(r"^(POST|PUT|PATCH|DELETE) (\S+) sent with ")


def log_lines(proc: controllers.ControllerProcess) -> list[tuple[dt.datetime, str]]:
    out = []
    for line in proc.output().splitlines():
        if m := LOG_LINE.match(line):
            out.append((dt.datetime.strptime(m[1], "%Y-%m-%dT%H:%M:%S.%f"), m[4]))
    return out


def work_writes(proc: controllers.ControllerProcess) -> list[dt.datetime]:
    """When the process sent each write of its leader's work (not its own Lease renewals)."""
    return [
        t
        for t, msg in log_lines(proc)
        if (m := WRITE.match(msg)) and not re.search(r"/leases(/|$)", m[2])
    ]


def said(proc: controllers.ControllerProcess, prefix: str) -> list[dt.datetime]:
    return [t for t, msg in log_lines(proc) if msg.startswith(prefix)]


def stopped(proc: controllers.ControllerProcess) -> list[dt.datetime]:
    """When the process said its term ended (before issue 17 it said "lost leadership")."""
    return sorted(said(proc, "stopped leading") + said(proc, "lost leadership"))


def holder(door: kube.Kube, namespace: str) -> str:
    return leases.holder(leases.get(door, namespace, LEADER_LEASE))


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def sa_kubeconfig(
    namespace: str, admin_kube: kube.Kube, clients: Any, control_plane: Any
) -> Iterator[Path]:
    """The controller's ServiceAccount with the RBAC kustomize/ ships (TokenRequest token)."""
    with controllers.shipped_rbac(admin_kube, namespace):
        token = clients.token(namespace, controllers.SERVICE_ACCOUNT)
        yield control_plane.token_kubeconfig(f"kucero-{namespace}", token)


@pytest.fixture
def start(
    sa_kubeconfig: Path, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., controllers.ControllerProcess]]:
    started: list[controllers.ControllerProcess] = []

    def make(identity: str, *extra: str, kubeconfig: Path | None = None) -> Any:
        proc = controllers.ControllerProcess(
            kubeconfig or sa_kubeconfig, namespace, identity, tmp_path, *extra, log_level="DEBUG"
        )
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()
        print(f"--- {proc.identity} ---\n{proc.output()[-6000:]}")  # shown when the test fails


@pytest.fixture
def test_nodes(make_node: Callable[..., Any]) -> tuple[str, ...]:
    for name in NODES:
        make_node(name)
    return NODES


@pytest.fixture
def proxy(control_plane: Any) -> Iterator[faultproxy.FaultProxy]:
    with faultproxy.running(control_plane.server) as made:
        yield made


def a_leads_and_b_stands_by(
    start: Callable[..., controllers.ControllerProcess],
    door: kube.Kube,
    namespace: str,
    a_kubeconfig: Path | None,
) -> tuple[controllers.ControllerProcess, controllers.ControllerProcess, Writes]:
    a = start("ctl-a", *A_FLAGS, kubeconfig=a_kubeconfig)
    wait_until(lambda: holder(door, namespace) == "ctl-a", what="a leads")
    b = start("ctl-b", *B_FLAGS)
    wait_until(lambda: b.get("/readyz")[0] == 200, what="b knows the leader")
    writes = Writes(door, NODES)
    wait_until(lambda: len(writes.of(REV_A)) >= 5, what="a writing under churn")
    return a, b, writes


def assert_one_leader_at_a_time(
    a: controllers.ControllerProcess, b: controllers.ControllerProcess, writes: Writes
) -> None:
    """The server's order and both processes' own records agree: never two acting at once."""
    first_b = min(writes.of(REV_B))
    late = writes.of(REV_A, after=first_b)
    assert not late, f"{len(late)} write(s) of ctl-a landed after ctl-b's first"
    ended, became_b = stopped(a), said(b, "became leader")
    assert ended, "ctl-a never said its term ended"
    assert ended[0] <= became_b[0], f"ctl-a stopped at {ended[0]}, ctl-b led at {became_b[0]}"
    a_writes, b_writes = work_writes(a), work_writes(b)
    assert a_writes and b_writes, "no write sent is logged (DEBUG, the term's door)"
    assert max(a_writes) < min(b_writes), (max(a_writes), min(b_writes))
    # nothing of ctl-a's work was sent after it stopped (each later attempt was Fenced)
    assert max(a_writes) <= ended[0], (max(a_writes), ended[0])


# --- network faults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "delay"),
    [
        pytest.param("blackhole", 0.0, id="black-holed"),
        pytest.param("delay", 1.5, id="delayed-past-the-renew-deadline"),
        pytest.param("reset", 0.0, id="reset"),
    ],
)
def test_a_leader_cut_off_by_the_network_stops_before_the_standby_leads(
    admin_kube: kube.Kube,
    namespace: str,
    test_nodes: tuple[str, ...],
    start: Callable[..., controllers.ControllerProcess],
    proxy: faultproxy.FaultProxy,
    tmp_path: Path,
    fault: str,
    delay: float,
    sa_kubeconfig: Path,
) -> None:
    a_kubeconfig = proxy.kubeconfig(sa_kubeconfig, tmp_path / "a.kubeconfig")
    a, b, writes = a_leads_and_b_stands_by(start, admin_kube, namespace, a_kubeconfig)
    try:
        proxy.set(fault, delay)
        cut = time.monotonic()
        wait_until(lambda: writes.of(REV_B), timeout=30, what="ctl-b writing", interval=0.05)
        took = min(writes.of(REV_B)) - cut
        time.sleep(LEASE)  # anything of ctl-a's still in flight lands meanwhile
        proxy.set("forward")
        healed = time.monotonic()
        time.sleep(2 * LEASE)
        assert writes.of(REV_B, after=healed + 1.0), "ctl-b stopped writing after the fault"
    finally:
        writes.close()
    gap = min(writes.of(REV_B)) - max(writes.of(REV_A, after=-1.0) or [cut])
    print(
        f"{fault}: ctl-b's first write landed {took:.2f}s after the fault began; "
        f"no leader wrote for {gap:.2f}s"
    )
    assert_one_leader_at_a_time(a, b, writes)
    assert a.metric("kucero_leader") == 0 and b.metric("kucero_leader") == 1
    assert a.proc.poll() is None, "ctl-a must stand by again, not exit"
    assert took <= 3 * LEASE + 3.0, f"ctl-b took over after {took:.1f}s"


@pytest.mark.parametrize("fault", ["blackhole", "reset"])
def test_alone_the_leader_is_back_within_a_lease_duration_of_the_end_of_a_fault(
    admin_kube: kube.Kube,
    namespace: str,
    test_nodes: tuple[str, ...],
    start: Callable[..., controllers.ControllerProcess],
    proxy: faultproxy.FaultProxy,
    tmp_path: Path,
    fault: str,
    sa_kubeconfig: Path,
) -> None:
    a = start("ctl-a", *A_FLAGS, kubeconfig=proxy.kubeconfig(sa_kubeconfig, tmp_path / "a.kc"))
    wait_until(lambda: holder(admin_kube, namespace) == "ctl-a", what="a leads")
    writes = Writes(admin_kube, NODES)
    try:
        wait_until(lambda: len(writes.of(REV_A)) >= 5, what="a writing under churn")
        proxy.set(fault)
        time.sleep(2 * LEASE + 1.0)  # long enough for its term to end and its retries to back off
        assert stopped(a), "ctl-a kept its term through the fault"
        proxy.set("forward")
        healed = time.monotonic()
        wait_until(lambda: writes.of(REV_A, after=healed), timeout=30, what="a writing again")
        back = min(writes.of(REV_A, after=healed)) - healed
    finally:
        writes.close()
    print(f"{fault}: alone, ctl-a wrote again {back:.2f}s after the fault ended")
    # one lease duration, plus the time to list the Nodes and write on a loaded machine
    assert back <= LEASE + 1.5, f"back after {back:.1f}s"


# --- a Lease forged by a third party --------------------------------------------------------


def _forge(door: kube.Kube, namespace: str, how: str) -> None:
    current = leases.get(door, namespace, LEADER_LEASE)
    assert current is not None
    path = leases.path(namespace, LEADER_LEASE)
    if how == "delete":
        door.delete(path)
        return
    spec = dict(current["spec"])
    if how == "release":
        spec.update(holderIdentity=None, leaseDurationSeconds=1)
    else:
        spec.update(holderIdentity="attacker", leaseDurationSeconds=10**9)
    door.replace(path, {**current, "spec": {k: v for k, v in spec.items() if v is not None}})


@pytest.mark.parametrize("how", ["release", "holder", "delete"])
def test_a_forged_leader_lease_never_makes_two_leaders(
    admin_kube: kube.Kube,
    namespace: str,
    test_nodes: tuple[str, ...],
    start: Callable[..., controllers.ControllerProcess],
    how: str,
) -> None:
    a, b, writes = a_leads_and_b_stands_by(start, admin_kube, namespace, None)
    try:
        _forge(admin_kube, namespace, how)
        forged = time.monotonic()
        wait_until(lambda: stopped(a), timeout=10, what="ctl-a steps down")
        wait_until(
            lambda: writes.of(REV_B, after=forged) or writes.of(REV_A, after=forged + 0.5),
            timeout=30,
            what="a leader writing again",
        )
        time.sleep(LEASE)
    finally:
        writes.close()
    # ctl-a's writes already on the wire at the forgery land a few ms after it: not a new term
    after = sorted(
        [(t, "a") for t in writes.of(REV_A, after=forged + 0.5)]
        + [(t, "b") for t in writes.of(REV_B, after=forged)]
    )
    back = after[0][0] - forged
    print(f"forged ({how}): a leader wrote again {back:.2f}s after the forgery")
    if how != "release":  # judged on observed time: at least nearly a lease duration
        assert back >= LEASE - 1.0, f"taken over {back:.1f}s after the forgery"
    assert back <= LEASE + 3.0, f"no leader for {back:.1f}s"
    if writes.of(REV_B):
        assert_one_leader_at_a_time(a, b, writes)


def test_leader_lease_created_first_by_another_identity_delays_leadership_one_lease_duration(
    admin_kube: kube.Kube,
    namespace: str,
    test_nodes: tuple[str, ...],
    start: Callable[..., controllers.ControllerProcess],
) -> None:
    """The leader Lease created first by someone else, with a duration of 30 years and a
    renewTime in the future (written with the admin's rights; the shipped admission policy now
    refuses it from kucero's node identity, which could do it before issue 17)."""
    future = leases.micro_time(dt.datetime.now(dt.UTC) + dt.timedelta(days=3650))
    admin_kube.create(
        leases.collection(namespace),
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEADER_LEASE},
            "spec": {
                "holderIdentity": "attacker",
                "leaseDurationSeconds": 10**9,
                "acquireTime": future,
                "renewTime": future,
            },
        },
    )
    began = time.monotonic()
    a = start("ctl-a", *A_FLAGS)
    wait_until(lambda: holder(admin_kube, namespace) == "ctl-a", timeout=30, what="a leads")
    took = time.monotonic() - began
    print(f"forged-first Lease: ctl-a leads {took:.2f}s after it started")
    assert took <= LEASE + 3.0, f"led after {took:.1f}s"
    wait_until(
        lambda: all(
            (v := nodes.annotation(nodes.get(admin_kube, n), desired.ANNOTATION))
            and json.loads(v)["revision"] == REV_A
            for n in NODES
        ),
        what="ctl-a writes",
    )
    assert a.metric("kucero_leader") == 1 and a.get("/readyz")[0] == 200
