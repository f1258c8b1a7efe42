"""``kucero node --once`` with ``ca.mode: renew`` on real trees: the offline CA renewal of one
control-plane node, recovery of a tree whose CA already expired, ``--ca-bundle`` on the other
nodes, and every kind of bad input the issue lists (a clear finding, no file changed)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from reconciler import cli, fabricate
from reconciler.decide import carenewal, pki
from reconciler.model import paths
from reconciler.node import host, observe

DAY = dt.timedelta(days=1)
REAL_NOW = dt.datetime.now(dt.UTC)
CAS = {"ca": "ca", "front-proxy-ca": "front-proxy-ca", "etcd-ca": "etcd/ca"}
DUE = {"expiries": tuple((n, 100 * DAY) for n in CAS)}
QUIET = {"embedded_kubelet_conf": False, "kubelet_config_rotation": True, "key_type": "ecdsa"}
HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
RENEW = HEAD + "spec: {ca: {mode: renew}, kubeadm: {restart: none}}\n"
KUBECONFIGS = ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf")


@pytest.fixture
def renew_policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(RENEW)
    return path


def node_once(
    root: Path, policy: Path, capsys: pytest.CaptureFixture[str], *extra: str | Path
) -> tuple[int, str]:
    marker = root.parent / f"{root.name}-kubelet-restarts"
    argv = ["node", "--once", "--host-root", root, "--policy", policy]
    argv += ["--kubelet-restart-command", f"sh -c 'echo restarted >> {marker}'", *extra]
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out + err


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != "kucero.lock"
    }


def ca_cert(root: Path, name: str) -> x509.Certificate:
    return pki.load_cert((root / f"etc/kubernetes/pki/{CAS[name]}.crt").read_bytes())


def kubeconfig_ca(path: Path) -> x509.Certificate:
    doc = yaml.safe_load(path.read_text())
    data = doc["clusters"][0]["cluster"]["certificate-authority-data"]
    return pki.load_cert(base64.b64decode(data))


def test_offline_renewal_renews_every_ca_and_every_anchor_and_says_what_other_nodes_need(
    make_tree: Callable[..., Path], renew_policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, **DUE, **QUIET)
    before = {n: ca_cert(root, n) for n in CAS}
    leaves_before = {n: leaf.cert for n, leaf in observe.observe(host.Host(root)).leaves.items()}
    code, out = node_once(root, renew_policy, capsys)
    assert code == 0, out
    assert "OTHER NODES: renewed ca, etcd-ca, front-proxy-ca on this node only" in out
    assert "--ca-bundle kucero-ca-bundle.pem" in out
    for name, old in before.items():
        new = ca_cert(root, name)
        assert carenewal.same_ca(new, old) and new.serial_number != old.serial_number
        left = new.not_valid_after_utc - dt.datetime.now(dt.UTC)
        assert dt.timedelta(days=3649) < left <= dt.timedelta(days=3650)
        key = (root / f"etc/kubernetes/pki/{CAS[name]}.key").read_bytes()
        assert pki.key_matches(new, pki.load_key(key))
    renewed_ca = ca_cert(root, "ca")
    for conf in (*KUBECONFIGS, "kubelet.conf"):
        assert kubeconfig_ca(root / "etc/kubernetes" / conf) == renewed_ca, conf
    seen = observe.observe(host.Host(root))
    for name, leaf in seen.leaves.items():  # no leaf re-issued, every one still verifies
        assert leaf.cert == leaves_before[name] and leaf.issued_by_ca, name
    assert (root.parent / f"{root.name}-kubelet-restarts").read_text() == "restarted\n"
    state = json.loads((root / paths.STATE.lstrip("/")).read_text())
    assert state["caPrevious"]["ca"]["notAfter"] == before["ca"].not_valid_after_utc.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    backup = next((root / "etc/kubernetes/tmp").glob("kucero-backup-*"))
    assert pki.load_cert((backup / "old/etc/kubernetes/pki/ca.crt").read_bytes()) == before["ca"]
    assert (backup / "old/etc/kubernetes/pki/ca.key").exists() is False  # a key is never written

    again = snapshot(root)
    code, out = node_once(root, renew_policy, capsys)
    assert code == 0 and "Nothing to do" in out, out
    assert snapshot(root) == again


def test_a_tree_whose_ca_and_leaves_already_expired_is_recovered_in_one_pass(
    make_tree: Callable[..., Path], renew_policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runbook's case: the CA ended, and with it every certificate capped at its end."""
    leaves = ("apiserver", "admin.conf", "etcd-server", "front-proxy-client", "scheduler.conf")
    expiries = tuple((n, -2 * DAY) for n in (*CAS, *leaves))
    root = make_tree(now=REAL_NOW, expiries=expiries, **QUIET)
    code, out = node_once(root, renew_policy, capsys)
    assert code == 0, out
    seen = observe.observe(host.Host(root))
    for name in CAS:
        assert seen.cas[name].cert.not_valid_after_utc > REAL_NOW + 3000 * DAY  # type: ignore[union-attr]
    for name in leaves:
        leaf = seen.leaves[name]
        assert leaf.issued_by_ca and leaf.key_matches, name
        assert leaf.cert.not_valid_after_utc > REAL_NOW + 360 * DAY, name  # type: ignore[union-attr]
    # admin.conf renewed as a leaf embeds the renewed CA too
    assert kubeconfig_ca(root / "etc/kubernetes/admin.conf") == seen.cas["ca"].cert


