"""``kucero node --once`` on real trees, the way an operator runs it: convergence, idempotence,
backups, restarts, and every kind of bad input the issue lists."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from reconciler import cli
from reconciler.decide import pki, plan, policy
from reconciler.model import kubeadm, paths
from reconciler.node import execute, host, observe, transaction

DAY = dt.timedelta(days=1)
REAL_NOW = dt.datetime.now(dt.UTC)
DUE = {"apiserver": 10 * DAY, "admin.conf": -DAY, "etcd-peer": 3 * DAY}
POLICY_NONE = (
    "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\nspec:\n  kubeadm: {restart: none}\n"
)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_NONE)
    return path


def kucero(*args: str | Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def node_once(
    root: Path, policy: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    marker = root.parent / f"{root.name}-kubelet-restarts"
    restart = f"sh -c 'echo restarted >> {marker}'"
    return kucero(
        "node",
        "--once",
        "--host-root",
        root,
        "--policy",
        policy,
        "--kubelet-restart-command",
        restart,
        *extra,
        capsys=capsys,
    )


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's content, except the (empty) lock file a pass holds while it runs."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != "kucero.lock"
    }


def pairs_match(root: Path) -> None:
    """Every PKI pair and every embedded kubeconfig pair on disk matches."""
    seen = observe.observe(host.Host(root))
    for leaf in seen.leaves.values():
        assert leaf.error is None and leaf.key_matches, leaf


def test_full_pass_converges_and_second_pass_changes_nothing(
    make_tree: Any, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="rsa", expiries=DUE)
    unrenewed = observe.observe(host.Host(root)).leaves["apiserver-kubelet-client"].cert
    assert unrenewed is not None
    code, out, err = node_once(root, policy_file, capsys)
    assert code == 0, out + err
    assert "converged to policy revision" in out
    pairs_match(root)
    seen = observe.observe(host.Host(root))
    for name in DUE:
        left = seen.leaves[name].cert.not_valid_after_utc - dt.datetime.now(dt.UTC)  # type: ignore[union-attr]
        assert dt.timedelta(days=364) < left <= dt.timedelta(days=365)
    # not due: the very same certificate (a renewed one would differ in serial and expiry)
    assert seen.leaves["apiserver-kubelet-client"].cert == unrenewed
    conf = (root / "etc/kubernetes/kubelet.conf").read_text()
    assert "client-certificate-data" not in conf and kubeadm.KUBELET_CLIENT_CURRENT in conf
    config = (root / "var/lib/kubelet/config.yaml").read_text()
    # the policy is silent about rotateServerCertificates and no approver is known offline
    assert config.endswith("staticPodPath: /etc/kubernetes/manifests\nrotateCertificates: true\n")
    assert "# written by kubeadm; kucero must keep this comment" in config
    assert (root.parent / f"{root.name}-kubelet-restarts").read_text() == "restarted\n"

    before = snapshot(root)
    code, out, _ = node_once(root, policy_file, capsys)
    assert code == 0 and "Nothing to do" in out
    assert snapshot(root) == before
    assert (root.parent / f"{root.name}-kubelet-restarts").read_text() == "restarted\n"


def test_modes_backups_and_retention(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
        "spec: {kubeadm: {restart: none, backup: {retain: 2}}}\n"
    )
    (root / "etc/kubernetes/pki/apiserver.crt").chmod(0o640)
    original = {
        p: (root / p).read_bytes()
        for p in ("etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/pki/apiserver.key")
    }
    assert node_once(root, policy, capsys)[0] == 0
    assert (root / "etc/kubernetes/pki/apiserver.crt").stat().st_mode & 0o777 == 0o640
    assert (root / "etc/kubernetes/pki/apiserver.key").stat().st_mode & 0o777 == 0o600
    backups = sorted((root / "etc/kubernetes/tmp").glob("kucero-backup-*"))
    assert len(backups) == 1 and backups[0].stat().st_mode & 0o777 == 0o700
    for rel, data in original.items():
        saved = backups[0] / "old" / rel
        # the very file that was replaced (a hard link kept it: never copied, never written)
        assert saved.read_bytes() == data and saved.stat().st_nlink == 1
        assert saved.stat().st_ino != (root / rel).stat().st_ino
    assert (backups[0] / "old/etc/kubernetes/pki/apiserver.crt").stat().st_mode & 0o777 == 0o640
    assert (backups[0] / "old/etc/kubernetes/pki/apiserver.key").stat().st_mode & 0o777 == 0o600
    assert not (backups[0] / "new").exists()  # staged keys are not kept twice
    staged = [p for p in (root / "etc/kubernetes/pki").iterdir() if p.name.startswith(".kucero")]
    assert not staged  # every staged file was renamed into place


def test_retention_keeps_the_newest_backups_even_when_the_clock_stepped_back(
    make_tree: Any,
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    node = host.Host(root)
    # the third pass runs after an NTP step back: its name sorts first, yet it is the newest
    made = []
    for i, minutes in enumerate((10, 20, -30)):
        backup = transaction.apply(
            node,
            [transaction.Write("/etc/kubernetes/x", str(i).encode())],
            REAL_NOW + dt.timedelta(minutes=minutes),
            retain=2,
        )
        os.utime(node.path(backup), (1_000_000 + i, 1_000_000 + i))
        transaction.prune(node, 2, keep=backup)
        made.append(backup)
    kept = sorted(
        f"/etc/kubernetes/tmp/{p.name}"
        for p in (root / "etc/kubernetes/tmp").glob("kucero-backup-*")
    )
    assert kept == sorted(made[1:])


def test_manifest_move_restart_puts_the_manifest_back_and_verifies_it(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.controlplane import kubeadm_node, kubelet_standin

    root = make_tree(
        now=REAL_NOW,
        key_type="ecdsa",
        expiries={"scheduler.conf": 5 * DAY},
        embedded_kubelet_conf=False,
        kubelet_config_rotation=True,
        ports=tuple(kubeadm_node.free_ports().items()),
    )
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\nspec: {kubeadm: {healthTimeout: 10s}}\n"
    )
    manifest = root / "etc/kubernetes/manifests/kube-scheduler.yaml"
    content = manifest.read_bytes()
    with kubelet_standin.KubeletStandin(root) as standin:
        standin.wait_serving(["kube-scheduler"])
        code, out, _ = node_once(root, policy, capsys, "--manifest-grace", "5")
        events = [(w, n) for _, w, n in standin.events if n == "kube-scheduler"]
    assert code == 0, out
    assert "restart-static-pod   kube-scheduler   ok       restarted in" in out
    assert manifest.read_bytes() == content
    assert events == [
        ("start", "kube-scheduler"),
        ("stop", "kube-scheduler"),
        ("start", "kube-scheduler"),
    ]
    assert json.loads((root / paths.STATE.lstrip("/")).read_text())["pendingRestarts"] == []


def test_failed_crictl_restart_touches_nothing_and_stays_owed(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(
        now=REAL_NOW,
        key_type="ecdsa",
        expiries={"scheduler.conf": 5 * DAY},
        embedded_kubelet_conf=False,
        kubelet_config_rotation=True,
    )
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\nspec: {kubeadm: {restart: crictl}}\n"
    )
    code, out, _ = node_once(root, policy, capsys, "--crictl-command", "false")
    assert code == 1 and "failed in" in out and "false pods --namespace kube-system" in out
    pairs_match(root)  # the renewal itself landed
    code, out, _ = kucero(
        "plan", "--host-root", root, "--policy", policy, "-o", "json", capsys=capsys
    )
    assert json.loads(out)["actions"] == [
        {
            "action": "restart-static-pod",
            "target": "kube-scheduler",
            "reason": "PendingRestart",
            "detail": "an earlier restart did not complete",
        }
    ]


def test_no_restart_when_the_renewal_it_would_load_failed(make_tree: Any, tmp_path: Path) -> None:
    root = make_tree(
        now=REAL_NOW,
        key_type="ecdsa",
        expiries={"front-proxy-client": 5 * DAY},
        embedded_kubelet_conf=False,
        kubelet_config_rotation=True,
    )
    node = host.Host(root)
    spec = policy.resolve(policy.load("apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"), {})
    seen = observe.observe(node)
    the_plan = plan.plan(spec, seen, REAL_NOW)
    assert [a.kind.value for a in the_plan.actions] == ["renew", "restart-static-pod"]
    (root / "etc/kubernetes/pki/front-proxy-ca.key").unlink()  # gone between plan and execution
    manifest = root / "etc/kubernetes/manifests/kube-apiserver.yaml"
    before = manifest.stat().st_mtime_ns
    results = execute.execute(node, spec, seen, the_plan, REAL_NOW, execute.Settings(("true",), 0))
    assert [(r.action.kind.value, r.ok) for r in results] == [
        ("renew", False),
        ("restart-static-pod", False),
    ]
    assert "CA key disappeared" in results[0].message and "not written" in results[1].message
    assert (
        manifest.stat().st_mtime_ns == before
        and not (root / "etc/kubernetes/tmp/kucero-manifests").exists()
    )


def test_failed_kubelet_restart_is_retried_next_pass(
    make_tree: Any, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    code, out, _ = kucero(
        "node",
        "--once",
        "--host-root",
        root,
        "--policy",
        policy_file,
        "--kubelet-restart-command",
        "false",
        capsys=capsys,
    )
    assert code == 1 and "restart-kubelet kubelet: false: exit status 1" in out
    code, out, _ = node_once(root, policy_file, capsys)
    assert code == 0 and "restart-kubelet   kubelet   ok" in out
    assert (root.parent / f"{root.name}-kubelet-restarts").read_text() == "restarted\n"


def test_paused_policy_changes_nothing(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\nspec: {paused: true}\n"
    )
    before = snapshot(root)
    code, out, _ = node_once(root, policy, capsys)
    assert code == 0 and "Paused" in out
    assert snapshot(root) == before


# --- bad input ------------------------------------------------------------------------

BAD_POLICIES = {
    "wrong-type": ("spec: {paused: 3}\n", "spec.paused: 3 is not of type boolean"),
    "unknown-field": (
        "spec: {kubeadm: {renewAhead: 1h}}\n",
        "spec.kubeadm: unknown field 'renewAhead'",
    ),
    "negative-duration": (
        "spec: {kubeadm: {renewBefore: -3h}}\n",
        "spec.kubeadm.renewBefore: '-3h' is not a valid duration",
    ),
}


@pytest.mark.parametrize(("body", "message"), BAD_POLICIES.values(), ids=BAD_POLICIES.keys())
def test_bad_policy_is_rejected_naming_file_and_field_and_nothing_changes(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    policy = tmp_path / "bad.yaml"
    policy.write_text("apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n" + body)
    before = snapshot(root)
    code, _, err = node_once(root, policy, capsys)
    assert code == 1 and f"{policy}: {message}" in err
    assert snapshot(root) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: kucero.io/v9\nkind: RotationPolicy\n",
            "apiVersion: unsupported apiVersion 'kucero.io/v9'",
        ),
        ("[1, 2]\n", "the policy must be a YAML mapping, got list"),
    ],
    ids=["unknown-api-version", "not-a-mapping"],
)
def test_validate_policy_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(POLICY_NONE)
    bad.write_text(text)
    code, out, _ = kucero("validate-policy", good, bad, capsys=capsys)
    assert code == 1
    assert f"{good}: valid (revision " in out and f"{bad}: {message}" in out
    assert kucero("validate-policy", good, capsys=capsys)[0] == 0


PAIR = ("etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/pki/apiserver.key")


def _garbage(root: Path) -> tuple[str, tuple[str, ...]]:
    (root / "etc/kubernetes/pki/apiserver.crt").write_bytes(b"\x00garbage\n")
    return "/etc/kubernetes/pki/apiserver.crt: no PEM certificate found", PAIR


def _mismatch(root: Path) -> tuple[str, tuple[str, ...]]:
    shutil.copy(
        root / "etc/kubernetes/pki/front-proxy-client.key",
        root / "etc/kubernetes/pki/apiserver.key",
    )
    return "/etc/kubernetes/pki/apiserver.crt: certificate does not match its key", PAIR


def _no_users(root: Path) -> tuple[str, tuple[str, ...]]:
    conf = root / "etc/kubernetes/admin.conf"
    conf.write_text(conf.read_text().split("users:")[0])
    return "/etc/kubernetes/admin.conf: no users", ("etc/kubernetes/admin.conf",)


@pytest.mark.parametrize(
    "breaker",
    [_garbage, _mismatch, _no_users],
    ids=["garbage-certificate", "key-mismatch", "kubeconfig-without-users"],
)
def test_broken_file_is_reported_left_untouched_and_the_rest_of_the_pass_happens(
    make_tree: Any, policy_file: Path, capsys: pytest.CaptureFixture[str], breaker: Any
) -> None:
    root = make_tree(
        now=REAL_NOW,
        key_type="ecdsa",
        expiries={"apiserver": 5 * DAY, "admin.conf": 5 * DAY, "front-proxy-client": 5 * DAY},
    )
    message, untouched = breaker(root)
    broken = snapshot(root)
    code, out, _ = node_once(root, policy_file, capsys)
    assert code == 1 and message in out
    assert "renew                front-proxy-client" in out  # the rest happened
    assert "set-kubelet-config" in out
    after = snapshot(root)
    for rel in untouched:  # both halves of a broken pair: the key too, not only the certificate
        assert after[rel] == broken[rel], rel


def test_missing_ca_key_is_externally_managed_and_not_renewed(
    make_tree: Any, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(
        now=REAL_NOW,
        key_type="ecdsa",
        external_ca=True,
        expiries={"apiserver": 5 * DAY, "etcd-server": 5 * DAY},
    )
    before = snapshot(root)
    code, out, _ = node_once(root, policy_file, capsys)
    assert code == 0, out
    assert "ExternallyManaged" in out and "the ca key is absent" in out
    after = snapshot(root)
    assert after["etc/kubernetes/pki/apiserver.crt"] == before["etc/kubernetes/pki/apiserver.crt"]
    assert (
        after["etc/kubernetes/pki/etcd/server.crt"] != before["etc/kubernetes/pki/etcd/server.crt"]
    )
    code, out, _ = kucero("check-expiration", "--host-root", root, "-o", "json", capsys=capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["apiserver"]["externallyManaged"] and rows["ca"]["externallyManaged"]
    assert not rows["etcd-server"]["externallyManaged"]


def test_host_root_that_does_not_exist(
    tmp_path: Path, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    code, out, _ = node_once(missing, policy_file, capsys)
    assert code == 1 and f"host root {missing} does not exist" in out
    code, _, err = kucero("check-expiration", "--host-root", missing, capsys=capsys)
    assert code == 1 and f"host root {missing} does not exist" in err


def test_read_only_host_root_changes_nothing_and_says_where(
    make_tree: Any, policy_file: Path
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    before = snapshot(root)
    command = [
        sys.executable,
        "-m",
        "reconciler",
        "node",
        "--once",
        "--host-root",
        str(root),
        "--policy",
        str(policy_file),
        "--kubelet-restart-command",
        "true",
    ]
    if (
        os.geteuid() == 0
    ):  # root ignores file modes: use a read-only bind mount in a private namespace
        script = f'mount --bind "{root}" "{root}" && mount -o remount,bind,ro "{root}" && exec "$@"'
        command = ["unshare", "--mount", "sh", "-c", script, "sh", *command]
    else:
        for path in sorted(root.rglob("*"), reverse=True):
            path.chmod(path.stat().st_mode & ~0o222)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "backup failed, nothing changed" in done.stdout and "/etc/kubernetes/tmp" in done.stdout
    assert snapshot(root) == before


def test_plan_what_if_date_and_json(
    make_tree: Any, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(
        now=REAL_NOW, key_type="ecdsa", embedded_kubelet_conf=False, kubelet_config_rotation=True
    )
    code, out, _ = kucero(
        "plan", "--host-root", root, "--policy", policy_file, "-o", "json", capsys=capsys
    )
    assert code == 0 and json.loads(out)["actions"] == []
    when = (REAL_NOW + 340 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, out, _ = kucero(
        "plan",
        "--host-root",
        root,
        "--policy",
        policy_file,
        "-o",
        "json",
        "--now",
        when,
        capsys=capsys,
    )
    renewals = [a["target"] for a in json.loads(out)["actions"] if a["action"] == "renew"]
    assert len(renewals) == len(kubeadm.NAMES)
    with pytest.raises(SystemExit) as exited:
        kucero("plan", "--host-root", root, "--now", "2027-01-01", capsys=capsys)
    assert exited.value.code == 2
    assert "'2027-01-01' has no time zone" in capsys.readouterr().err


def test_check_expiration_json_fields(make_tree: Any, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    code, out, _ = kucero("check-expiration", "--host-root", root, "-o", "json", capsys=capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(kubeadm.NAMES) | {
        "ca",
        "etcd-ca",
        "front-proxy-ca",
        "kubelet.conf",
        "kubelet-client-current",
    } == set(rows)
    cert = x509.load_pem_x509_certificate((root / "etc/kubernetes/pki/apiserver.crt").read_bytes())
    assert rows["apiserver"]["notAfter"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert 4 * 86400 < rows["apiserver"]["residualSeconds"] <= 5 * 86400
    assert (rows["apiserver"]["kind"], rows["admin.conf"]["kind"], rows["ca"]["kind"]) == (
        "certificate",
        "kubeconfig",
        "ca",
    )
    assert (rows["etcd-peer"]["issuer"], rows["front-proxy-client"]["issuer"]) == (
        "etcd-ca",
        "front-proxy-ca",
    )
    assert rows["etcd-peer"]["path"] == "/etc/kubernetes/pki/etcd/peer.crt"
    code, out, _ = kucero("check-expiration", "--host-root", root, capsys=capsys)
    assert out.splitlines()[0].split() == [
        "CERTIFICATE",
        "EXPIRES",
        "RESIDUAL",
        "TIME",
        "CERTIFICATE",
        "AUTHORITY",
        "EXTERNALLY",
        "MANAGED",
    ]
    assert any(line.startswith("apiserver ") and " 4d " in line for line in out.splitlines())


def test_corrupt_file_makes_check_expiration_fail_with_its_path(
    make_tree: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    (root / "etc/kubernetes/pki/etcd/peer.crt").write_text(
        "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
    )
    code, out, _ = kucero("check-expiration", "--host-root", root, capsys=capsys)
    assert (
        code == 1
        and "etcd-peer: /etc/kubernetes/pki/etcd/peer.crt: not a valid PEM certificate" in out
    )


def test_concurrent_pass_is_refused_while_the_lock_is_held(
    make_tree: Any, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    before = snapshot(root)
    with host.Host(root).lock("/etc/kubernetes/tmp/kucero.lock"):
        code, out, _ = node_once(root, policy_file, capsys)
    assert code == 1 and "another kucero pass holds the lock" in out
    assert snapshot(root) == before
    assert node_once(root, policy_file, capsys)[0] == 0


def test_worker_node_pass(
    make_tree: Any, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", control_plane=False)
    code, out, _ = node_once(root, policy_file, capsys)
    assert code == 0 and "fix-kubelet-conf" in out and "renew" not in out
    pairs_match(root)
    assert pki.load_cert(host.Host(root).read(kubeadm.KUBELET_CLIENT_CURRENT) or b"")
