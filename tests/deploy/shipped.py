"""The RBAC and admission policies kucero ships, for the tests that run kucero's processes with
a ServiceAccount token.

kustomize/ is the single source of kucero's RBAC: the integration tests of the controller, the
node daemon and the signer, and the end-to-end test of the deployment, all take an identity's
objects from the default overlay's output (the test suite's kubectl renders it), never from a
copy. ``apply_identities`` moves them from kube-system into a test's namespace, so tests can run
side by side; objects outside it (cluster-scoped, or in ``default``) get the namespace as a
suffix and are deleted afterwards.

The ValidatingAdmissionPolicies (kustomize/base/roles/*-writes.yaml) come with them: they match
kucero's ServiceAccounts by name in any namespace, so the moved identities are held to them, and
a process writing to its Node or a slot needs a token bound to a Pod on that Node, as a
DaemonSet pod's is (``clients.Clients.bound_token``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from reconciler.cluster import kube
from tests.deploy import tools

SHIPPED_NAMESPACE = tools.NAMESPACES["default"]
CONTROL_PLANE = "kucero-control-plane"  # `kucero run` / `kucero controller`: both roles
NODE = "kucero-node"  # `kucero node` on workers
_COLLECTIONS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "ValidatingAdmissionPolicy": (
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
    ),
    "ValidatingAdmissionPolicyBinding": (
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
    ),
}
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def identity(*service_accounts: str) -> list[dict[str, Any]]:
    """The ServiceAccounts, every binding naming one of them and every role those bindings
    reference, as the default overlay renders them (in kube-system), roles before bindings,
    then every admission policy and its binding."""
    items = tools.objects("kustomize/overlays/default")
    wanted = set(service_accounts)
    accounts = [
        o for o in items if o["kind"] == "ServiceAccount" and o["metadata"]["name"] in wanted
    ]
    assert {a["metadata"]["name"] for a in accounts} == wanted, f"no ServiceAccount {wanted}"
    bindings = [
        o
        for o in items
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s["kind"] == "ServiceAccount" and s["name"] in wanted for s in o["subjects"])
    ]
    # A RoleBinding's Role is in the binding's namespace; a ClusterRole is in none.
    refs = {
        (b["roleRef"]["kind"], b["roleRef"]["name"], _scope(b["roleRef"]["kind"], b))
        for b in bindings
    }
    roles = [
        o
        for o in items
        if o["kind"] in ("Role", "ClusterRole")
        and (o["kind"], o["metadata"]["name"], _scope(o["kind"], o)) in refs
    ]
    return accounts + roles + bindings + admission_policies()


def admission_policies() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicies of the default overlay, each before its binding."""
    items = tools.objects("kustomize/overlays/default")
    return sorted(
        (o for o in items if o["kind"] in POLICY_KINDS),
        key=lambda o: (o["kind"] != POLICY_KINDS[0], o["metadata"]["name"]),
    )


def _scope(kind: str, obj: dict[str, Any]) -> str | None:
    return obj["metadata"].get("namespace") if kind == "Role" else None


@contextlib.contextmanager
def apply_identities(door: kube.Kube, namespace: str, *service_accounts: str) -> Iterator[None]:
    """Create ``identity(*service_accounts)`` with kube-system replaced by ``namespace``."""
    made: list[str] = []
    try:
        for doc in _moved(identity(*service_accounts), namespace):
            meta = doc["metadata"]
            collection = _COLLECTIONS[doc["kind"]].format(ns=meta.get("namespace", namespace))
            door.create(collection, doc)
            if meta.get("namespace", "") != namespace:
                made.append(f"{collection}/{meta['name']}")
        yield
    finally:
        for path in reversed(made):
            with contextlib.suppress(kube.NotFound):
                door.delete(path)


def _moved(docs: Iterable[dict[str, Any]], namespace: str) -> Iterator[dict[str, Any]]:
    for doc in docs:
        doc = json.loads(
            json.dumps(doc).replace(json.dumps(SHIPPED_NAMESPACE), json.dumps(namespace))
        )
        meta = doc["metadata"]
        meta.pop("labels", None)
        if meta.get("namespace", "") != namespace:  # shared by every test: make it this one's
            meta["name"] += f"-{namespace}"
            if "roleRef" in doc:
                doc["roleRef"]["name"] += f"-{namespace}"
            if "policyName" in doc.get("spec", {}):
                doc["spec"]["policyName"] += f"-{namespace}"
        elif doc["kind"] == "RoleBinding" and doc["roleRef"]["kind"] == "ClusterRole":
            doc["roleRef"]["name"] += f"-{namespace}"
        yield doc


@contextlib.contextmanager
def metrics_reader(door: kube.Kube, namespace: str, account: str) -> Iterator[None]:
    """Bind ``namespace/account`` to the monitoring component's ClusterRole
    (kucero-metrics-reader, as kustomize/ renders it), as an operator binds Prometheus's
    ServiceAccount; both are removed afterwards."""
    (role,) = [
        o
        for o in tools.objects("kustomize/overlays/custom")
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "kucero-metrics-reader"
    ]
    name = f"kucero-metrics-reader-{namespace}-{account}"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    made = []
    try:
        for kind, doc in (
            ("ClusterRole", {**role, "metadata": {"name": name}}),
            ("ClusterRoleBinding", binding),
        ):
            door.create(_COLLECTIONS[kind], doc)
            made.append(f"{_COLLECTIONS[kind]}/{name}")
        yield
    finally:
        for path in reversed(made):
            with contextlib.suppress(kube.NotFound):
                door.delete(path)
