"""The identities an attacker with root on one node holds, against the real API server with the
RBAC and admission policies kustomize/ ships (tests/deploy/shipped.py moves them into a
namespace of the test's own).

A world of three Nodes (a control-plane node ``cp`` and workers ``w1``, ``w2``), one plain pod
on each worker (with an environment value a cluster-wide list would leak), and doors
(``reconciler.cluster.kube.Kube``, kucero's own client) for:

- ``w1``, ``w2``: the kucero-node ServiceAccount with the token the kubelet of that worker
  gets for its DaemonSet pod (bound to a Pod on the node: the API server adds the node's name
  to the user's extra, ``authentication.kubernetes.io/node-name``);
- ``unbound``: the same ServiceAccount with a token bound to nothing (no node name);
- ``controller``: kucero-control-plane bound to a Pod on ``cp``, as ``kucero run`` there;
- ``controller-unbound``: kucero-control-plane with no node name (a lone ``kucero controller``);
- ``kubelet-w1``: ``system:node:<w1>`` in ``system:nodes``, a client certificate of the
  cluster CA, as the kubelet of ``w1`` holds it;
- ``admin``: ``kubernetes-admin`` in ``system:masters``.

Policies start to be enforced a moment after they are created: ``build`` waits until a
dry-run of a forbidden write is refused by each, so a test never passes by racing them. On a
checkout that ships no admission policy there is nothing to wait for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from reconciler.cluster import kube, leases, nodes
from tests.controlplane import clients as clients_
from tests.controlplane import cluster
from tests.deploy import shipped

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
SECRET_VALUE = "hunter2"  # in the workers' pods' environment
# How long the API server may take to start enforcing a new policy (its informers see it in
# well under a second on this machine).
IN_FORCE_SECONDS = 30.0


@dataclasses.dataclass
class World:
    namespace: str
    cp: str
    w1: str
    w2: str
    doors: dict[str, kube.Kube]
    pods: dict[str, str]  # node -> name of the plain pod on it

    def door(self, who: str) -> kube.Kube:
        return self.doors[who]

    def node(self, alias: str) -> str:
        return {"cp": self.cp, "w1": self.w1, "w2": self.w2}[alias]


def refused(call: Callable[[], Any]) -> str:
    """The API server's message when ``call`` is refused (403 by RBAC, 422 by an admission
    policy); fails the test when it is accepted."""
    try:
        call()
    except (kube.Forbidden, kube.Invalid) as e:
        return str(e)
    raise AssertionError("the API server accepted the request")


def plain_pod(name: str, node: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": "app",  # the namespace's "default" may not exist yet
            "nodeName": node,
            "tolerations": [{"operator": "Exists"}],  # no kubelet: the Nodes go NotReady
            "containers": [
                {
                    "name": "app",
                    "image": "app",
                    "env": [{"name": "PASSWORD", "value": SECRET_VALUE}],
                }
            ],
        },
    }


@contextlib.contextmanager
def build(
    admin: kube.Kube, clients: clients_.Clients, plane: cluster.ControlPlane
) -> Iterator[World]:
    namespace = f"ids-{uuid.uuid4().hex[:8]}"
    cp, w1, w2 = (f"{namespace}-{n}" for n in ("cp-1", "w-1", "w-2"))
    admin.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    made: list[kube.Kube] = []
    try:
        for name in (cp, w1, w2):
            labels = {CONTROL_PLANE_LABEL: ""} if name == cp else {}
            admin.create(nodes.PATH, {"metadata": {"name": name, "labels": labels}})
        admin.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "app"}}
        )
        pods = {node: f"app-{node}" for node in (w1, w2)}
        for node, pod in pods.items():
            admin.create(f"/api/v1/namespaces/{namespace}/pods", plain_pod(pod, node))
        with shipped.apply_identities(admin, namespace, shipped.CONTROL_PLANE, shipped.NODE):
            tokens = {
                "w1": clients.bound_token(namespace, shipped.NODE, w1),
                "w2": clients.bound_token(namespace, shipped.NODE, w2),
                "unbound": clients.token(namespace, shipped.NODE),
                "controller": clients.bound_token(namespace, shipped.CONTROL_PLANE, cp),
                "controller-unbound": clients.token(namespace, shipped.CONTROL_PLANE),
            }
            doors = {
                who: kube.connect(str(plane.token_kubeconfig(f"{who}-{namespace}", token)))
                for who, token in tokens.items()
            }
            doors["kubelet-w1"] = kube.connect(
                str(plane.user_kubeconfig(f"system:node:{w1}", ("system:nodes",)))
            )
            made += doors.values()
            doors["admin"] = admin
            world = World(namespace, cp, w1, w2, doors, pods)
            _wait_in_force(world)
            yield world
    finally:
        for door in made:
            door.close()
        for name in (cp, w1, w2):
            with contextlib.suppress(kube.NotFound):
                admin.delete(nodes.path(name))
        with contextlib.suppress(kube.NotFound):
            admin.delete(f"/api/v1/namespaces/{namespace}")


def _wait_in_force(world: World) -> None:
    """Until each shipped policy refuses a dry-run of a write it forbids."""
    probes: dict[str, Callable[[], Any]] = {
        "kucero-node-writes": lambda: world.door("w1").patch(
            nodes.path(world.w2) + "?dryRun=All",
            {"metadata": {"annotations": {"kucero.io/desired": "{}"}}},
        ),
        "kucero-lease-writes": lambda: world.door("w1").create(
            leases.collection(world.namespace) + "?dryRun=All",
            {"metadata": {"name": "kucero-leader-election"}, "spec": {}},
        ),
    }
    shipped_names = {
        p["metadata"]["name"]
        for p in shipped.admission_policies()
        if p["kind"] == shipped.POLICY_KINDS[0]
    }
    assert shipped_names <= set(probes), f"no probe for {shipped_names - set(probes)}"
    deadline = time.monotonic() + IN_FORCE_SECONDS
    for name in sorted(shipped_names):
        while True:
            try:
                probes[name]()
            except kube.Invalid as e:
                if f"ValidatingAdmissionPolicy '{name}" in str(e):  # ours, or deploy()'s
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"policy {name} not in force after {IN_FORCE_SECONDS:g}s")
            time.sleep(0.2)