def test_other_nodes_install_the_renewed_cas_from_a_bundle(
    make_tree: Callable[..., Path],
    renew_policy: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = make_tree(now=REAL_NOW, **DUE, **QUIET)
    worker = make_tree(now=REAL_NOW, control_plane=False, ca_from=str(first), **QUIET)
    (worker / "etc/kubernetes/pki/ca.key").unlink()  # a worker has no CA key
    second = make_tree(now=REAL_NOW, ca_from=str(first), node_name="cp-2", **QUIET)
    assert node_once(first, renew_policy, capsys)[0] == 0
    bundle = tmp_path / "kucero-ca-bundle.pem"
    bundle.write_bytes(
        b"".join((first / f"etc/kubernetes/pki/{f}.crt").read_bytes() for f in CAS.values())
    )

    code, out = node_once(worker, renew_policy, capsys, "--ca-bundle", bundle)
    assert code == 0, out
    assert ca_cert(worker, "ca") == ca_cert(first, "ca")
    assert kubeconfig_ca(worker / "etc/kubernetes/kubelet.conf") == ca_cert(first, "ca")
    assert "restart-kubelet" in out

    code, out = node_once(second, renew_policy, capsys, "--ca-bundle", bundle)
    assert code == 0, out
    for name in CAS:
        assert ca_cert(second, name) == ca_cert(first, name)
    assert "renew-ca" not in out  # installed, not renewed a second time


def _other_key_bundle(root: Path) -> bytes:
    return pki.cert_pem(fabricate.make_ca("kubernetes", REAL_NOW, "ecdsa")[0])


def _other_subject_bundle(root: Path) -> bytes:
    cert = ca_cert(root, "ca")
    key = pki.load_key((root / "etc/kubernetes/pki/ca.key").read_bytes())
    other = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "kubernetes-evil")])
    forged = (
        x509.CertificateBuilder(extensions=list(cert.extensions))
        .subject_name(other).issuer_name(other).public_key(key.public_key())
        .serial_number(9).not_valid_before(REAL_NOW - DAY).not_valid_after(REAL_NOW + 4000 * DAY)
        .sign(key, pki.signature_hash_for(key))
    )  # fmt: skip
    return pki.cert_pem(forged)


def _break(path: str, data: bytes | None) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        target = root / path
        if data is None:
            target.unlink()
        else:
            target.write_bytes(data)

    return mutate


