"""What kucero's identities may write on Nodes, tried against the real API server with the RBAC
and admission policies kustomize/ ships (kustomize/base/roles/node-writes.yaml).

The attacker has root on worker ``w1``: the kucero-node token its kubelet got for the DaemonSet
pod (bound to that pod, so it names ``w1``) and the kubelet's own client certificate. Each
attack of issue 17's second bullet is a row of ``ATTACKS``: refused, and the Node unchanged.
The flows kucero needs (its status, its own cordon, the controller's kucero.io/desired on every
Node) still work with the code that makes them, and the kubelet and the administrator are not
held to kucero's policy.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from reconciler.cluster import cordon, kube, nodes
from reconciler.decide import desired, status
from tests.deploy import tools
from tests.deploy.identities import CONTROL_PLANE_LABEL, World, refused
from tests.integration import nodesim

pytestmark = pytest.mark.controlplane

# A schema-valid desired state that renews everything and owes four static pod restarts: what
# another node's kucero.io/desired was rewritten to in the issue.
HOSTILE_DESIRED = nodesim.desired_value("spec: {kubeadm: {renewBefore: 8736h}}")
FORGED_STATUS = json.dumps({"revision": "evil", "phase": "Converged", "message": "all fine"})
NOEXECUTE = {"spec": {"taints": [{"key": "example.com/evict-all", "effect": "NoExecute"}]}}
CORDON = {"metadata": {"annotations": {cordon.MARK: "true"}}, "spec": {"unschedulable": True}}
DANGLING_OWNER = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "name": "gone",
    "uid": "00000000-0000-0000-0000-000000000000",
}


def annotate(key: str, value: str | None) -> dict[str, Any]:
    return {"metadata": {"annotations": {key: value}}}


def label(key: str, value: str | None) -> dict[str, Any]:
    return {"metadata": {"labels": {key: value}}}


# (who, target node, merge patch). Who: a door of identities.World; target: cp, w1 or w2.
ATTACKS = [
    pytest.param("w1", "w2", annotate(desired.ANNOTATION, HOSTILE_DESIRED), id="another-desired"),
    pytest.param("w1", "cp", annotate(desired.ANNOTATION, HOSTILE_DESIRED), id="a-cp-desired"),
    pytest.param("w1", "w1", annotate(desired.ANNOTATION, HOSTILE_DESIRED), id="its-own-desired"),
    # the control-plane DaemonSet (and its CSR-signing token) would follow the label
    pytest.param("w1", "w1", label(CONTROL_PLANE_LABEL, ""), id="control-plane-label-on-itself"),
    pytest.param("w1", "w2", label(CONTROL_PLANE_LABEL, ""), id="control-plane-label-on-w2"),
    pytest.param("w1", "cp", label(CONTROL_PLANE_LABEL, None), id="control-plane-label-off-cp"),
    pytest.param("w1", "w2", NOEXECUTE, id="noexecute-taint-on-another-node"),
    pytest.param("w1", "w1", NOEXECUTE, id="taint-on-itself"),
    pytest.param("w1", "w2", {"spec": {"unschedulable": True}}, id="cordon-another-node"),
    pytest.param("w1", "w2", CORDON, id="cordon-another-node-with-kuceros-mark"),
    pytest.param("w1", "w1", {"spec": {"unschedulable": True}}, id="cordon-itself-unmarked"),
    pytest.param("w1", "w2", annotate(status.ANNOTATION, FORGED_STATUS), id="another-status"),
    pytest.param("w1", "w1", annotate("example.com/other", "x"), id="another-annotation"),
    # a dangling owner reference lets the garbage collector delete the Node
    pytest.param(
        "w1", "w2", {"metadata": {"ownerReferences": [DANGLING_OWNER]}}, id="owner-reference"
    ),
    pytest.param("w1", "w1", {"metadata": {"finalizers": ["example.com/x"]}}, id="finalizer"),
    pytest.param("w1", "w1", {"spec": {"podCIDR": "10.244.9.0/24"}}, id="pod-cidr"),
    pytest.param("w1", "w2", {}, id="even-a-no-op-on-another-node"),
    # fail closed: a token that names no node may not write even what a node may
    pytest.param("unbound", "w1", annotate(status.ANNOTATION, FORGED_STATUS), id="unbound-status"),
    pytest.param("unbound", "w1", CORDON, id="unbound-cordon"),
    # the controller writes kucero.io/desired, nothing else
    pytest.param("controller", "w1", label(CONTROL_PLANE_LABEL, ""), id="controller-labels"),
    pytest.param("controller", "w1", NOEXECUTE, id="controller-taints"),
    pytest.param("controller", "w1", CORDON, id="controller-cordons-another-node"),
    pytest.param(
        "controller", "w1", annotate(status.ANNOTATION, FORGED_STATUS), id="controller-status"
    ),
    pytest.param("controller-unbound", "w1", NOEXECUTE, id="lone-controller-taints"),
]


def state(door: kube.Kube, name: str) -> dict[str, Any]:
    """What an attack could change: metadata but the server's bookkeeping, and spec."""
    node = nodes.get(door, name)
    meta = node["metadata"]
    kept = ("labels", "annotations", "finalizers", "ownerReferences")
    return {"metadata": {k: meta.get(k) for k in kept}, "spec": node.get("spec")}


