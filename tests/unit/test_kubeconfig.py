"""Kubeconfig credentials: which user, embedded or referenced, rewritten without collateral."""

from __future__ import annotations

import base64

import pytest
import yaml

from reconciler.decide import kubeconfig

DOC = {
    "apiVersion": "v1",
    "clusters": [
        {
            "cluster": {"certificate-authority-data": "Q0E=", "server": "https://10.0.0.1:6443"},
            "name": "kubernetes",
        }
    ],
    "contexts": [
        {"context": {"cluster": "kubernetes", "user": "other"}, "name": "other@kubernetes"},
        {
            "context": {"cluster": "kubernetes", "user": "admin", "namespace": "x"},
            "name": "admin@kubernetes",
        },
    ],
    "current-context": "admin@kubernetes",
    "kind": "Config",
    "preferences": {"colors": True},
    "users": [
        {"name": "other", "user": {"token": "abc"}},
        {
            "name": "admin",
            "user": {
                "client-certificate-data": "Q0VSVA==",
                "client-key-data": "S0VZ",
                "username": "u",
            },
        },
    ],
}


def test_credentials_of_the_current_context_user() -> None:
    creds = kubeconfig.credentials(DOC, "/etc/kubernetes/admin.conf")
    assert (creds.user, creds.cert_data, creds.key_data, creds.embedded) == (
        "admin",
        b"CERT",
        b"KEY",
        True,
    )


def test_relative_file_references_resolve_against_the_kubeconfig_directory() -> None:
    doc = {
        "users": [
            {"name": "n", "user": {"client-certificate": "pki/a.crt", "client-key": "/abs/a.key"}}
        ]
    }
    creds = kubeconfig.credentials(doc, "/etc/kubernetes/x.conf")
    assert (creds.cert_file, creds.key_file, creds.embedded) == (
        "/etc/kubernetes/pki/a.crt",
        "/abs/a.key",
        False,
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"users": []}, "no users"),
        ({"kind": "Config"}, "no users"),
        (
            {"current-context": "c", "contexts": [], "users": [{"name": "u", "user": {}}]},
            "current-context 'c' is not among the contexts",
        ),
        (
            {
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"user": "x"}}],
                "users": [{"name": "u", "user": {}}],
            },
            "names user 'x', which is absent",
        ),
        (
            {"users": [{"name": "u", "user": {"client-key-data": "S0VZ"}}]},
            "user 'u' has no client certificate",
        ),
        (
            {"users": [{"name": "u", "user": {"client-certificate-data": "Q0VSVA=="}}]},
            "user 'u' has no client key",
        ),
        (
            {
                "users": [
                    {
                        "name": "u",
                        "user": {"client-certificate-data": "!!", "client-key-data": "S0VZ"},
                    }
                ]
            },
            "not valid base64",
        ),
        (
            {"users": [{"name": "a", "user": {}}, {"name": "b", "user": {}}]},
            "no current-context and several users",
        ),
    ],
    ids=[
        "empty-users",
        "no-users-key",
        "dangling-context",
        "dangling-user",
        "no-cert",
        "no-key",
        "bad-base64",
        "ambiguous",
    ],
)
def test_unusable_kubeconfigs_say_why(doc: dict[str, object], message: str) -> None:
    with pytest.raises(kubeconfig.KubeconfigError, match=message):
        kubeconfig.credentials(doc, "/etc/kubernetes/admin.conf")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["- a\n", "a: [\n"], ids=["list", "broken"])
def test_parse_rejects_non_kubeconfigs(text: str) -> None:
    with pytest.raises(kubeconfig.KubeconfigError):
        kubeconfig.parse(text)


def test_with_embedded_changes_only_that_users_data() -> None:
    out = yaml.safe_load(kubeconfig.with_embedded(DOC, "admin", b"NEWCERT", b"NEWKEY"))
    admin = out["users"][1]["user"]
    assert base64.b64decode(admin["client-certificate-data"]) == b"NEWCERT"
    assert base64.b64decode(admin["client-key-data"]) == b"NEWKEY"
    out["users"][1]["user"] = DOC["users"][1]["user"]  # type: ignore[index]
    assert out == DOC
    assert list(out) == list(DOC)  # key order kept
    assert DOC["users"][1]["user"]["client-key-data"] == "S0VZ"  # type: ignore[index]  # input untouched


def test_with_file_references_replaces_embedded_data() -> None:
    path = "/var/lib/kubelet/pki/kubelet-client-current.pem"
    out = yaml.safe_load(kubeconfig.with_file_references(DOC, "admin", path, path))
    assert out["users"][1]["user"] == {
        "username": "u",
        "client-certificate": path,
        "client-key": path,
    }
    assert out["clusters"] == DOC["clusters"] and out["contexts"] == DOC["contexts"]


def test_editing_an_absent_user_fails() -> None:
    with pytest.raises(kubeconfig.KubeconfigError, match="user 'nobody' not found"):
        kubeconfig.with_embedded(DOC, "nobody", b"", b"")


def test_renewal_refreshes_the_ca_data_of_the_cluster_in_use() -> None:
    doc = {
        "clusters": [
            {"name": "other", "cluster": {"certificate-authority-data": "T0xE"}},
            {"name": "kubernetes", "cluster": {"certificate-authority-data": "T0xE"}},
        ],
        "contexts": [{"name": "c", "context": {"cluster": "kubernetes", "user": "admin"}}],
        "current-context": "c",
        "users": [
            {"name": "admin", "user": {"client-certificate-data": "", "client-key-data": ""}}
        ],
    }
    out = yaml.safe_load(kubeconfig.with_embedded(doc, "admin", b"C", b"K", ca_pem=b"NEWCA"))
    assert out["clusters"][1]["cluster"]["certificate-authority-data"] == "TkVXQ0E="
    assert out["clusters"][0]["cluster"]["certificate-authority-data"] == "T0xE"


def test_renewal_leaves_a_cluster_that_names_a_ca_file_alone() -> None:
    doc = {
        "clusters": [{"name": "k", "cluster": {"certificate-authority": "/ca.crt"}}],
        "users": [
            {"name": "admin", "user": {"client-certificate-data": "", "client-key-data": ""}}
        ],
    }
    out = yaml.safe_load(kubeconfig.with_embedded(doc, "admin", b"C", b"K", ca_pem=b"NEWCA"))
    assert out["clusters"][0]["cluster"] == {"certificate-authority": "/ca.crt"}
