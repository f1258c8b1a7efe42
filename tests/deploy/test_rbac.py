"""Each ServiceAccount of the default overlay, as the real API server's RBAC sees it
(`kubectl auth can-i --as=system:serviceaccount:...` with the groups a real token carries),
can do what its processes call and nothing else: a table of allowed and denied requests.

The same RBAC drives real processes in test_e2e.py; this table is the readable summary. RBAC
is only the first gate: which Node, which fields of it and which Lease names (a `create` RBAC
cannot limit by name) are the admission policies' to decide, tried in test_node_identity.py
and test_lease_and_pod_identity.py.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import tools

NS = tools.NAMESPACES["default"]
CP = "kucero-control-plane"  # `kucero run`: controller + node reconciler
NODE = "kucero-node"  # `kucero node` on workers
BOTH = (CP, NODE)
# (who, verb, resource[/name][:subresource], namespace or None for cluster-wide, allowed)
ROTATION = "leases.coordination.k8s.io/kucero-rotation-0"
LEADER = "leases.coordination.k8s.io/kucero-leader-election"
CSR = "certificatesigningrequests.certificates.k8s.io"
SERVING = "signers.certificates.k8s.io/kubernetes.io/kubelet-serving"

# (who, verb, resource[/name][:subresource], namespace or None for cluster-wide, allowed)
ALLOWED = [
    # the node reconciler: its Node (watched by name, annotations patched), slots, Events
    *[(sa, v, "nodes", None, True) for sa in BOTH for v in ("get", "list", "watch", "patch")],
    *[(sa, "create", "events.events.k8s.io", "default", True) for sa in BOTH],
    *[(sa, v, ROTATION, NS, True) for sa in BOTH for v in ("get", "update")],
    (NODE, "update", "leases.coordination.k8s.io/kucero-rotation-9", NS, True),
    *[(sa, "create", "leases.coordination.k8s.io", NS, True) for sa in BOTH],
    # the controller: the policy by name, its leader Lease, CSRs of the kubelet-serving signer
    *[(CP, v, "configmaps/kucero-policy", NS, True) for v in ("get", "list", "watch")],
    (CP, "create", "events.events.k8s.io", NS, True),  # InvalidPolicy on the ConfigMap
    *[(CP, v, LEADER, NS, True) for v in ("get", "list", "watch", "update")],
    *[(CP, v, CSR, None, True) for v in ("get", "list", "watch")],
    (CP, "update", f"{CSR}:approval", None, True),
    (CP, "update", f"{CSR}:status", None, True),
    (CP, "approve", SERVING, None, True),
    (CP, "sign", SERVING, None, True),
    # /metrics: ask the API server who a scraper's token is and whether it may get /metrics
    *[(sa, "create", "tokenreviews.authentication.k8s.io", None, True) for sa in BOTH],
    *[(sa, "create", "subjectaccessreviews.authorization.k8s.io", None, True) for sa in BOTH],
]
DENIED = [
    # nothing on Secrets, anywhere
    *[
        (sa, v, "secrets", ns, False)
        for sa in BOTH
        for v in ("get", "list", "watch", "create")
        for ns in (NS, "default")
    ],
    # Nothing on Pods: rollout.drain lists and evicts as the node's kubelet, which the API server
    # limits to that node's pods (test_lease_and_pod_identity.py); RBAC could limit neither
    *[
        (sa, v, "pods", ns, False)
        for sa in BOTH
        for v in ("list", "get", "watch", "patch", "delete", "create", "update")
        for ns in (NS, None)
    ],
    *[(sa, "create", "pods:eviction", ns, False) for sa in BOTH for ns in (NS, "default")],
    *[(sa, "create", "pods:exec", NS, False) for sa in BOTH],
    # Nodes are only patched: never deleted, created, replaced, nor their status written
    *[
        (sa, v, "nodes", None, False)
        for sa in BOTH
        for v in ("delete", "create", "update", "deletecollection")
    ],
    *[(sa, "patch", "nodes:status", None, False) for sa in BOTH],
    # Leases: only kucero's, only in its namespace, never deleted or listed; the worker never
    # touches the leader's, nor kube-system's own (scheduler, controller manager)
    *[(sa, "update", ROTATION, "default", False) for sa in BOTH],
    *[(sa, v, ROTATION, NS, False) for sa in BOTH for v in ("delete", "patch")],
    *[(sa, "list", "leases.coordination.k8s.io", NS, False) for sa in BOTH],
    (NODE, "update", LEADER, NS, False),
    (NODE, "update", "leases.coordination.k8s.io/kucero-rotation-10", NS, False),
    *[(sa, "update", "leases.coordination.k8s.io/kube-scheduler", NS, False) for sa in BOTH],
    # Events only where they belong
    (NODE, "create", "events.events.k8s.io", NS, False),
    *[(sa, "create", "events.events.k8s.io", "kube-public", False) for sa in BOTH],
    # the policy is read, never written; no other ConfigMap
    (CP, "update", "configmaps/kucero-policy", NS, False),
    (CP, "patch", "configmaps/kucero-policy", NS, False),
    (CP, "list", "configmaps", NS, False),
    (CP, "get", "configmaps/kucero-policy", "default", False),
    # other signers: never approve or sign client certificates (that would mint credentials)
    *[
        (CP, v, f"signers.certificates.k8s.io/{s}", None, False)
        for v in ("approve", "sign")
        for s in (
            "kubernetes.io/kube-apiserver-client",
            "kubernetes.io/kube-apiserver-client-kubelet",
            "kubernetes.io/legacy-unknown",
            "example.com/any",
            "kubernetes.io/*",
        )
    ],
    *[(CP, v, CSR, None, False) for v in ("create", "delete", "update", "patch")],
    # the worker identity: nothing of the controller's
    *[(NODE, v, "configmaps/kucero-policy", NS, False) for v in ("get", "list", "watch")],
    *[(NODE, v, CSR, None, False) for v in ("get", "list")],
    (NODE, "update", f"{CSR}:approval", None, False),
    (NODE, "update", f"{CSR}:status", None, False),
    (NODE, "approve", SERVING, None, False),
    (NODE, "sign", SERVING, None, False),
    # no way to grow its own rights
    *[(sa, "create", "serviceaccounts:token", NS, False) for sa in BOTH],
    *[(sa, "impersonate", "users", None, False) for sa in BOTH],
    *[
        (sa, v, "clusterroles.rbac.authorization.k8s.io", None, False)
        for sa in BOTH
        for v in ("escalate", "bind", "create")
    ],
    *[(sa, "create", "rolebindings.rbac.authorization.k8s.io", NS, False) for sa in BOTH],
    *[(sa, "patch", "daemonsets.apps", NS, False) for sa in BOTH],
]
DENIED += [
    # the reviews answer questions and grant nothing: no way to mint a token from them
    *[
        (sa, v, "tokenreviews.authentication.k8s.io", None, False)
        for sa in BOTH
        for v in ("get", "list")
    ],
    *[(sa, "get", "/metrics", None, False) for sa in BOTH],  # kucero does not read its own
]
# CA renewal (kustomize/base/roles/ca.yaml): every node reads the published CA certificates,
# the leader replaces them (never creates a ConfigMap: the kustomization ships kucero-ca) and
# brings cluster-info and kubeadm-config in step; nothing else.
CA_ALLOWED = [
    *[(sa, v, "configmaps/kucero-ca", NS, True) for sa in BOTH for v in ("get", "list", "watch")],
    (CP, "update", "configmaps/kucero-ca", NS, True),
    (CP, "get", "configmaps/kube-root-ca.crt", NS, True),
    *[(CP, v, "configmaps/cluster-info", "kube-public", True) for v in ("get", "update")],
    *[(CP, v, "configmaps/kubeadm-config", "kube-system", True) for v in ("get", "update")],
]
CA_DENIED = [
    (NODE, "update", "configmaps/kucero-ca", NS, False),
    *[(sa, v, "configmaps/kucero-ca", NS, False) for sa in BOTH for v in ("delete", "patch")],
    *[(sa, "create", "configmaps", NS, False) for sa in BOTH],
    (CP, "update", "configmaps/kube-root-ca.crt", NS, False),
    (CP, "get", "configmaps/kube-root-ca.crt", "default", False),
    (NODE, "update", "configmaps/cluster-info", "kube-public", False),
    (NODE, "get", "configmaps/kubeadm-config", "kube-system", False),
    (CP, "update", "configmaps/coredns", "kube-system", False),
    (CP, "get", "configmaps/extension-apiserver-authentication", "kube-system", False),
    (CP, "list", "configmaps", "kube-public", False),
]
TABLE = ALLOWED + DENIED + CA_ALLOWED + CA_DENIED


def can_i(kubeconfig: Path, who: str, verb: str, resource: str, namespace: str | None) -> bool:
    user = f"system:serviceaccount:{NS}:{who}"
    # The groups a real token of that ServiceAccount carries (what RBAC also matches on).
    groups = ("system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated")
    if resource.startswith("signers."):
        return subject_access_review(kubeconfig, user, groups, verb, resource)
    resource, _, subresource = resource.partition(":")
    args = ["auth", "can-i", verb, resource, f"--as={user}", *(f"--as-group={g}" for g in groups)]
    args += [f"--subresource={subresource}"] if subresource else []
    args += ["-n", namespace] if namespace else []
    done = tools.kubectl(*args, kubeconfig=kubeconfig, check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stdout + done.stderr
    return done.stdout.strip() == "yes"


def subject_access_review(
    kubeconfig: Path, user: str, groups: tuple[str, ...], verb: str, resource: str
) -> bool:
    """The same question as a SubjectAccessReview: `kubectl auth can-i` resolves the resource
    through discovery, and ``signers`` (checked by the API server on approval and signing) is
    not a served resource, so can-i sends group "*" and always answers no."""
    _, _, name = resource.partition("/")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": list(groups),
            "resourceAttributes": {
                "group": "certificates.k8s.io",
                "resource": "signers",
                "name": name,
                "verb": verb,
            },
        },
    }
    done = tools.kubectl(
        "create", "-f", "-", "-o", "json", stdin=json.dumps(review), kubeconfig=kubeconfig
    )
    return bool(json.loads(done.stdout)["status"].get("allowed"))


@pytest.fixture(scope="module")
def deployed(deploy: Callable[[str], Any]) -> None:
    deploy("default")


@pytest.fixture(scope="module")
def answers(deployed: None, kubeconfig: Path) -> dict[tuple[str, str, str, str | None], bool]:
    """Every question of the table, asked once, a few kubectl processes at a time."""
    questions = [row[:4] for row in TABLE]
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        got = pool.map(lambda q: can_i(kubeconfig, *q), questions)
        return dict(zip(questions, got, strict=True))


@pytest.mark.parametrize(
    ("who", "verb", "resource", "namespace", "allowed"),
    TABLE,
    ids=[f"{'can' if r[4] else 'cannot'}-{r[0]}-{r[1]}-{r[2]}-{r[3] or 'cluster'}" for r in TABLE],
)
def test_service_account_can_do_exactly_what_its_role_needs(
    answers: dict[tuple[str, str, str, str | None], bool],
    who: str,
    verb: str,
    resource: str,
    namespace: str | None,
    allowed: bool,
) -> None:
    assert answers[(who, verb, resource, namespace)] is allowed


def test_an_unbound_service_account_of_the_namespace_gets_nothing(
    deployed: None, kubeconfig: Path
) -> None:
    """The table would pass trivially if the groups alone granted everything."""
    assert not can_i(kubeconfig, "someone-else", "patch", "nodes", None)
    assert not can_i(kubeconfig, "someone-else", "get", "configmaps/kucero-policy", NS)
