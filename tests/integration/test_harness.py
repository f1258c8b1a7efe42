"""The harness is the real thing: the Node authorizer, NodeRestriction, RBAC, CSRs and
TokenRequest behave as on a kubeadm cluster."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.controlplane import certs, clients

pytestmark = pytest.mark.controlplane

NODES = ("system:nodes",)


def _annotate(api: Any, node: str, key: str, value: str) -> Any:
    return client.CoreV1Api(api).patch_node(node, {"metadata": {"annotations": {key: value}}})


def test_node_may_annotate_itself_but_not_another_node(
    admin: Any, client_as: Any, make_node: Any
) -> None:
    make_node("cp-1", addresses={"InternalIP": "10.0.0.11", "Hostname": "cp-1"})
    make_node("cp-2", addresses={"InternalIP": "10.0.0.12"})
    cp1 = client_as("system:node:cp-1")

    patched = _annotate(cp1, "cp-1", "kucero.io/status", '{"phase": "Converged"}')
    assert patched.metadata.annotations["kucero.io/status"] == '{"phase": "Converged"}'

    with pytest.raises(ApiException) as refused:
        _annotate(cp1, "cp-2", "kucero.io/status", "{}")
    assert refused.value.status == 403
    # refused by NodeRestriction, not for lack of an RBAC rule
    message = json.loads(refused.value.body)["message"]
    assert 'node "cp-1" is not allowed to modify node "cp-2"' in message
    assert "kucero.io/status" not in (
        client.CoreV1Api(admin).read_node("cp-2").metadata.annotations or {}
    )


def test_node_user_outside_system_nodes_is_not_a_node(client_as: Any, make_node: Any) -> None:
    make_node("cp-1")
    impostor = client_as("system:node:cp-1", ())  # the Node authorizer needs the group too
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(impostor).read_node("cp-1")
    assert refused.value.status == 403


def test_node_csr_is_visible_to_admin_with_its_requestor(
    admin: Any, client_as: Any, make_node: Any
) -> None:
    make_node("cp-1", addresses={"InternalIP": "10.0.0.11"})
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "system:node:cp-1"),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("cp-1")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    name = f"csr-cp-1-{dt.datetime.now(dt.UTC):%H%M%S%f}"
    body = client.V1CertificateSigningRequest(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1CertificateSigningRequestSpec(
            request=base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
            signer_name="kubernetes.io/kubelet-serving",
            usages=["digital signature", "server auth"],
        ),
    )
    certificates = client.CertificatesV1Api(client_as("system:node:cp-1"))
    certificates.create_certificate_signing_request(body)
    try:
        listed = {
            c.metadata.name: c
            for c in client.CertificatesV1Api(admin).list_certificate_signing_request().items
        }
        assert listed[name].spec.username == "system:node:cp-1"
        assert "system:nodes" in listed[name].spec.groups
        assert listed[name].spec.signer_name == "kubernetes.io/kubelet-serving"
    finally:
        client.CertificatesV1Api(admin).delete_certificate_signing_request(name)


def test_service_account_token_authenticates_and_rbac_applies(
    service_account_client: Any, namespace: str
) -> None:
    api = service_account_client("kucero")
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(api).list_node()
    assert refused.value.status == 403
    assert f"system:serviceaccount:{namespace}:kucero" in refused.value.body


def test_unknown_client_certificate_is_unauthenticated(control_plane: Any, tmp_path: Any) -> None:
    stranger = certs.CA.create(tmp_path / "other-ca")
    crt, key = stranger.issue(tmp_path, "x", "system:node:cp-1", NODES)
    api = clients.api_client(control_plane, crt, key)
    try:
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(api).list_node()
        assert refused.value.status == 401
    finally:
        api.close()


def whoami(api: Any) -> tuple[str, list[str]]:
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    return review.status.user_info.username, review.status.user_info.groups


def test_kubeconfigs_for_subprocesses_authenticate_as_their_user(
    control_plane: Any, clients: Any, namespace: str
) -> None:
    node = control_plane.user_kubeconfig("system:node:cp-3", ("system:nodes",))
    token = clients.token(namespace, "kucero")
    account = control_plane.token_kubeconfig("kucero", token)
    for kubeconfig, user in [
        (node, "system:node:cp-3"),
        (account, f"system:serviceaccount:{namespace}:kucero"),
        (control_plane.admin_kubeconfig, "kubernetes-admin"),
    ]:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        try:
            assert whoami(api)[0] == user
        finally:
            api.close()


def test_client_as_gives_each_user_its_kubeadm_groups(client_as: Any, admin: Any) -> None:
    assert "system:nodes" in whoami(client_as("system:node:cp-4"))[1]
    assert "system:masters" in whoami(admin)[1]
    assert whoami(client_as("alice", ("devs",)))[1] == ["devs", "system:authenticated"]
