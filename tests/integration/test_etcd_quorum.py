"""The etcd quorum check against real etcd: a three-member cluster on loopback with a kubeadm
stacked etcd's TLS (tests/controlplane/etcd_cluster.py), asked as a node asks it, through its
tree's etcd manifest and healthcheck client certificate.

A member is restarted only while the others keep quorum without it; a single-member etcd may
restart (nothing beyond itself to lose); ``kucero node --once``, the recovery path when the API
server is down, refuses an etcd restart that would lose quorum and leaves etcd untouched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import fabricate
from reconciler.decide import components
from reconciler.model import staticpod
from reconciler.node import etcdquorum
from reconciler.node import host as host_
from tests.controlplane import binaries, cluster, etcd_cluster

pytestmark = pytest.mark.controlplane

PKI = "etc/kubernetes/pki/etcd"


def tree(base: Path, name: str, due: tuple[str, ...] = ()) -> Path:
    """A control-plane node tree (no kubelet stand-in: the etcd its manifest names is real)."""
    now = dt.datetime.now(dt.UTC)
    root = base / name
    fabricate.build(
        root,
        now,
        fabricate.Options(
            node_name=name,
            key_type="ecdsa",
            embedded_kubelet_conf=False,
            kubelet_config_rotation=True,
            expiries=tuple((n, dt.timedelta(days=3)) for n in due),
        ),
    )
    return root


def point_manifest_at(root: Path, member: etcd_cluster.Member) -> Path:
    """The tree's etcd manifest, listening where ``member`` listens."""
    manifests = root / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    ports = {"etcd": member.client_port, "etcd-peer": member.peer_port}
    path = manifests / "etcd.yaml"
    path.write_bytes(fabricate._manifest("etcd", ports=ports))
    return path


def etcd_pod(root: Path) -> staticpod.StaticPod:
    manifest = "/etc/kubernetes/manifests/etcd.yaml"
    data = host_.Host(root).read(manifest)
    assert data is not None
    return components.parse("etcd", manifest, data)


@pytest.fixture(scope="module")
def three(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, etcd_cluster.EtcdCluster]]:
    base = tmp_path_factory.mktemp("etcd3")
    root = tree(base, "cp-1", due=("etcd-server",))
    with etcd_cluster.EtcdCluster(base / "etcd", root / PKI, size=3) as made:
        point_manifest_at(root, made.members[0])
        yield root, made


def test_all_three_healthy_lets_a_member_restart(
    three: tuple[Path, etcd_cluster.EtcdCluster],
) -> None:
    root, _ = three
    assert etcdquorum.check(host_.Host(root), etcd_pod(root)) is None


def test_one_other_member_down_refuses_and_says_which(
    three: tuple[Path, etcd_cluster.EtcdCluster],
) -> None:
    root, etcd = three
    down = etcd.members[2]
    etcd.stop(down)
    try:
        why = etcdquorum.check(host_.Host(root), etcd_pod(root))
        assert why is not None, "restarting m1 with m3 down would leave m2 alone"
        assert "3 voting members" in why and "quorum needs 2" in why
        assert f"m3 ({down.client_url})" in why
    finally:
        etcd.restart(down)
    assert etcdquorum.check(host_.Host(root), etcd_pod(root)) is None


def test_node_once_keeps_the_quorum_guard_and_leaves_etcd_running(
    three: tuple[Path, etcd_cluster.EtcdCluster], tmp_path: Path
) -> None:
    """The recovery path (no API server at all): etcd-server is renewed, its restart owed, a
    peer is down: etcd is not restarted and the pass says why."""
    root, etcd = three
    manifest = root / "etc/kubernetes/manifests/etcd.yaml"
    before = hashlib.sha256(manifest.read_bytes()).hexdigest()
    local = etcd.members[0]
    etcd.stop(etcd.members[1])
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
        "spec: {kubeadm: {restart: manifest-move, healthTimeout: 10s}}\n"
    )
    try:
        done = subprocess.run(
            [
                sys.executable, "-m", "reconciler", "node", "--once", "--host-root", str(root),
                "--policy", str(policy), "--kubelet-restart-command", "true",
                "--manifest-grace", "1",
            ],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        out = done.stdout + done.stderr
        assert done.returncode == 1, out
        assert "restart-static-pod" in out and "quorum needs 2" in out, out
        assert "etcd-server" in out  # the renewal itself went through
        assert hashlib.sha256(manifest.read_bytes()).hexdigest() == before
        assert etcd.healthy(local), "the local member was never stopped"
        assert not (root / "etc/kubernetes/tmp/kucero-manifests/etcd.yaml").exists()
    finally:
        etcd.restart(etcd.members[1])


def test_single_member_etcd_may_restart(tmp_path: Path) -> None:
    """One control-plane node: no quorum beyond itself to lose (documented choice)."""
    root = tree(tmp_path, "solo")
    with etcd_cluster.EtcdCluster(tmp_path / "etcd", root / PKI, size=1) as etcd:
        point_manifest_at(root, etcd.members[0])
        assert etcdquorum.check(host_.Host(root), etcd_pod(root)) is None


def test_member_signed_by_another_ca_is_not_believed(tmp_path: Path) -> None:
    """A server on the member's port whose certificate the etcd CA did not sign is not asked."""
    root = tree(tmp_path, "cp-x")
    other = tree(tmp_path, "other")  # another tree: another etcd CA
    with etcd_cluster.EtcdCluster(tmp_path / "etcd", other / PKI, size=1) as etcd:
        point_manifest_at(root, etcd.members[0])
        why = etcdquorum.check(host_.Host(root), etcd_pod(root))
    assert why is not None and "not signed by the etcd CA" in why


def test_local_member_not_running_may_restart(tmp_path: Path) -> None:
    """Nothing listens on the client port: a member that is not running holds no quorum."""
    binaries.require("etcd")
    root = tree(tmp_path, "cp-down")
    member = etcd_cluster.Member("gone", tmp_path, cluster.free_port(), cluster.free_port())
    point_manifest_at(root, member)
    assert etcdquorum.check(host_.Host(root), etcd_pod(root)) is None
