"""The trust-anchor table and the rewriting of an anchor: only the certificates of the CA being
renewed change, everything else in the file stays byte for byte."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
import yaml

from reconciler import fabricate
from reconciler.decide import carenewal, pki, trustanchors
from reconciler.model import hoststate

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
TEN_YEARS = dt.timedelta(days=3650)
CA = fabricate.make_ca("kubernetes", NOW, "ecdsa", dt.timedelta(days=30))
OTHER = fabricate.make_ca("corporate-root", NOW, "ecdsa")
RENEWED = carenewal.renew(CA[0], CA[1], 11, NOW, TEN_YEARS)
KUBELET_CONFIG = {"authentication": {"x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"}}}


def test_table_lists_every_kubeadm_anchor_once_per_path() -> None:
    got = {(p.ca, p.path, p.kind) for p in trustanchors.places(KUBELET_CONFIG)}
    assert got == {
        ("ca", "/etc/kubernetes/pki/ca.crt", "pem"),
        ("front-proxy-ca", "/etc/kubernetes/pki/front-proxy-ca.crt", "pem"),
        ("etcd-ca", "/etc/kubernetes/pki/etcd/ca.crt", "pem"),
        ("ca", "/etc/kubernetes/admin.conf", "kubeconfig"),
        ("ca", "/etc/kubernetes/super-admin.conf", "kubeconfig"),
        ("ca", "/etc/kubernetes/controller-manager.conf", "kubeconfig"),
        ("ca", "/etc/kubernetes/scheduler.conf", "kubeconfig"),
        ("ca", "/etc/kubernetes/kubelet.conf", "kubeconfig"),
    }


@pytest.mark.parametrize(
    ("config", "extra"),
    [
        pytest.param({}, None, id="no-kubelet-config"),
        pytest.param(
            {"authentication": {"x509": {"clientCAFile": "/var/lib/kubelet/ca.crt"}}},
            "/var/lib/kubelet/ca.crt",
            id="own-client-ca-file",
        ),
        pytest.param(
            {"authentication": {"x509": {"clientCAFile": "ca.crt"}}}, None, id="relative-ignored"
        ),
        pytest.param({"authentication": "oops"}, None, id="malformed-config"),
    ],
)
def test_a_client_ca_file_elsewhere_is_one_more_anchor_of_the_cluster_ca(
    config: dict[str, object], extra: str | None
) -> None:
    paths = [p.path for p in trustanchors.places(config) if p.ca == "ca"]
    assert (extra in paths) == (extra is not None)
    assert len(paths) == 6 + (extra is not None)


def test_pem_rewrite_replaces_only_this_cas_certificates_and_keeps_the_rest() -> None:
    data = (
        b"# trust bundle kept by ops\n"
        + pki.cert_pem(OTHER[0])
        + pki.cert_pem(CA[0])
        + b"# end\n"
        + pki.cert_pem(CA[0])  # a duplicate: one copy of the renewed one remains
    )
    out = trustanchors.rewrite_pem(data, RENEWED)
    assert out == (
        b"# trust bundle kept by ops\n"
        + pki.cert_pem(OTHER[0])
        + pki.cert_pem(RENEWED)
        + b"# end\n"
    )


def test_pem_rewrite_of_a_file_without_this_ca_changes_nothing() -> None:
    data = pki.cert_pem(OTHER[0])
    assert trustanchors.rewrite_pem(data, RENEWED) == data


def test_kubeconfig_rewrite_changes_only_the_clusters_trusting_this_ca() -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "kubernetes", "cluster": {"certificate-authority-data": b64(pki.cert_pem(CA[0])), "server": "https://10.0.0.11:6443"}},
            {"name": "corp", "cluster": {"certificate-authority-data": b64(pki.cert_pem(OTHER[0]))}},
            {"name": "by-file", "cluster": {"certificate-authority": "/etc/kubernetes/pki/ca.crt"}},
        ],
        "users": [{"name": "u", "user": {"client-certificate-data": "eA=="}}],
    }  # fmt: skip
    out = trustanchors.rewrite_kubeconfig(doc, RENEWED)
    clusters = {c["name"]: c["cluster"] for c in out["clusters"]}
    assert clusters["kubernetes"]["certificate-authority-data"] == b64(pki.cert_pem(RENEWED))
    assert clusters["kubernetes"]["server"] == "https://10.0.0.11:6443"
    assert clusters["corp"] == doc["clusters"][1]["cluster"]  # type: ignore[index]
    assert clusters["by-file"] == {"certificate-authority": "/etc/kubernetes/pki/ca.crt"}
    assert out["users"] == doc["users"]
    assert yaml.safe_load(yaml.safe_dump(out)) == out


def _anchor(*certs: object) -> hoststate.Anchor:
    return hoststate.Anchor("ca", "/etc/kubernetes/pki/ca.crt", "pem", certs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("held", "stale"),
    [
        pytest.param((CA[0],), True, id="old-only"),
        pytest.param((RENEWED,), False, id="renewed-already"),
        pytest.param((CA[0], RENEWED), False, id="bundle-with-both"),
        pytest.param((OTHER[0],), False, id="another-ca-is-not-an-anchor-of-this-one"),
    ],
)
def test_an_anchor_is_stale_when_it_trusts_this_ca_only_in_an_older_certificate(
    held: tuple[object, ...], stale: bool
) -> None:
    assert trustanchors.stale(_anchor(*held), RENEWED) == stale


def test_loaded_by_kubelet_means_its_kubeconfig_and_client_ca_file() -> None:
    assert trustanchors.loaded_by_kubelet("/etc/kubernetes/kubelet.conf", {})
    assert trustanchors.loaded_by_kubelet("/etc/kubernetes/pki/ca.crt", KUBELET_CONFIG)
    assert not trustanchors.loaded_by_kubelet("/etc/kubernetes/pki/ca.crt", {})
