"""Kubernetes API clients acting as any user of the test control plane.

A user is a client certificate minted by the cluster CA (``kubernetes-admin`` in
``system:masters``, ``system:node:cp-1`` in ``system:nodes``...) or a service account whose token
comes from the TokenRequest API, exactly as kubelets and pods authenticate. One ``ApiClient`` per
user, made on first use and reused: each client owns a connection pool, and making many leaks
(see docs/pitfalls.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.controlplane import certs, cluster

ADMIN = "kubernetes-admin"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
# Tokens outlive any test session; the API server caps them at its own maximum anyway.
TOKEN_SECONDS = 24 * 3600


def api_client(
    plane: cluster.ControlPlane,
    crt: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
) -> Any:
    """A new ``kubernetes.client.ApiClient`` for ``plane`` with these credentials."""
    config = client.Configuration()
    config.host = plane.server
    config.ssl_ca_cert = str(plane.pki / "ca.crt")
    if crt and key:
        config.cert_file, config.key_file = str(crt), str(key)
    if token:
        config.api_key = {"authorization": token}
        config.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(config)


def default_groups(user: str) -> tuple[str, ...]:
    """The groups a user has on a kubeadm cluster: a node is in ``system:nodes`` (without it the
    Node authorizer does not treat it as a node), the admin in ``system:masters``."""
    if user.startswith("system:node:"):
        return ("system:nodes",)
    if user == ADMIN:
        return ("system:masters",)
    return ()


class Clients:
    """The clients of one control plane, one per (user, groups); ``close`` closes them all."""

    def __init__(self, plane: cluster.ControlPlane) -> None:
        self.plane = plane
        self._ca = plane.ca()
        self._made: dict[tuple[str, tuple[str, ...]], Any] = {}

    def admin(self) -> Any:
        return self.user(ADMIN)

    def user(self, name: str, groups: tuple[str, ...] | None = None) -> Any:
        """A client acting as ``name``: ``system:serviceaccount:<ns>:<sa>`` authenticates with a
        TokenRequest token (the service account is created if missing), anyone else with a
        client certificate in ``groups`` (default: ``default_groups(name)``)."""
        groups = default_groups(name) if groups is None else tuple(groups)
        if (name, groups) not in self._made:
            if name.startswith(SERVICE_ACCOUNT_PREFIX):
                namespace, account = name.removeprefix(SERVICE_ACCOUNT_PREFIX).split(":", 1)
                made = api_client(self.plane, token=self.token(namespace, account))
            else:
                directory = self.plane.dir / "users"
                crt, key = self._ca.issue(directory, certs.file_name(name, groups), name, groups)
                made = api_client(self.plane, crt, key)
            self._made[(name, groups)] = made
        return self._made[(name, groups)]

    def token(self, namespace: str, account: str) -> str:
        """A token for the service account ``namespace/account`` from the TokenRequest API,
        creating the service account if it does not exist."""
        core = client.CoreV1Api(self.admin())
        body = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
        try:
            core.create_namespaced_service_account(namespace, body)
        except ApiException as e:
            if e.status != 409:  # already there (made by a manifest under test): use it
                raise
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS)
        )
        status = core.create_namespaced_service_account_token(account, namespace, request).status
        assert status is not None and status.token, f"no token for {namespace}/{account}"
        return str(status.token)

    def bound_token(self, namespace: str, account: str, node: str) -> str:
        """A token for ``namespace/account`` as the kubelet of ``node`` gets it for a pod there:
        bound to a Pod with ``spec.nodeName: node`` (made if missing; no kubelet runs it), so
        the API server adds ``authentication.kubernetes.io/node-name: node`` to the user's
        extra. The token stops working when that Pod is deleted."""
        core = client.CoreV1Api(self.admin())
        self.token(namespace, account)  # creates the service account if missing
        name = f"{account}-{node}"
        body = client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(
                service_account_name=account,
                node_name=node,
                # never evicted from a Node whose kubelet never reports (there is none)
                tolerations=[client.V1Toleration(operator="Exists")],
                containers=[client.V1Container(name="kucero", image="kucero")],
            ),
        )
        try:
            pod = core.create_namespaced_pod(namespace, body)
        except ApiException as e:
            if e.status != 409:
                raise
            pod = core.read_namespaced_pod(name, namespace)
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[],
                expiration_seconds=TOKEN_SECONDS,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=name, uid=pod.metadata.uid
                ),
            )
        )
        status = core.create_namespaced_service_account_token(account, namespace, request).status
        assert status is not None and status.token, f"no token for {namespace}/{account}"
        return str(status.token)

    def close(self) -> None:
        for made in self._made.values():
            made.close()
        self._made.clear()
