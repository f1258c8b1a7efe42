"""kucero and the real kubeadm agree: on trees kubeadm made, and on trees kucero renewed.

kubeadm is the reference for what a kubeadm node's certificates mean; if `kubeadm certs
check-expiration` reads our renewed tree without errors and reports the new dates, kubeadm (and
so `kubeadm upgrade`, `kubeadm certs renew`) will keep working on nodes kucero looked after.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from reconciler.node import host as host_
from reconciler.node import observe
from tests.controlplane import kubeadm_tree

pytestmark = [pytest.mark.kubeadm, pytest.mark.usefixtures("root_for_kubeadm_check")]

# All kubeadm certificates (1 year) fall inside this window; renewed ones get two years.
RENEW_ALL = """\
apiVersion: kucero.io/v1alpha1
kind: RotationPolicy
spec:
  kubeadm: {renewBefore: 8761h, certificateValidity: 17520h, restart: none}
  kubelet: {restart: none}
"""


def kucero(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def kucero_expiration(root: Path) -> dict[str, dict[str, Any]]:
    done = kucero("check-expiration", "--host-root", root, "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


def kubeadm_expiration(root: Path) -> dict[str, dict[str, Any]]:
    info = kubeadm_tree.check_expiration(root)
    rows = {c["name"]: c | {"kind": "leaf"} for c in info["certificates"]}
    rows |= {c["name"]: c | {"kind": "ca"} for c in info["certificateAuthorities"]}
    return rows


def assert_agree(root: Path) -> dict[str, dict[str, Any]]:
    ours, theirs = kucero_expiration(root), kubeadm_expiration(root)
    present = {n for n, row in theirs.items() if not row.get("missing")}
    assert present <= set(ours), present - set(ours)
    for name in present:
        assert ours[name]["notAfter"] == theirs[name]["expirationDate"], name
        assert ours[name]["externallyManaged"] == theirs[name]["externallyManaged"], name
        if theirs[name]["kind"] == "leaf":
            assert ours[name]["issuer"] == theirs[name]["caName"], name
    return theirs


@pytest.mark.parametrize("algorithm", ["RSA-2048", "ECDSA-P256"])
def test_check_expiration_agrees_with_kubeadm_on_a_kubeadm_tree(
    kubeadm_node: Any, algorithm: str
) -> None:
    root = kubeadm_node(algorithm=algorithm)
    theirs = assert_agree(root)
    assert len([r for r in theirs.values() if r["kind"] == "leaf" and not r["missing"]]) == 11


def test_externally_managed_agrees_with_kubeadm(kubeadm_node: Any) -> None:
    root = kubeadm_node()
    (root / "etc/kubernetes/pki/front-proxy-ca.key").unlink()
    theirs = assert_agree(root)
    assert (
        theirs["front-proxy-client"]["externallyManaged"]
        and theirs["front-proxy-ca"]["externallyManaged"]
    )
    assert not theirs["apiserver"]["externallyManaged"]


@pytest.mark.parametrize("algorithm", ["RSA-2048", "ECDSA-P256"])
def test_kubeadm_reads_the_tree_kucero_renewed(
    kubeadm_node: Any, tmp_path: Path, algorithm: str
) -> None:
    root = kubeadm_node(algorithm=algorithm)
    before = kubeadm_expiration(root)
    policy = tmp_path / "renew-all.yaml"
    policy.write_text(RENEW_ALL)
    done = kucero("node", "--once", "--host-root", root, "--policy", policy, "--node-name", "cp-1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" renew ") + done.stdout.count("\nrenew ") >= 11

    after = assert_agree(root)  # kubeadm parses every renewed file (it fails on any error)
    two_years = dt.datetime.now(dt.UTC) + dt.timedelta(days=730)
    for name, row in after.items():
        if row["kind"] != "leaf":
            assert row["expirationDate"] == before[name]["expirationDate"]  # CAs untouched
            continue
        expires = dt.datetime.fromisoformat(row["expirationDate"])
        assert abs(expires - two_years) < dt.timedelta(minutes=10), name
        assert not row["externallyManaged"] and not row["missing"]

    # kubeadm's own profile survives: same subject and SANs as kubeadm wrote them
    seen = observe.observe(host_.Host(root))
    apiserver = seen.leaves["apiserver"].cert
    assert apiserver is not None
    sans = apiserver.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc.cluster.local" in sans.get_values_for_type(x509.DNSName)
    assert all(leaf.key_matches for leaf in seen.leaves.values())


def test_fabricated_ecdsa_leaves_have_kubeadms_key_usages(
    kubeadm_node: Any, tmp_path: Path
) -> None:
    """fabricate builds what kubeadm builds: kubeadm sets keyEncipherment on ECDSA leaves too
    (NewSignedCert), so a renewal that copies usages must meet it in the unit tests as well."""
    from reconciler import fabricate
    from reconciler.model import kubeadm

    real = kubeadm_node(algorithm="ECDSA-P256")
    made = fabricate.build(
        tmp_path / "made", dt.datetime.now(dt.UTC), fabricate.Options(key_type="ecdsa")
    )

    def usages(root: Path, leaf: kubeadm.Leaf) -> x509.KeyUsage:
        cert = x509.load_pem_x509_certificate((root / leaf.path.lstrip("/")).read_bytes())
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value

    certificates = [leaf for leaf in kubeadm.LEAVES if leaf.kind == "certificate"]
    assert certificates
    for leaf in certificates:
        assert usages(made, leaf) == usages(real, leaf), leaf.name
        assert usages(made, leaf).key_encipherment, leaf.name