@pytest.mark.parametrize(("who", "target", "patch"), ATTACKS)
def test_a_node_identity_cannot_change_what_is_not_its_own_status_or_cordon(
    world: World, who: str, target: str, patch: dict[str, Any]
) -> None:
    admin, name = world.door("admin"), world.node(target)
    before = state(admin, name)
    message = refused(lambda: world.door(who).patch(nodes.path(name), patch))
    assert state(admin, name) == before
    assert "kucero-node-writes" in message, message


def test_a_node_writes_its_own_status_with_the_shipped_code(world: World) -> None:
    text = json.dumps({"revision": "r1", "phase": "Converged", "message": ""})
    nodes.patch_annotations(world.door("w1"), world.w1, {status.ANNOTATION: text})
    assert nodes.annotation(nodes.get(world.door("admin"), world.w1), status.ANNOTATION) == text


def test_a_node_cordons_and_uncordons_itself_with_the_shipped_code(world: World) -> None:
    door, admin = world.door("w1"), world.door("admin")
    assert cordon.cordon(door, world.w1) is True
    node = nodes.get(admin, world.w1)
    assert node["spec"].get("unschedulable") is True
    assert nodes.annotation(node, cordon.MARK) == "true"
    cordon.uncordon(door, world.w1)
    node = nodes.get(admin, world.w1)
    assert not node["spec"].get("unschedulable")
    assert nodes.annotation(node, cordon.MARK) is None


def test_a_node_cannot_lift_a_cordon_an_administrator_made(world: World) -> None:
    door, admin = world.door("w1"), world.door("admin")
    admin.patch(nodes.path(world.w1), {"spec": {"unschedulable": True}})
    try:
        assert cordon.cordon(door, world.w1) is False  # not kucero's: left alone
        for patch in ({"spec": {"unschedulable": None}}, CORDON):  # nor taken over with a mark
            message = refused(lambda p=patch: door.patch(nodes.path(world.w1), p))
            assert "kucero-node-writes" in message, message
        assert nodes.get(admin, world.w1)["spec"]["unschedulable"] is True
    finally:
        admin.patch(nodes.path(world.w1), {"spec": {"unschedulable": None}})


@pytest.mark.parametrize("who", ["controller", "controller-unbound"])
def test_the_controller_writes_desired_on_every_node(world: World, who: str) -> None:
    value = json.dumps({"revision": f"by-{who}", "override": None, "spec": {}})
    for name in (world.cp, world.w1, world.w2):
        nodes.patch_annotations(world.door(who), name, {desired.ANNOTATION: value})
        assert nodes.annotation(nodes.get(world.door("admin"), name), desired.ANNOTATION) == value


