"""Fixtures for tests against the real control plane (kube-apiserver, etcd, kubeadm).

One control plane per test session (start-up costs seconds), a fresh namespace per test,
clients acting as any user (admin, a node through a client certificate, a service account
through TokenRequest), Node objects, and node trees made by the real kubeadm.

Without the binaries the tests that need them skip with a message saying how to build them;
with ``CI`` set they fail instead, so a green CI run always means they ran.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane import binaries, cluster, kubeadm_tree


def _require_binaries(*names: str) -> None:
    missing = [n for n in binaries.missing() if not names or n in names]
    if not missing:
        return
    message = (
        f"{', '.join(missing)} not built in {binaries.directory()}: run `make testbin` (needs Go)"
    )
    if os.environ.get("CI"):
        pytest.fail(message + " [CI is set: missing binaries are a failure]", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ControlPlane]:
    _require_binaries("etcd", "kube-apiserver", "kube-controller-manager")
    directory = tmp_path_factory.mktemp("controlplane")
    plane = cluster.start(directory, with_controller_manager=True)
    try:
        yield plane
    finally:
        cluster.stop(directory)


def api_client(
    plane: cluster.ControlPlane,
    crt: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
) -> Any:
    from kubernetes import client

    config = client.Configuration()
    config.host = plane.server
    config.ssl_ca_cert = str(plane.pki / "ca.crt")
    if crt and key:
        config.cert_file, config.key_file = str(crt), str(key)
    if token:
        config.api_key = {"authorization": token}
        config.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(config)


@pytest.fixture(scope="session")
def admin(control_plane: cluster.ControlPlane) -> Iterator[Any]:
    """An ApiClient in system:masters."""
    pki = control_plane.pki
    api = api_client(control_plane, pki / "admin.crt", pki / "admin.key")
    yield api
    api.close()


@pytest.fixture(scope="session")
def client_as(control_plane: cluster.ControlPlane) -> Iterator[Callable[..., Any]]:
    """``client_as("system:node:cp-1", ("system:nodes",))`` -> an ApiClient with a client
    certificate for that user, cached per user."""
    made: dict[tuple[str, tuple[str, ...]], Any] = {}
    ca = control_plane.ca()

    def make(user: str, groups: tuple[str, ...] = ()) -> Any:
        if (user, groups) not in made:
            safe = user.replace(":", "_") + "".join(f"+{g.replace(':', '_')}" for g in groups)
            crt, key = ca.issue(control_plane.dir / "users", safe, user, groups)
            made[(user, groups)] = api_client(control_plane, crt, key)
        return made[(user, groups)]

    yield make
    for api in made.values():
        api.close()


@pytest.fixture
def namespace(admin: Any) -> Iterator[str]:
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def service_account_client(
    admin: Any, control_plane: cluster.ControlPlane, namespace: str
) -> Iterator[Callable[[str], Any]]:
    """``service_account_client("kucero")`` -> an ApiClient authenticated as that service
    account of the test's namespace, with a token from the TokenRequest API."""
    from kubernetes import client

    core = client.CoreV1Api(admin)
    made: list[Any] = []

    def make(name: str) -> Any:
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        token = core.create_namespaced_service_account_token(name, namespace, request).status.token
        api = api_client(control_plane, token=token)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def make_node(admin: Any) -> Iterator[Callable[..., Any]]:
    """``make_node("cp-1", addresses={"InternalIP": "10.0.0.11"}, labels={...})`` -> the Node,
    deleted after the test."""
    from kubernetes import client

    core = client.CoreV1Api(admin)
    created: list[str] = []

    def make(
        name: str, addresses: dict[str, str] | None = None, labels: dict[str, str] | None = None
    ) -> Any:
        node = core.create_node(
            client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))
        )
        created.append(name)
        if addresses:
            node.status = client.V1NodeStatus(
                addresses=[client.V1NodeAddress(type=t, address=a) for t, a in addresses.items()]
            )
            node = core.replace_node_status(name, node)
        return node

    yield make
    for name in created:
        core.delete_node(name)


@pytest.fixture
def kubeadm_node(tmp_path: Path) -> Callable[..., Path]:
    """``kubeadm_node(node="cp-1", algorithm="RSA-2048")`` -> a host root made by the real kubeadm."""
    _require_binaries("kubeadm")
    counter = iter(range(100))

    def make(node: str = "cp-1", ip: str = "10.0.0.11", algorithm: str = "RSA-2048") -> Path:
        return kubeadm_tree.build(tmp_path / f"kubeadm-node-{next(counter)}", node, ip, algorithm)

    return make
