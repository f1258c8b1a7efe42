"""The kubeadm helpers by themselves: trees made by the real kubeadm are what a kubeadm node
holds, and ``kubeadm_tree.check_expiration`` reports kubeadm's own reading of a tree without
changing it or the machine.

These tests read certificates with ``cryptography`` only, so they hold whatever reconciler/ does;
the cross-checks against kucero are in test_kubeadm_crosscheck.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.controlplane import kubeadm_tree

pytestmark = [pytest.mark.kubeadm, pytest.mark.usefixtures("root_for_kubeadm_check")]

# kubeadm name -> (file under etc/kubernetes/pki, issuing CA)
LEAVES = {
    "apiserver": ("apiserver.crt", "ca"),
    "apiserver-kubelet-client": ("apiserver-kubelet-client.crt", "ca"),
    "apiserver-etcd-client": ("apiserver-etcd-client.crt", "etcd-ca"),
    "front-proxy-client": ("front-proxy-client.crt", "front-proxy-ca"),
    "etcd-server": ("etcd/server.crt", "etcd-ca"),
    "etcd-peer": ("etcd/peer.crt", "etcd-ca"),
    "etcd-healthcheck-client": ("etcd/healthcheck-client.crt", "etcd-ca"),
}
CAS = {"ca": "ca.crt", "etcd-ca": "etcd/ca.crt", "front-proxy-ca": "front-proxy-ca.crt"}
KUBECONFIGS = ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf")


def not_after(cert: x509.Certificate) -> str:
    return cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def embedded_cert(kubeconfig: Path) -> x509.Certificate:
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    return x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_kubeadm_tree_has_every_certificate_key_and_kubeconfig(
    kubeadm_node: Callable[..., Path],
) -> None:
    root = kubeadm_node(node="cp-7", ip="10.0.0.17")
    pki = root / "etc/kubernetes/pki"
    for crt in [*(f for f, _ in LEAVES.values()), *CAS.values()]:
        assert (pki / crt).is_file(), crt
        assert (pki / crt).with_suffix(".key").stat().st_mode & 0o077 == 0, crt
    assert (pki / "sa.key").is_file() and (pki / "sa.pub").is_file()
    for name in (*KUBECONFIGS, "kubelet.conf"):
        assert (root / "etc/kubernetes" / name).is_file(), name

    apiserver = x509.load_pem_x509_certificate((pki / "apiserver.crt").read_bytes())
    sans = apiserver.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "cp-7" in sans.get_values_for_type(x509.DNSName)
    assert "10.0.0.17" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


@pytest.mark.parametrize(
    ("algorithm", "key_type"),
    [("RSA-2048", rsa.RSAPublicKey), ("ECDSA-P256", ec.EllipticCurvePublicKey)],
)
def test_kubeadm_tree_uses_the_requested_key_algorithm(
    kubeadm_node: Callable[..., Path], algorithm: str, key_type: type
) -> None:
    pki = kubeadm_node(algorithm=algorithm) / "etc/kubernetes/pki"
    cert = x509.load_pem_x509_certificate((pki / "apiserver.crt").read_bytes())
    assert isinstance(cert.public_key(), key_type)


def test_check_expiration_reads_every_file_as_cryptography_does(
    kubeadm_node: Callable[..., Path],
) -> None:
    root = kubeadm_node()
    etc = root / "etc/kubernetes"
    before = snapshot(root)
    host_etc_kubernetes = Path("/etc/kubernetes").exists()

    info = kubeadm_tree.check_expiration(root)

    leaves = {c["name"]: c for c in info["certificates"]}
    cas = {c["name"]: c for c in info["certificateAuthorities"]}
    assert set(leaves) == set(LEAVES) | set(KUBECONFIGS)
    assert set(cas) == set(CAS)
    for name, (path, issuer) in LEAVES.items():
        cert = x509.load_pem_x509_certificate((etc / "pki" / path).read_bytes())
        assert leaves[name]["expirationDate"] == not_after(cert), name
        assert leaves[name]["caName"] == issuer, name
    for name in KUBECONFIGS:
        assert leaves[name]["expirationDate"] == not_after(embedded_cert(etc / name)), name
        assert leaves[name]["caName"] == "ca", name
    for name, path in CAS.items():
        cert = x509.load_pem_x509_certificate((etc / "pki" / path).read_bytes())
        assert cas[name]["expirationDate"] == not_after(cert), name
    rows = [*leaves.values(), *cas.values()]
    assert not any(r["missing"] or r["externallyManaged"] for r in rows)
    year = dt.timedelta(days=365).total_seconds()
    assert all(0 < leaves[n]["residualTime"] <= year for n in leaves)

    assert snapshot(root) == before  # kubeadm read the tree through a read-only mount
    assert Path("/etc/kubernetes").exists() == host_etc_kubernetes


def test_check_expiration_reports_missing_and_externally_managed(
    kubeadm_node: Callable[..., Path],
) -> None:
    root = kubeadm_node()
    pki = root / "etc/kubernetes/pki"
    (pki / "front-proxy-ca.key").unlink()
    (pki / "etcd/healthcheck-client.crt").unlink()
    (pki / "etcd/healthcheck-client.key").unlink()

    info = kubeadm_tree.check_expiration(root)

    rows = {c["name"]: c for c in [*info["certificates"], *info["certificateAuthorities"]]}
    assert rows["front-proxy-ca"]["externallyManaged"]
    assert rows["front-proxy-client"]["externallyManaged"]
    assert rows["etcd-healthcheck-client"]["missing"]
    assert not rows["apiserver"]["externallyManaged"] and not rows["apiserver"]["missing"]


def test_check_expiration_raises_with_kubeadms_words_on_a_broken_file(
    kubeadm_node: Callable[..., Path],
) -> None:
    root = kubeadm_node()
    (root / "etc/kubernetes/pki/apiserver.crt").write_text("not a certificate\n")
    with pytest.raises(RuntimeError, match=r"(?s)exit \d+.*apiserver"):
        kubeadm_tree.check_expiration(root)