BAD_KEY = b"-----BEGIN EC PRIVATE KEY-----\ngarbage\n-----END EC PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("tree", "mutate", "bundle", "finding"),
    [
        pytest.param({}, None, _other_key_bundle, "CARefused", id="bundle-with-another-key"),
        pytest.param({}, None, _other_subject_bundle, "CARefused", id="bundle-with-another-subject"),
        pytest.param({}, None, lambda _r: b"garbage", "CARefused", id="bundle-of-garbage"),
        pytest.param({}, _break("etc/kubernetes/pki/ca.key", None), None, "ExternallyManaged", id="ca-key-missing"),
        pytest.param({}, _break("etc/kubernetes/pki/ca.key", BAD_KEY), None, "KeyMismatch", id="ca-key-unreadable"),
        pytest.param(
            {}, _break("etc/kubernetes/pki/ca.key", pki.key_pem(fabricate.new_key("ecdsa"))), None,
            "KeyMismatch", id="ca-key-not-matching-its-certificate",
        ),
        pytest.param(
            {"control_plane": False, "external_ca": True}, None, None, "CAInstallsOnly",
            id="renew-mode-on-a-worker-only-installs",
        ),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_finding_and_changes_no_file(
    make_tree: Callable[..., Path],
    renew_policy: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tree: dict[str, Any],
    mutate: Callable[[Path], None] | None,
    bundle: Callable[[Path], bytes] | None,
    finding: str,
) -> None:
    root = make_tree(now=REAL_NOW, **{**DUE, **QUIET, **tree})
    extra: list[str | Path] = []
    if bundle is not None:
        path = tmp_path / "bundle.pem"
        path.write_bytes(bundle(root))
        extra = ["--ca-bundle", path]
    if mutate is not None:
        mutate(root)
    before = snapshot(root)
    code, out = node_once(root, renew_policy, capsys, *extra, "-o", "json")
    result = json.loads(out[: out.rindex("}") + 1])
    found = [
        f
        for f in result["findings"]
        if f["reason"] == finding and f["target"] in ("ca", "published")
    ]
    assert found, result["findings"]
    assert all(f["detail"] for f in found)
    ca_actions = [r for r in result["results"] if r["action"] in ("renew-ca", "install-ca")]
    assert not [r for r in ca_actions if "/pki/ca.crt" in r["target"] or r["target"] == "ca"]
    cluster_ca_files = {k: v for k, v in snapshot(root).items() if _of_cluster_ca(k)}
    assert cluster_ca_files == {k: v for k, v in before.items() if _of_cluster_ca(k)}
    if any(f["severity"] == "error" for f in found):
        assert code == 1  # an error a human must look at
    if not tree and bundle is not None:  # nothing of any CA was written with a refused bundle
        assert snapshot(root) == before


def _of_cluster_ca(relative: str) -> bool:
    """The files the cluster CA ``ca`` lives in on a node."""
    return relative.endswith(("pki/ca.crt", "pki/ca.key", ".conf"))


def test_plan_shows_the_ca_renewal_and_changes_nothing(
    make_tree: Callable[..., Path], renew_policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, **DUE, **QUIET)
    before = snapshot(root)
    code = cli.main(["plan", "--host-root", str(root), "--policy", str(renew_policy), "-o", "json"])
    out = capsys.readouterr().out
    assert code == 0
    got = [(a["action"], a["target"]) for a in json.loads(out)["actions"]]
    assert got[:3] == [("renew-ca", "ca"), ("renew-ca", "etcd-ca"), ("renew-ca", "front-proxy-ca")]
    assert ("install-ca", "/etc/kubernetes/pki/ca.crt") in got
    assert ("restart-kubelet", "kubelet") in got
    assert snapshot(root) == before


def test_a_ca_renewal_restarts_each_component_that_loads_an_anchor_verified(
    make_tree: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """manifest-move through the kubelet stand-in: every static pod comes back healthy (etcd's
    health check is a client certificate verified against the renewed etcd CA), in order,
    etcd last; the kubelet is restarted once."""
    from tests.controlplane import kubeadm_node, kubelet_standin

    root = make_tree(now=REAL_NOW, **DUE, **QUIET, ports=tuple(kubeadm_node.free_ports().items()))
    policy = tmp_path / "p.yaml"
    policy.write_text(HEAD + "spec: {ca: {mode: renew}, kubeadm: {healthTimeout: 20s}}\n")
    components = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"]
    with kubelet_standin.KubeletStandin(root) as standin:
        standin.wait_serving(components)
        code, out = node_once(root, policy, capsys, "--manifest-grace", "5")
        stops = [n for _, what, n in standin.events if what == "stop"]
    assert code == 0, out
    for component in components:
        assert f"restart-static-pod   {component}" in out and "restarted in" in out
    assert stops == components  # one at a time, in kubeadm's order, etcd last
    assert (root.parent / f"{root.name}-kubelet-restarts").read_text() == "restarted\n"
    assert json.loads((root / paths.STATE.lstrip("/")).read_text())["pendingRestarts"] == []


# nine writes (eight anchors and the state file): steps 1-9 stage them, 10 follows the
# journal, 11-19 rename them into place, 20 follows the journal's removal
@pytest.mark.parametrize("failpoint", [1, 5, 9, 10, 11, 15, 19, 20])
def test_a_kill_during_a_ca_renewal_leaves_every_anchor_in_step_after_the_next_pass(
    make_tree: Callable[..., Path], renew_policy: Path, failpoint: int
) -> None:
    """SIGKILL at the n-th step of the CA renewal's transaction (backup, stage, journal,
    renames): the next pass completes or redoes it, and every anchor of each CA then holds one
    and the same renewed certificate; the CA keys never change."""
    import subprocess
    import sys

    root = make_tree(now=REAL_NOW, **DUE, **QUIET)
    keys = {n: (root / f"etc/kubernetes/pki/{f}.key").read_bytes() for n, f in CAS.items()}
    argv = [sys.executable, "-m", "reconciler", "node", "--once", "--host-root", str(root)]
    argv += ["--policy", str(renew_policy), "--kubelet-restart-command", "true"]
    killed = subprocess.run(
        [*argv, "--failpoint", str(failpoint)], capture_output=True, check=False
    )
    assert killed.returncode == -9, killed.stderr  # it did die at that step
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = observe.observe(host.Host(root))
    for name in CAS:
        ca = seen.cas[name].cert
        assert ca is not None and ca.not_valid_after_utc > REAL_NOW + 3000 * DAY
        for anchor in (a for a in seen.anchors if a.ca == name):
            assert anchor.certs == (ca,), anchor.path
        assert (root / f"etc/kubernetes/pki/{CAS[name]}.key").read_bytes() == keys[name]
    assert not list((root / "etc/kubernetes/tmp").glob("kucero-journal*"))
