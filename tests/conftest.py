"""Fixtures for tests against the real control plane (kube-apiserver, etcd, kubeadm).

One control plane per test session (start-up costs seconds), a fresh namespace per test,
clients acting as any user (admin, a node through a client certificate, a service account
through TokenRequest), Node objects, and node trees made by the real kubeadm.

Without the binaries the tests that need them skip with a message saying how to build them;
with ``CI`` set they fail instead, so a green CI run always means they ran. A test that uses
these fixtures is marked ``controlplane`` (or ``kubeadm``) even if it forgot to say so, so
``-m "not controlplane"`` always selects exactly the tests that need no binaries.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

from tests.controlplane import binaries, cluster, kubeadm_tree

if TYPE_CHECKING:
    from tests.controlplane import clients as clients_

# Property-based tests (tests/fuzz): `quick` runs in `make test` (100 documents per test),
# `long` in `make fuzz` (pytest --hypothesis-profile=long; 10,000 per test: the tests of
# test_documents.py make about 15 ms a document on this 2-core machine; test_csr.py counts
# its own). No example database: a run must not write into the
# checkout, and a failure prints its reproducing example anyway.
FUZZ_QUICK_EXAMPLES = 100
FUZZ_LONG_EXAMPLES = 10_000
settings.register_profile(
    "quick", max_examples=FUZZ_QUICK_EXAMPLES, deadline=None, database=None, derandomize=False
)
settings.register_profile(
    "long",
    max_examples=FUZZ_LONG_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("quick")

MARKS = {"control_plane": "controlplane", "kubeadm_node": "kubeadm"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, mark in MARKS.items():
            if fixture in getattr(item, "fixturenames", ()) and not item.get_closest_marker(mark):
                item.add_marker(mark)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ControlPlane]:
    """etcd, kube-apiserver and kube-controller-manager, for the whole session."""
    directory = tmp_path_factory.mktemp("controlplane")
    with cluster.guarded(directory, with_controller_manager=True) as plane:
        yield plane


@pytest.fixture(scope="session")
def clients(control_plane: cluster.ControlPlane) -> Iterator[clients_.Clients]:
    from tests.controlplane import clients as clients_

    made = clients_.Clients(control_plane)
    yield made
    made.close()


@pytest.fixture(scope="session")
def admin(clients: clients_.Clients) -> Any:
    """An ApiClient as ``kubernetes-admin`` in ``system:masters``."""
    return clients.admin()


@pytest.fixture(scope="session")
def client_as(clients: clients_.Clients) -> Callable[..., Any]:
    """``client_as(user, groups=None)`` -> an ApiClient acting as ``user``, one per user.

    ``client_as("system:node:cp-1")`` is a node (client certificate, group ``system:nodes``);
    ``client_as("system:serviceaccount:ns:kucero")`` a service account (TokenRequest token, the
    account is created if missing); ``client_as("alice", ("devs",))`` anyone else.
    """
    return clients.user


@pytest.fixture(scope="session")
def admin_kube(control_plane: cluster.ControlPlane) -> Iterator[Any]:
    """kucero's own door (``reconciler.cluster.kube.Kube``) as ``kubernetes-admin``."""
    from reconciler.cluster import kube

    made = kube.connect(str(control_plane.admin_kubeconfig))
    yield made
    made.close()


@pytest.fixture
def namespace(admin: Any) -> Iterator[str]:
    """A fresh namespace, deleted after the test."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as e:
        if e.status != 404:
            raise


@pytest.fixture
def service_account_client(namespace: str, client_as: Callable[..., Any]) -> Callable[[str], Any]:
    """``service_account_client("kucero")`` -> an ApiClient as that service account of the
    test's namespace (created if missing), with a token from the TokenRequest API."""
    return lambda name: client_as(f"system:serviceaccount:{namespace}:{name}")


@pytest.fixture
def make_node(admin: Any) -> Iterator[Callable[..., Any]]:
    """``make_node("cp-1", addresses={"InternalIP": "10.0.0.11"}, labels={...},
    annotations={...})`` -> the created V1Node (with those status addresses), deleted after the
    test. ``addresses`` may also be a list of (type, address) pairs, for dual-stack nodes."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(admin)
    created: list[str] = []

    def make(
        name: str,
        addresses: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> Any:
        meta = client.V1ObjectMeta(
            name=name, labels=dict(labels or {}), annotations=dict(annotations or {})
        )
        node = core.create_node(client.V1Node(metadata=meta))
        created.append(name)
        pairs = list(addresses.items()) if isinstance(addresses, Mapping) else list(addresses)
        if pairs:
            # a patch, not a replace of the object just created: the controller manager's node
            # lifecycle controller may have tainted it already (a 409 once it is warmed up)
            addresses = [{"type": t, "address": a} for t, a in pairs]
            node = core.patch_node_status(name, {"status": {"addresses": addresses}})
        return node

    yield make
    for name in created:
        try:
            core.delete_node(name)
        except ApiException as e:
            if e.status != 404:  # the test deleted it
                raise


@pytest.fixture
def kubeadm_node(tmp_path: Path) -> Callable[..., Path]:
    """``kubeadm_node(node="cp-1", ip="10.0.0.11", algorithm="RSA-2048", ca_validity=None,
    cert_validity=None)`` -> a host root whose ``etc/kubernetes`` (pki/ and the kubeconfigs)
    the real kubeadm made (validities: kubeadm v1beta4's, e.g. "2h", for a CA ending soon)."""
    binaries.require("kubeadm")
    made = 0

    def make(
        node: str = "cp-1",
        ip: str = "10.0.0.11",
        algorithm: str = "RSA-2048",
        ca_validity: str | None = None,
        cert_validity: str | None = None,
    ) -> Path:
        nonlocal made
        made += 1
        root = tmp_path / f"kubeadm-{node}-{made}"
        return kubeadm_tree.build(root, node, ip, algorithm, ca_validity, cert_validity)

    return make


@pytest.fixture
def root_for_kubeadm_check() -> None:
    """kubeadm_tree.check_expiration mounts in a private namespace: skip without root, or
    fail when CI is set."""
    if os.geteuid() != 0:
        binaries.gate("kubeadm check-expiration runs in a private mount namespace: needs root")
