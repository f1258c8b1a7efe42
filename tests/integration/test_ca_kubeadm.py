"""CA renewal on trees the real kubeadm made with a short CA validity (kubeadm v1beta4's
``caCertificateValidityPeriod``), read back by ``kubeadm certs check-expiration`` and verified
by ``openssl verify`` at a time past the old CA certificate's end.

kubeadm is the reference for what its files mean, openssl an independent verifier: if kubeadm
reads the renewed tree and openssl verifies every leaf kubeadm signed against the renewed CA
after the old one ended, the cluster keeps working through the old CA's end.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.decide import carenewal, pki, policy
from reconciler.node import execute, host, observe
from reconciler.run import once
from tests.controlplane import kubeadm_tree

pytestmark = [pytest.mark.kubeadm, pytest.mark.usefixtures("root_for_kubeadm_check")]

RENEW = """\
apiVersion: kucero.io/v1alpha1
kind: RotationPolicy
spec:
  ca: {mode: renew}
  kubeadm: {restart: none}
  kubelet: {restart: none}
"""
# the same, with leaf renewal off: only the CAs change
CA_ONLY = RENEW.replace("restart: none}", "restart: none, enabled: false}", 1)
CA_FILES = {"ca": "ca", "front-proxy-ca": "front-proxy-ca", "etcd-ca": "etcd/ca"}
# every leaf kubeadm made, by the CA that signed it
LEAVES = {
    "apiserver": "ca",
    "apiserver-kubelet-client": "ca",
    "front-proxy-client": "front-proxy-ca",
    "apiserver-etcd-client": "etcd-ca",
    "etcd/server": "etcd-ca",
    "etcd/peer": "etcd-ca",
    "etcd/healthcheck-client": "etcd-ca",
}


def openssl_verifies(
    ca_file: Path, leaf: Path, at: dt.datetime
) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` of ``leaf`` against ``ca_file`` alone, as if it were ``at``."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to cross-check the renewed CA"
    argv = [openssl, "verify", "-attime", str(int(at.timestamp())), "-CAfile", str(ca_file)]
    return subprocess.run([*argv, str(leaf)], capture_output=True, text=True, check=False)


def kubeadm_dates(root: Path) -> dict[str, str]:
    info = kubeadm_tree.check_expiration(root)
    rows = info["certificates"] + info["certificateAuthorities"]
    assert not [r for r in rows if r.get("missing")], rows
    return {r["name"]: r["expirationDate"] for r in rows}


@pytest.mark.parametrize("algorithm", ["ECDSA-P256", "RSA-2048"])
def test_kucero_renews_a_short_lived_kubeadm_ca_and_kubeadm_and_openssl_agree(
    kubeadm_node: Any, tmp_path: Path, algorithm: str
) -> None:
    root = kubeadm_node(algorithm=algorithm, ca_validity="2h", cert_validity="1h")
    pki_dir = root / "etc/kubernetes/pki"
    old = {n: pki.load_cert((pki_dir / f"{f}.crt").read_bytes()) for n, f in CA_FILES.items()}
    before = kubeadm_dates(root)
    policy_file = tmp_path / "renew.yaml"
    policy_file.write_text(CA_ONLY)
    argv = ["node", "--once", "--host-root", root, "--policy", policy_file, "--node-name", "cp-1"]
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *map(str, argv)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OTHER NODES" in done.stdout

    after = kubeadm_dates(root)  # kubeadm parses every file kucero rewrote
    ten_years = dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)
    for name, cert in old.items():
        renewed = pki.load_cert((pki_dir / f"{CA_FILES[name]}.crt").read_bytes())
        assert carenewal.same_ca(renewed, cert), name
        assert abs(dt.datetime.fromisoformat(after[name]) - ten_years) < dt.timedelta(minutes=10)
    for name in after:
        if name not in old:
            assert after[name] == before[name], name  # no leaf was re-issued

    past_the_old_end = old["ca"].not_valid_after_utc + dt.timedelta(hours=1)
    for leaf, ca in LEAVES.items():
        leaf_file = pki_dir / f"{leaf}.crt"
        ca_file = pki_dir / f"{CA_FILES[ca]}.crt"
        assert openssl_verifies(ca_file, leaf_file, dt.datetime.now(dt.UTC)).returncode == 0
        # the leaf itself ends after an hour; what matters is that the renewed CA is a valid
        # anchor after the old CA's end: verify at the leaf's last minute there
        cert = pki.load_cert(leaf_file.read_bytes())
        at = min(past_the_old_end, cert.not_valid_after_utc - dt.timedelta(minutes=1))
        assert openssl_verifies(ca_file, leaf_file, at).returncode == 0, leaf
    # kubeconfigs: their embedded CA is the renewed one
    for conf in ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf"):
        seen = observe.observe(host.Host(root))
        anchor = next(a for a in seen.anchors if a.path == f"/etc/kubernetes/{conf}")
        assert anchor.certs == (seen.cas["ca"].cert,), conf


def test_a_kubeadm_tree_whose_ca_already_ended_is_recovered_and_verifies(
    kubeadm_node: Any, tmp_path: Path
) -> None:
    """The recovery runbook on a real kubeadm tree: observed three hours on, when its 2-hour
    CA and 1-hour leaves have all ended. One pass renews the CAs from their keys, then the
    leaves against the renewed CAs; openssl verifies every leaf then."""
    root = kubeadm_node(algorithm="ECDSA-P256", ca_validity="2h", cert_validity="1h")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)
    spec = policy.resolve(policy.load(RENEW, "renew.yaml"), {})
    result = once.run_once(
        host.Host(root),
        spec,
        "cp-1",
        lambda: later,
        execute.Settings(kubelet_restart_command=("true",)),
    )
    assert result.converged, result.failures
    assert set(result.ca_renewed) == set(CA_FILES)
    pki_dir = root / "etc/kubernetes/pki"
    for leaf, ca in LEAVES.items():
        done = openssl_verifies(pki_dir / f"{CA_FILES[ca]}.crt", pki_dir / f"{leaf}.crt", later)
        assert done.returncode == 0, (leaf, done.stdout, done.stderr)
    rows = kubeadm_tree.check_expiration(root)  # kubeadm reads the recovered tree
    for row in rows["certificateAuthorities"]:
        assert dt.datetime.fromisoformat(row["expirationDate"]) > later + dt.timedelta(days=3600)
    seen = observe.observe(host.Host(root))
    admin = next(a for a in seen.anchors if a.path == "/etc/kubernetes/admin.conf")
    assert admin.certs == (seen.cas["ca"].cert,)
