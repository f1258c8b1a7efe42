"""What CA renewal's RBAC (kustomize/base/roles/ca.yaml) lets kucero's identities do, tried
against the real API server with the RBAC and admission policies kustomize/ ships.

The attacker has root on worker ``w1``: its kucero-node token (bound to its DaemonSet pod, so
it names ``w1``), a token of the same ServiceAccount bound to nothing, and the kubelet's own
client certificate. With those it would like to make other nodes trust a CA of its own (write
``kucero-ca``, which every node reads; ``cluster-info``, which every joining node trusts;
``kubeadm-config``; ``kube-root-ca.crt``, which every pod trusts), or reach any other
ConfigMap or Secret. Every such request is refused and the object keeps its resourceVersion.
The control-plane identity (on control-plane nodes only, where the CA key already is) may
write exactly what the leader's publication needs, and nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler import fabricate
from reconciler.cluster import configmaps, kube
from reconciler.decide import capublished
from tests.deploy import tools
from tests.deploy.identities import World, refused

pytestmark = pytest.mark.controlplane

NODE_SIDE = ("w1", "unbound", "kubelet-w1")
# A CA certificate of the attacker's own key, as the ConfigMap would carry it.
FORGED = capublished.encode(
    {"ca": fabricate.make_ca("kubernetes", dt.datetime.now(dt.UTC), "ecdsa")[0]}, {}
)


@pytest.fixture(scope="module")
def targets(world: World) -> Iterator[Targets]:
    """The CA-related ConfigMaps, each ``alias -> (namespace, name)``: ``kucero-ca`` as the
    kustomization ships it (in the world's namespace, where the identities live), the
    cluster-level copies (made if the session has none, removed afterwards), and
    ``kube-root-ca.crt`` as kube-controller-manager publishes it. ``kubeadm-config`` appears
    twice: the shipped Role names kube-system, which the tests move into the world's
    namespace with the rest of the identities."""
    admin, ns = world.door("admin"), world.namespace
    where = {
        "kucero-ca": (ns, capublished.NAME),
        "policy": (ns, "kucero-policy"),
        "cluster-info": ("kube-public", "cluster-info"),
        "kubeadm-config": ("kube-system", "kubeadm-config"),
        "kubeadm-config-moved": (ns, "kubeadm-config"),
        "kube-root-ca": (ns, "kube-root-ca.crt"),
        "coredns": ("kube-system", "coredns"),
    }
    made = []
    for alias, (namespace, name) in where.items():
        if alias == "kube-root-ca" or configmaps.get(admin, namespace, name) is not None:
            continue
        configmaps.create_or_replace(admin, namespace, name, {"placeholder": alias})
        made.append((namespace, name))
    deadline = time.monotonic() + 60
    while configmaps.get(admin, *where["kube-root-ca"]) is None:  # kube-controller-manager's
        assert time.monotonic() < deadline, "kube-root-ca.crt never published"
        time.sleep(0.2)
    yield where
    for namespace, name in made:
        with contextlib.suppress(kube.NotFound):
            admin.delete(configmaps.path(namespace, name))


def _version(admin: kube.Kube, where: tuple[str, str]) -> str | None:
    found = configmaps.get(admin, *where)
    return None if found is None else found["metadata"]["resourceVersion"]


def _replace(door: kube.Kube, admin: kube.Kube, where: tuple[str, str]) -> Any:
    current = configmaps.get(admin, *where)
    assert current is not None
    body = {**current, "data": {**(current.get("data") or {}), **FORGED}}
    return door.replace(configmaps.path(*where), body)


Targets = dict[str, tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One request: ``verb`` on the ConfigMap ``alias`` of ``targets``, or (create, list) on
    ``resource`` in namespace ``where`` ("own": the world's)."""

    verb: str  # replace, patch, delete, create, list
    alias: str | None = None
    where: str = "own"
    resource: str = "configmaps"

    def __call__(self, door: kube.Kube, admin: kube.Kube, targets: Targets, own: str) -> Any:
        if self.alias is not None:
            path = configmaps.path(*targets[self.alias])
            if self.verb == "replace":
                current = configmaps.get(admin, *targets[self.alias])
                assert current is not None
                return door.replace(
                    path, {**current, "data": {**current.get("data", {}), **FORGED}}
                )
            if self.verb == "patch":
                return door.patch(path, {"data": FORGED})
            assert self.verb == "delete"
            return door.delete(path)
        namespace = own if self.where == "own" else self.where
        collection = f"/api/v1/namespaces/{namespace}/{self.resource}"
        if self.where == "*":
            collection = f"/api/v1/{self.resource}"
        if self.verb == "list":
            return door.list(collection)
        assert self.verb == "create"
        return door.create(collection, {"metadata": {"name": "kucero-ca-2"}, "data": FORGED})


# Each is a way to put a CA of one's own where other nodes (or pods, or joining nodes) would
# read it, or to reach what a node must not.
ATTEMPTS = [
    *[
        pytest.param(Attempt("replace", alias), id=f"replace-{alias}")
        for alias in ("kucero-ca", "cluster-info", "kubeadm-config", "kubeadm-config-moved",
                      "kube-root-ca", "policy", "coredns")
    ],
    pytest.param(Attempt("patch", "kucero-ca"), id="patch-kucero-ca"),
    pytest.param(Attempt("patch", "cluster-info"), id="patch-cluster-info"),
    pytest.param(Attempt("delete", "kucero-ca"), id="delete-kucero-ca"),
    *[
        pytest.param(Attempt("create", where=where), id=f"create-a-configmap-in-{where}")
        for where in ("own", "kube-system", "kube-public", "default")
    ],
    pytest.param(Attempt("list", where="*"), id="list-every-configmap"),
    pytest.param(Attempt("create", resource="secrets"), id="create-a-secret"),
    *[
        pytest.param(Attempt("list", where=where, resource="secrets"), id=f"list-secrets-in-{where}")
        for where in ("own", "kube-system")
    ],
]  # fmt: skip


@pytest.mark.parametrize("who", NODE_SIDE)
@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_a_node_cannot_publish_a_ca_or_touch_any_other_configmap_or_secret(
    world: World, targets: Targets, who: str, attempt: Attempt
) -> None:
    admin = world.door("admin")
    before = _version(admin, targets[attempt.alias]) if attempt.alias else None
    message = refused(lambda: attempt(world.door(who), admin, targets, world.namespace))
    assert "forbidden" in message, message
    if attempt.alias:
        assert _version(admin, targets[attempt.alias]) == before


@pytest.mark.parametrize("who", NODE_SIDE)
def test_a_node_reads_the_published_ca_certificates_and_no_other_configmap(
    world: World, targets: Targets, who: str
) -> None:
    """The kucero-node token reads kucero-ca (public certificates, what it installs) and
    nothing else; the kubelet not even that (no pod of its node mounts it)."""
    door = world.door(who)
    if who == "kubelet-w1":
        refused(lambda: door.get(configmaps.path(*targets["kucero-ca"])))
    else:
        assert door.get(configmaps.path(*targets["kucero-ca"]))["metadata"]["name"] == "kucero-ca"
    # (kube-root-ca.crt: the kubelet reads it, every pod of its node mounts it; public anyway)
    others = ("kubeadm-config-moved", "policy") + (() if who == "kubelet-w1" else ("kube-root-ca",))
    for alias in others:
        refused(lambda alias=alias: door.get(configmaps.path(*targets[alias])))


# What the leader's publication replaces (kubeadm-config where the shipped Role names it).
CONTROLLER_MAY = {"kucero-ca", "cluster-info", "kubeadm-config-moved"}


@pytest.mark.parametrize("who", ["controller", "controller-unbound"])
@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_the_control_plane_identity_writes_only_what_the_publication_needs(
    world: World, targets: Targets, who: str, attempt: Attempt
) -> None:
    """The leader replaces kucero-ca, cluster-info and kubeadm-config; it creates, deletes
    and patches nothing, and touches no other ConfigMap or Secret. (Its token is on
    control-plane nodes only, next to the CA key; what nodes accept from kucero-ca is
    checked against their own CA, test_ca_cluster.py.)"""
    admin = world.door("admin")
    if attempt.verb == "replace" and attempt.alias in CONTROLLER_MAY:
        current = configmaps.get(admin, *targets[attempt.alias])
        assert current is not None
        try:
            attempt(world.door(who), admin, targets, world.namespace)
        finally:  # put back what the administrator had
            fresh = configmaps.get(admin, *targets[attempt.alias])
            assert fresh is not None
            admin.replace(
                configmaps.path(*targets[attempt.alias]), {**fresh, "data": current.get("data")}
            )
        return
    before = _version(admin, targets[attempt.alias]) if attempt.alias else None
    message = refused(lambda: attempt(world.door(who), admin, targets, world.namespace))
    assert "forbidden" in message, message
    if attempt.alias:
        assert _version(admin, targets[attempt.alias]) == before


def test_every_ca_rule_names_the_objects_it_grants() -> None:
    """No CA rule may grant a verb on a whole resource: each names its ConfigMaps, so a new
    rule cannot widen an identity to every ConfigMap of a namespace unnoticed."""
    roles = [
        o
        for o in tools.objects("kustomize/overlays/default")
        if o["kind"] == "Role" and o["metadata"]["name"].startswith("kucero-ca-")
    ]
    assert {r["metadata"]["name"] for r in roles} == {
        "kucero-ca-reader",
        "kucero-ca-publisher",
        "kucero-ca-cluster-info",
        "kucero-ca-kubeadm-config",
    }
    for role in roles:
        for rule in role["rules"]:
            assert rule["resources"] == ["configmaps"], role["metadata"]["name"]
            assert rule.get("resourceNames"), role["metadata"]["name"]
            assert not {"create", "delete", "patch", "deletecollection", "*"} & set(rule["verbs"])
