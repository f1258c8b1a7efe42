"""What the controller writes to ``kucero.io/desired`` for a node: the policy resolved against
the node's labels, plus whether kucero's CSR signer (a leader-only component) approves the
node's serving CSRs. Pure: no API server is involved in choosing the value."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from reconciler import metrics
from reconciler.decide import desired, policy
from reconciler.run import controller, election

HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"


class Signer:
    name = "csr-signer"
    serves_csrs = True

    def __init__(self) -> None:
        self.changes = 0

    def run(self, kube: Any, stop: threading.Event, current: Callable[[], Any]) -> None:
        stop.wait()

    def policy_changed(self) -> None:
        self.changes += 1


def make(components: tuple[Any, ...] = ()) -> controller.Controller:
    settings = controller.Settings(
        kubeconfig=None,
        election=election.Config("ns", "lease", "me"),
        policy_namespace="ns",
        policy_name="kucero-policy",
        policy_defaults={},
        metrics_addr=None,
    )
    return controller.Controller(None, settings, metrics.Metrics(), components)  # type: ignore[arg-type]


ADDRESSES = [{"type": "InternalIP", "address": "10.0.0.21"}, {"type": "Hostname", "address": "w1"}]


@pytest.mark.parametrize(
    ("components", "signer", "active"),
    [
        pytest.param((), "{allowedIPRanges: [10.0.0.0/24]}", False, id="no-signer-running"),
        pytest.param(
            (Signer(),), "{allowedIPRanges: [10.0.0.0/24]}", True, id="signer-running-and-enabled"
        ),
        pytest.param(
            (Signer(),),
            "{enabled: false, allowedIPRanges: [10.0.0.0/24]}",
            False,
            id="signer-running-but-policy-disables-it",
        ),
        pytest.param(
            (Signer(),),
            "{}",
            False,
            id="signer-running-but-its-allowlist-would-deny-what-the-kubelet-asks-for",
        ),
    ],
)
def test_signer_flag_needs_a_running_signer_and_the_policy(
    components: tuple[Any, ...], signer: str, active: bool
) -> None:
    loaded = policy.load(HEAD + f"spec:\n  csrSigner: {signer}\n", "p.yaml")
    value = make(components).desired_for({}, loaded, "w1", ADDRESSES)
    assert json.loads(value)["spec"]["csrSigner"] == {"enabled": active}
    assert desired.decode(value).revision == loaded.revision  # the node can read it


def test_value_is_compact_and_resolved_per_labels() -> None:
    text = HEAD + (
        "spec:\n  overrides:\n  - nodeSelector: {matchLabels: {pool: edge}}\n"
        "    spec: {kubeadm: {renewBefore: 1440h}}\n"
    )
    loaded = policy.load(text, "p.yaml")
    edge = make().desired_for({"pool": "edge"}, loaded)
    core = make().desired_for({"pool": "core"}, loaded)
    assert " " not in edge and json.loads(edge)["override"] == 0
    assert json.loads(core)["override"] is None
    assert desired.decode(edge).kubeadm.renew_before.total_seconds() == 1440 * 3600


def test_leader_components_hear_of_each_new_policy_revision_once() -> None:
    """The CA publisher acts on ``ca.mode: renew`` when told, not after its period."""
    component = Signer()
    ctl = make((component,))
    report = policy.load(HEAD + "spec: {ca: {mode: report}}\n", "p.yaml")
    renew = policy.load(HEAD + "spec: {ca: {mode: renew}}\n", "p.yaml")
    ctl._accept(report, None)
    ctl._accept(report, None)  # the same revision again (a resync): nothing new
    assert component.changes == 1
    ctl._accept(renew, None)
    assert component.changes == 2