def test_kubelet_and_administrator_are_not_held_to_kuceros_policy(world: World) -> None:
    """The policy matches kucero's two ServiceAccounts only. (The kubelet is held to what
    NodeRestriction allows it on its own Node, as without kucero.)"""
    kubelet, admin = world.door("kubelet-w1"), world.door("admin")
    kubelet.patch(nodes.path(world.w1), annotate("example.com/kubelet", "yes"))
    refused(lambda: kubelet.patch(nodes.path(world.w1), label(CONTROL_PLANE_LABEL, "")))
    refused(lambda: kubelet.patch(nodes.path(world.w2), annotate("example.com/kubelet", "x")))
    for patch in (label("example.com/pool", "edge"), NOEXECUTE, CORDON):
        admin.patch(nodes.path(world.w2), patch)
    admin.patch(
        nodes.path(world.w2),
        {
            "metadata": {"labels": {"example.com/pool": None}, "annotations": {cordon.MARK: None}},
            "spec": {"taints": None, "unschedulable": None},
        },
    )


def test_the_policy_compares_every_node_spec_field_but_unschedulable(world: World) -> None:
    """A NodeSpec field a later Kubernetes adds must not slip past the policy: the fields it
    compares are the API server's own list (its OpenAPI schema) minus unschedulable."""
    schema = world.door("admin").get("/openapi/v3/api/v1")
    fields = set(schema["components"]["schemas"]["io.k8s.api.core.v1.NodeSpec"]["properties"])
    (policy,) = (
        o
        for o in tools.objects("kustomize/overlays/default")
        if o["kind"] == "ValidatingAdmissionPolicy"
        and o["metadata"]["name"] == "kucero-node-writes"
    )
    compared = {
        field
        for v in policy["spec"]["validations"]
        for field in re.findall(r"object\.spec\.\?(\w+) == oldObject", v["expression"])
    }
    assert compared | {"unschedulable"} == fields


def test_the_identities_in_the_policies_are_the_shipped_service_accounts() -> None:
    """The policies match kucero's ServiceAccounts by name (in any namespace): a rename in
    kustomize/ must reach them, or they would hold no one."""
    items = tools.objects("kustomize/overlays/default")
    accounts = {o["metadata"]["name"] for o in items if o["kind"] == "ServiceAccount"}
    assert accounts == {"kucero-node", "kucero-control-plane"}
    for policy in (o for o in items if o["kind"] == "ValidatingAdmissionPolicy"):
        (condition,) = policy["spec"]["matchConditions"]
        pattern = re.search(r"matches\('(.*)'\)", condition["expression"])
        assert pattern is not None, condition
        for account in accounts:
            assert re.fullmatch(pattern.group(1), f"system:serviceaccount:ns:{account}")
        assert not re.fullmatch(pattern.group(1), "system:serviceaccount:ns:kucero-nodes")
        assert not re.fullmatch(pattern.group(1), "system:node:kucero-node")


def test_the_api_server_type_checks_both_policies_without_a_warning(world: World) -> None:
    """The controller manager checks each expression against the schemas of the objects it
    sees (a misspelt field, a wrong type): no warning for either policy."""
    path = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
    names = {f"{n}-{world.namespace}" for n in ("kucero-node-writes", "kucero-lease-writes")}

    def checked() -> list[dict[str, Any]]:
        got = [world.door("admin").get(f"{path}/{name}") for name in sorted(names)]
        done = all(
            (p.get("status") or {}).get("observedGeneration") == p["metadata"]["generation"]
            for p in got
        )
        return got if done else []

    for policy in nodesim.wait_for("type checking of both policies", checked, timeout=60):
        assert not policy["status"].get("typeChecking", {}).get("expressionWarnings"), policy
