"""``kucero controller`` processes against the real API server, with the shipped RBAC and a
TokenRequest token: the policy ConfigMap reaches every Node's ``kucero.io/desired``, overrides
follow labels, invalid policies are refused with an Event while the last valid one stays, and
leadership moves on SIGKILL (after the lease duration) and SIGTERM (at once)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import config, flags
from reconciler.cluster import events, kube, leases, nodes
from reconciler.decide import desired, policy
from tests.integration import controllers
from tests.integration.controllers import put_policy, wait_until

pytestmark = pytest.mark.controlplane

HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
EDGE = HEAD + (
    "spec:\n  kubeadm: {renewBefore: 500h}\n  overrides:\n"
    "  - nodeSelector: {matchLabels: {pool: edge}}\n    spec: {kubeadm: {renewBefore: 1440h}}\n"
)


def revision(text: str, *given: str) -> str:
    """The revision a controller started with the flags ``given`` gives ``text``."""
    defaults = config.settings_from(flags.parser().parse_args(["plan", *given])).policy_defaults
    return policy.load(text, "policy.yaml", defaults).revision


def desired_of(admin_kube: kube.Kube, name: str) -> dict[str, Any] | None:
    value = nodes.annotation(nodes.get(admin_kube, name), desired.ANNOTATION)
    return None if value is None else json.loads(value)


def all_at(admin_kube: kube.Kube, names: list[str], rev: str) -> Callable[[], bool]:
    return lambda: all((desired_of(admin_kube, n) or {}).get("revision") == rev for n in names)


@pytest.fixture
def sa_kubeconfig(
    namespace: str, admin_kube: kube.Kube, clients: Any, control_plane: Any
) -> Iterator[Path]:
    """A kubeconfig for the controller's ServiceAccount, with the RBAC kustomize/ ships
    (TokenRequest token)."""
    with controllers.shipped_rbac(admin_kube, namespace):
        token = clients.token(namespace, controllers.SERVICE_ACCOUNT)
        yield control_plane.token_kubeconfig(f"kucero-{namespace}", token)


@pytest.fixture
def start(
    sa_kubeconfig: Path, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., controllers.ControllerProcess]]:
    started: list[controllers.ControllerProcess] = []

    def make(identity: str = "ctl-a", *extra: str, kubeconfig: Path | None = None) -> Any:
        proc = controllers.ControllerProcess(
            kubeconfig or sa_kubeconfig, namespace, identity, tmp_path, *extra
        )
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()
        print(f"--- {proc.identity} ---\n{proc.output()}")  # shown when the test fails


def test_policy_reaches_every_node_and_an_edit_moves_them_all(
    admin_kube: kube.Kube, namespace: str, make_node: Any, start: Any
) -> None:
    names = [f"ctl-n{i}" for i in range(3)]
    for name in names:
        make_node(name)
    first = HEAD + "spec:\n  kubeadm: {renewBefore: 100h}\n"
    put_policy(admin_kube, namespace, first)
    ctl = start()
    wait_until(all_at(admin_kube, names, revision(first)), what="first revision on every node")
    spec = desired.decode(json.dumps(desired_of(admin_kube, names[0])))
    assert spec.kubeadm.renew_before.total_seconds() == 100 * 3600
    assert ctl.metric(f'kucero_policy_info{{revision="{revision(first)}"}}') == 1

    second = HEAD + "spec:\n  kubeadm: {renewBefore: 200h}\n"
    put_policy(admin_kube, namespace, second)
    wait_until(all_at(admin_kube, names, revision(second)), what="edited revision on every node")
    assert ctl.metric("kucero_policy_valid") == 1
    assert ctl.get("/readyz")[0] == 200 and ctl.get("/healthz")[0] == 200


def test_no_configmap_means_defaults_and_seed_flags(
    admin_kube: kube.Kube, make_node: Any, start: Any
) -> None:
    make_node("ctl-seed")
    start("ctl-a", "--renew-before=48h")
    expected = revision(HEAD, "--renew-before=48h")
    wait_until(all_at(admin_kube, ["ctl-seed"], expected), what="defaults with the seed flag")
    spec = desired.decode(json.dumps(desired_of(admin_kube, "ctl-seed")))
    assert spec.kubeadm.renew_before.total_seconds() == 48 * 3600


def test_override_follows_labels_and_relabelling_moves_that_node_alone(
    admin_kube: kube.Kube, namespace: str, make_node: Any, start: Any
) -> None:
    make_node("ctl-edge", labels={"pool": "edge"})
    make_node("ctl-core", labels={"pool": "core"})
    put_policy(admin_kube, namespace, EDGE)
    start()
    both = ["ctl-edge", "ctl-core"]
    wait_until(all_at(admin_kube, both, revision(EDGE)), what="policy on both nodes")
    assert desired_of(admin_kube, "ctl-edge")["override"] == 0  # type: ignore[index]
    assert desired_of(admin_kube, "ctl-edge")["spec"]["kubeadm"]["renewBefore"] == "1440h0m0s"  # type: ignore[index]
    assert desired_of(admin_kube, "ctl-core")["override"] is None  # type: ignore[index]
    assert desired_of(admin_kube, "ctl-core")["spec"]["kubeadm"]["renewBefore"] == "500h0m0s"  # type: ignore[index]

    edge_version = nodes.get(admin_kube, "ctl-edge")["metadata"]["resourceVersion"]
    nodes.patch_labels(admin_kube, "ctl-core", {"pool": "edge"})
    wait_until(
        lambda: (desired_of(admin_kube, "ctl-core") or {}).get("override") == 0,
        what="relabelled node moved into the override",
    )
    nodes.patch_labels(admin_kube, "ctl-core", {"pool": None})
    wait_until(
        lambda: (desired_of(admin_kube, "ctl-core") or {}).get("override", 0) is None,
        what="unlabelled node moved out of the override",
    )
    # the other node was not written to
    assert nodes.get(admin_kube, "ctl-edge")["metadata"]["resourceVersion"] == edge_version


INVALID = [
    pytest.param(None, "kucero-policy: the ConfigMap has no key 'policy.yaml'", id="no-key"),
    pytest.param("- a\n- b\n", "the policy must be a YAML mapping, got list", id="yaml-list"),
    pytest.param("just text\n", "the policy must be a YAML mapping, got str", id="yaml-scalar"),
    pytest.param(
        "apiVersion: kucero.io/v2\nkind: RotationPolicy\n",
        "apiVersion: unsupported apiVersion 'kucero.io/v2'",
        id="unknown-api-version",
    ),
    pytest.param("a: [\n", "invalid YAML", id="broken-yaml"),
    pytest.param(
        HEAD + "spec:\n  kubeadm:\n    renewBefore: -3h\n",
        "spec.kubeadm.renewBefore: '-3h' is not a valid duration",
        id="negative-duration",
    ),
    pytest.param(
        HEAD + "spec:\n  kubeadm:\n    renewbefore: 1h\n",
        "spec.kubeadm: unknown field 'renewbefore'",
        id="unknown-field",
    ),
    pytest.param(
        HEAD + "spec:\n  kubeadm:\n    renewBefore: 8760h\n",
        "spec.kubeadm.renewBefore: 8760h must be shorter than kubeadm.certificateValidity",
        id="renew-before-equals-validity",
    ),
    pytest.param(
        HEAD + "spec:\n  kubeadm: {restart: none}\n  kubeadm: {renewBefore: 1h}\n",
        "duplicate key 'kubeadm'",
        id="duplicate-key",
    ),
    pytest.param(
        HEAD + "spec:\n  csrSigner:\n    allowedIPRanges: [10.0.0.1/8]\n",
        "spec.csrSigner.allowedIPRanges[0]: '10.0.0.1/8' is not a CIDR",
        id="cidr-with-host-bits",
    ),
]


def validate_policy_output(text: str, tmp_path: Path) -> str:
    """What ``kucero validate-policy policy.yaml`` prints for ``text``."""
    (tmp_path / "policy.yaml").write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate-policy", "policy.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout
    return done.stdout.strip()


def test_each_invalid_policy_is_refused_with_an_event_and_the_last_valid_stays(
    admin_kube: kube.Kube, namespace: str, make_node: Any, start: Any, tmp_path: Path
) -> None:
    make_node("ctl-inv")
    valid = HEAD + "spec:\n  kubeadm: {renewBefore: 300h}\n"
    put_policy(admin_kube, namespace, valid)
    ctl = start()
    wait_until(all_at(admin_kube, ["ctl-inv"], revision(valid)), what="the valid policy")
    for param in INVALID:
        text, message = param.values
        put_policy(admin_kube, namespace, text)
        expected = validate_policy_output(text, tmp_path) if text is not None else message

        def refused(
            expected: str = expected, text: str | None = text, message: str = message
        ) -> bool:
            notes = [
                e["note"]
                for e in events.list_for(admin_kube, namespace, "kucero-policy")
                if e["reason"] == "InvalidPolicy" and e["type"] == "Warning"
            ]
            if text is None:  # nothing for validate-policy to read: the ConfigMap is named
                return any(n.startswith(f"{namespace}/{message}") for n in notes)
            return expected in notes

        wait_until(refused, what=f"Warning Event for {param.id}")
        assert message in expected, (param.id, expected)
        assert ctl.metric("kucero_policy_valid") == 0
        assert desired_of(admin_kube, "ctl-inv")["revision"] == revision(valid)  # type: ignore[index]
        assert ctl.metric(f'kucero_policy_info{{revision="{revision(valid)}"}}') == 1
    later = HEAD + "spec:\n  kubeadm: {renewBefore: 400h}\n"
    put_policy(admin_kube, namespace, later)
    wait_until(all_at(admin_kube, ["ctl-inv"], revision(later)), what="the later valid edit")
    wait_until(lambda: ctl.metric("kucero_policy_valid") == 1, what="policy valid again")


def test_a_deleted_policy_keeps_the_last_valid_one_in_force_with_a_warning(
    admin_kube: kube.Kube, namespace: str, make_node: Any, start: Any
) -> None:
    """Deleting the policy ConfigMap once made the leader roll the built-in defaults out to
    every Node (kubeadm.restart manifest-move, the CSR signer on, whatever the policy said).
    Now it is treated as a broken policy: what is in force stays, with a Warning Event, a log
    line and kucero_policy_valid 0; a recreated ConfigMap is read as any edit."""
    make_node("ctl-del")
    valid = HEAD + "spec:\n  paused: true\n  kubeadm: {renewBefore: 300h, restart: none}\n"
    put_policy(admin_kube, namespace, valid)
    ctl = start()
    wait_until(all_at(admin_kube, ["ctl-del"], revision(valid)), what="the valid policy")
    admin_kube.delete(f"/api/v1/namespaces/{namespace}/configmaps/kucero-policy")

    def warned() -> bool:
        return any(
            e["reason"] == "PolicyDeleted"
            and e["type"] == "Warning"
            and revision(valid) in e["note"]
            for e in events.list_for(admin_kube, namespace, "kucero-policy")
        )

    wait_until(warned, what="a PolicyDeleted Warning Event")
    wait_until(lambda: ctl.metric("kucero_policy_valid") == 0, what="kucero_policy_valid 0")
    time.sleep(2)  # the work loop writes within milliseconds of a policy change: none came
    assert desired_of(admin_kube, "ctl-del")["revision"] == revision(valid)  # type: ignore[index]
    assert ctl.metric(f'kucero_policy_info{{revision="{revision(valid)}"}}') == 1
    assert "policy ConfigMap" in ctl.output() and "deleted" in ctl.output()
    later = HEAD + "spec:\n  kubeadm: {renewBefore: 400h}\n"
    put_policy(admin_kube, namespace, later)
    wait_until(all_at(admin_kube, ["ctl-del"], revision(later)), what="the recreated policy")
    wait_until(lambda: ctl.metric("kucero_policy_valid") == 1, what="policy valid again")


def holder(admin_kube: kube.Kube, namespace: str) -> str:
    return leases.holder(leases.get(admin_kube, namespace, "kucero-leader-election"))


def test_sigkill_of_the_leader_hands_over_after_the_lease_and_edits_still_converge(
    admin_kube: kube.Kube, namespace: str, make_node: Any, start: Any
) -> None:
    make_node("ctl-ha")
    put_policy(admin_kube, namespace, HEAD)
    a = start("ctl-a")
    wait_until(lambda: holder(admin_kube, namespace) == "ctl-a", what="a leads")
    b = start("ctl-b")
    wait_until(lambda: b.get("/readyz")[0] == 200, what="b knows the leader")
    assert holder(admin_kube, namespace) == "ctl-a" and b.metric("kucero_leader") == 0
    a.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_until(
        lambda: holder(admin_kube, namespace) == "ctl-b",
        timeout=20,
        what="b takes over",
        interval=0.05,
    )
    took = time.monotonic() - killed
    assert took >= controllers.LEASE_SECONDS - 1.0, f"took over after {took:.1f}s, too early"
    assert took <= controllers.LEASE_SECONDS + 3.0, f"took over after {took:.1f}s"
    edited = HEAD + "spec:\n  checkInterval: 30m\n"
    put_policy(admin_kube, namespace, edited)
    wait_until(all_at(admin_kube, ["ctl-ha"], revision(edited)), what="edit after take-over")
    assert b.metric("kucero_leader") == 1


def test_sigterm_of_the_leader_releases_the_lease_at_once(
    admin_kube: kube.Kube, namespace: str, make_node: Any, start: Any
) -> None:
    put_policy(admin_kube, namespace, HEAD)
    a = start("ctl-a")
    wait_until(lambda: holder(admin_kube, namespace) == "ctl-a", what="a leads")
    b = start("ctl-b")
    wait_until(lambda: b.get("/readyz")[0] == 200, what="b knows the leader")
    stopped = time.monotonic()
    assert a.stop() == 0
    assert holder(admin_kube, namespace) in ("", "ctl-b")  # released before exiting
    wait_until(
        lambda: holder(admin_kube, namespace) == "ctl-b",
        timeout=10,
        what="b takes over",
        interval=0.05,
    )
    took = time.monotonic() - stopped
    assert took < controllers.LEASE_SECONDS, f"hand-over took {took:.1f}s"
    make_node("ctl-late")
    wait_until(all_at(admin_kube, ["ctl-late"], revision(HEAD)), what="b writes a new node")


def test_forbidden_api_is_logged_counted_and_backed_off_not_a_crash_loop(
    control_plane: Any, namespace: str, start: Any
) -> None:
    nobody = control_plane.user_kubeconfig(f"nobody-{namespace}")
    ctl = start("ctl-x", kubeconfig=nobody)
    metric = 'kucero_api_errors_total{error="Forbidden",operation="leader-election"}'
    wait_until(lambda: (ctl.metric(metric) or 0) >= 1, what="first 403 counted")
    first = ctl.metric(metric) or 0
    time.sleep(8)
    assert ctl.proc.poll() is None, "the controller must not exit on 403"
    later = ctl.metric(metric) or 0
    # at the 0.5 s retry period without back-off, 8 s would be 16 attempts
    assert 1 <= later - first <= 6, (first, later)
    assert ctl.get("/healthz")[0] == 200 and ctl.get("/readyz")[0] == 503
    watch = 'kucero_api_errors_total{error="Forbidden",operation="watch-lease"}'
    assert 1 <= (ctl.metric(watch) or 0) <= 6  # the Lease watch backs off too
    assert 'cannot get resource "leases"' in ctl.output()
    assert "needs get/create/update on leases" in ctl.output()


def test_lease_edited_by_hand_to_garbage_stops_the_leader_until_it_may_take_it_back(
    admin_kube: kube.Kube, namespace: str, make_node: Any, start: Any
) -> None:
    put_policy(admin_kube, namespace, HEAD)
    a = start("ctl-a")
    wait_until(lambda: holder(admin_kube, namespace) == "ctl-a", what="a leads")
    current = leases.get(admin_kube, namespace, "kucero-leader-election")
    assert current is not None
    garbage = {**current, "spec": {**current["spec"], "holderIdentity": "garbage!"}}
    admin_kube.replace(leases.path(namespace, "kucero-leader-election"), garbage)
    edited = time.monotonic()
    wait_until(
        lambda: re.search(r"stopped leading: the Lease (was|is) held by 'garbage!'", a.output()),
        what="a steps down",
    )
    # nobody renews "garbage!": after the lease duration a takes it back and works again
    wait_until(lambda: holder(admin_kube, namespace) == "ctl-a", what="a leads again")
    assert time.monotonic() - edited >= controllers.LEASE_SECONDS - 1.0
    make_node("ctl-after-garbage")
    wait_until(all_at(admin_kube, ["ctl-after-garbage"], revision(HEAD)), what="a writes again")
