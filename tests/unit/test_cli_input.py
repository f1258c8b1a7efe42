"""Issue 6, sections 3 and 4, each case reproduced on a real node tree through the CLI.

Section 3: what kubeadm and the kubelet expect (serverTLSBootstrap only with an approver,
client rotation never switched off under a rotated kubelet.conf, unset-and-false is no change,
config.yaml that is not a KubeletConfiguration is never edited, the CA data of a renewed
kubeconfig, a policy that would renew on every pass). Section 4: bad input ends in a clear
error, never a traceback or a hang (alias bombs, deep nesting, odd keys, edge dates, bad
grace values, an unreadable CA key for a non-root user, control characters in subjects).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import cli, fabricate
from reconciler.decide import pki
from reconciler.model import kubeadm
from tests.unit.test_node_once import kucero, node_once, snapshot

DAY = dt.timedelta(days=1)
REAL_NOW = dt.datetime.now(dt.UTC)
HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
CONVERGED = {"embedded_kubelet_conf": False, "kubelet_config_rotation": True}
CONFIG = "var/lib/kubelet/config.yaml"


def write_policy(tmp_path: Path, body: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + body)
    return path


def restarts(root: Path) -> str:
    marker = root.parent / f"{root.name}-kubelet-restarts"
    return marker.read_text() if marker.exists() else ""


# --- section 3 ---------------------------------------------------------------------------


def test_silent_policy_never_switches_server_bootstrap_on_offline(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    policy = write_policy(tmp_path, "spec: {kubeadm: {restart: none}}\n")
    code, out, _ = node_once(root, policy, capsys)
    assert code == 0, out
    config = yaml.safe_load((root / CONFIG).read_text())
    assert config["rotateCertificates"] is True and "serverTLSBootstrap" not in config
    assert "ServingCSRApproverUnknown" in out and "set it to true if one runs" in out


def test_policy_that_sets_server_rotation_switches_it_on(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    policy = write_policy(tmp_path, "spec: {kubelet: {rotateServerCertificates: true}}\n")
    code, out, _ = node_once(root, policy, capsys)
    assert code == 0, out
    assert yaml.safe_load((root / CONFIG).read_text())["serverTLSBootstrap"] is True


def test_seed_flag_does_not_count_as_the_policy_vouching_for_an_approver(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    policy = write_policy(tmp_path, "")
    code, out, _ = kucero(
        "plan",
        "--host-root",
        root,
        "--policy",
        policy,
        "--enable-kubelet-server-cert-rotation=true",
        "-o",
        "json",
        capsys=capsys,
    )
    assert code == 0
    planned = json.loads(out)
    assert "serverTLSBootstrap" not in json.dumps(planned["actions"])
    assert [f["reason"] for f in planned["findings"]] == ["ServingCSRApproverUnknown"]


def test_client_rotation_off_with_fix_kubelet_conf_is_an_invalid_policy(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    policy = write_policy(tmp_path, "spec: {kubelet: {rotateClientCertificates: false}}\n")
    before = snapshot(root)
    code, _, err = node_once(root, policy, capsys)
    assert code == 1
    assert (
        f"{policy}: spec.kubelet.rotateClientCertificates: false with kubelet.fixKubeletConf" in err
    )
    assert snapshot(root) == before
    code, out, _ = kucero("validate-policy", policy, capsys=capsys)
    assert code == 1 and "would point kubelet.conf at kubelet-client-current.pem" in out


def test_client_rotation_off_under_a_rotated_kubelet_conf_is_refused(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", **CONVERGED)
    policy = write_policy(
        tmp_path, "spec: {kubelet: {rotateClientCertificates: false, fixKubeletConf: false}}\n"
    )
    before = snapshot(root)
    code, out, _ = node_once(root, policy, capsys)
    assert code == 1 and "ClientRotationRequired" in out and "refused" in out
    assert snapshot(root) == before and restarts(root) == ""


def test_unset_field_wanted_false_is_no_change_and_restarts_nothing(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")  # config.yaml sets neither field
    policy = write_policy(
        tmp_path,
        "spec: {kubelet: {rotateClientCertificates: false, fixKubeletConf: false, "
        "rotateServerCertificates: false}}\n",
    )
    before = snapshot(root)
    code, out, _ = node_once(root, policy, capsys)
    assert code == 0 and "Nothing to do" in out, out
    assert snapshot(root) == before and restarts(root) == ""


def test_config_yaml_linked_to_admin_conf_is_never_edited(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", embedded_kubelet_conf=False)
    config = root / CONFIG
    config.unlink()
    config.symlink_to("/etc/kubernetes/admin.conf")
    policy = write_policy(tmp_path, "spec: {kubelet: {rotateServerCertificates: true}}\n")
    before = snapshot(root)
    code, out, _ = node_once(root, policy, capsys)
    assert code == 1 and "not a KubeletConfiguration (apiVersion 'v1', kind 'Config')" in out
    assert snapshot(root) == before and config.is_symlink() and restarts(root) == ""


def test_renewed_kubeconfig_gets_the_ca_data_from_the_ca_on_disk(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"admin.conf": 5 * DAY}, **CONVERGED)
    conf = root / "etc/kubernetes/admin.conf"
    doc = yaml.safe_load(conf.read_text())
    stale = fabricate.make_ca("kubernetes", REAL_NOW, "ecdsa")[0]  # e.g. from before a CA change
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        pki.cert_pem(stale)
    ).decode()
    conf.write_text(yaml.safe_dump(doc))
    policy = write_policy(tmp_path, "spec: {kubeadm: {restart: none}}\n")
    code, out, _ = node_once(root, policy, capsys)
    assert code == 0, out
    after = yaml.safe_load(conf.read_text())["clusters"][0]["cluster"]
    ca_pem = (root / "etc/kubernetes/pki/ca.crt").read_bytes()
    assert pki.load_cert(base64.b64decode(after["certificate-authority-data"])) == pki.load_cert(
        ca_pem
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            "spec: {checkInterval: 49h, kubeadm: {certificateValidity: 768h, renewBefore: 720h}}\n",
            "spec.kubeadm.certificateValidity: 768h leaves 48h0m0s",
        ),
        (
            "spec:\n  kubeadm: {renewBefore: 720h}\n  overrides:\n  - nodeSelector: {}\n"
            "    spec: {checkInterval: 48h, kubeadm: {certificateValidity: 744h}}\n",
            "spec.overrides[0].spec.kubeadm.certificateValidity: 744h leaves 24h0m0s",
        ),
    ],
    ids=["spec", "override-merge"],
)
def test_policy_renewing_again_within_one_check_interval_is_invalid(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, field: str
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    policy = write_policy(tmp_path, body)
    code, out, _ = kucero("validate-policy", policy, capsys=capsys)
    assert code == 1 and f"{policy}: {field}" in out and "on every pass" in out
    before = snapshot(root)
    assert node_once(root, policy, capsys)[0] == 1
    assert snapshot(root) == before


# --- section 4 ---------------------------------------------------------------------------


def alias_bomb(indent: str = "") -> str:
    lines = [f'{indent}a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        lines.append(f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("metadata:\n" + alias_bomb("  "), "alias bomb"),
        ("spec:\n  kubeadm:\n    certificates: " + DEEP + "\n", "maximum nesting depth"),
        ("spec: " + "[" * 70 + "]" * 70 + "\n", "nested deeper than 64 levels"),
        ("? [a, b]\n: 1\n", "found a mapping or list as a key"),
        ("spec: {1: a, b: c}\n", "key 1 is not a string"),
    ],
    ids=["alias-bomb", "nested-5000-deep", "nested-past-the-limit", "unhashable-key", "mixed-keys"],
)
def test_hostile_policy_is_a_clear_error_fast(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    policy = write_policy(tmp_path, body)
    code, out, _ = kucero("validate-policy", policy, capsys=capsys)
    assert code == 1 and f"{policy}: invalid YAML: " in out and message in out, out
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    before = snapshot(root)
    code, _, err = node_once(root, policy, capsys)
    assert code == 1 and message in err
    assert snapshot(root) == before


@pytest.mark.parametrize(
    "content",
    [alias_bomb(), DEEP + "\n", "a: " + "[" * 70 + "]" * 70 + "\n"],
    ids=["alias-bomb", "nested-5000-deep", "nested-past-the-limit"],
)
@pytest.mark.parametrize(
    ("target", "name"),
    [("etc/kubernetes/admin.conf", "admin.conf"), (CONFIG, "kubelet-config")],
    ids=["kubeconfig", "kubelet-config"],
)
def test_hostile_node_yaml_is_reported_and_left_alone(
    make_tree: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    target: str,
    name: str,
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"admin.conf": 5 * DAY})
    (root / target).write_text(content)
    code, out, _ = kucero("plan", "--host-root", root, "-o", "json", capsys=capsys)
    assert code == 0
    findings = [f for f in json.loads(out)["findings"] if f["target"] == name]
    assert [f["reason"] for f in findings] == ["Unreadable"]
    assert "invalid YAML" in findings[0]["detail"]
    before = (root / target).read_bytes()
    policy = write_policy(tmp_path, "spec: {kubeadm: {restart: none}}\n")
    assert node_once(root, policy, capsys)[0] == 1
    assert (root / target).read_bytes() == before


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"], ids=["max", "min"]
)
def test_now_at_the_edge_of_the_date_range_is_a_usage_error(
    make_tree: Any, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    for command in ("plan", "check-expiration"):
        with pytest.raises(SystemExit) as exited:
            cli.main([command, "--host-root", str(root), "--now", when])
        assert exited.value.code == 2
        assert "outside the times Python can represent" in capsys.readouterr().err


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"])
def test_now_at_the_representable_edges_works(
    make_tree: Any, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    assert kucero("plan", "--host-root", root, "--now", when, capsys=capsys)[0] == 0
    assert kucero("check-expiration", "--host-root", root, "--now", when, capsys=capsys)[0] == 0


@pytest.mark.parametrize("grace", ["nan", "inf", "-inf", "-1", "soon"])
def test_bad_manifest_grace_is_rejected_before_any_write(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], grace: str
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"scheduler.conf": 5 * DAY})
    # an invalid policy makes a pass recover before it exits: that must not happen either
    (root / "etc/kubernetes/tmp").mkdir()
    (root / "etc/kubernetes/tmp/kucero-journal.json").write_text("{}")
    policy = write_policy(tmp_path, "spec: {paused: 3}\n")
    before = snapshot(root)
    with pytest.raises(SystemExit) as exited:
        node_once(root, policy, capsys, f"--manifest-grace={grace}")
    assert exited.value.code == 2
    assert "--manifest-grace" in capsys.readouterr().err
    assert snapshot(root) == before


def test_unreadable_symlinked_ca_key_for_a_non_root_user(
    make_tree: Any, request: pytest.FixtureRequest
) -> None:
    """As a real unprivileged user (setpriv): the CA key is a link into a directory that user
    cannot search. Every command reports it; none ends in a traceback."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.fail("needs root and setpriv to run a command as an unprivileged user")
    # pytest's own temporary directories are private to root: use one others may enter
    base = Path(tempfile.mkdtemp(prefix="kucero-nonroot-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    base.chmod(0o755)
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    root = Path(shutil.move(root, base / "node"))
    secret = root / "secret"
    secret.mkdir(mode=0o700)
    key = root / "etc/kubernetes/pki/ca.key"
    shutil.move(key, secret / "ca.key")
    key.symlink_to("/secret/ca.key")
    policy = write_policy(base, "spec: {kubeadm: {restart: none}}\n")
    for path in base.rglob("*"):
        if not path.is_relative_to(secret) and not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o055)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    kucero_cmd = [sys.executable, "-m", "reconciler"]
    host = ["--host-root", str(root)]
    for args in (
        ["check-expiration", *host],
        ["plan", *host, "--policy", str(policy)],
        ["node", "--once", *host, "--policy", str(policy), "--kubelet-restart-command", "true"],
    ):
        done = subprocess.run(
            [*as_nobody, *kucero_cmd, *args],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode in (0, 1), done.stdout + done.stderr
        if args[0] != "check-expiration":
            assert "/etc/kubernetes/pki/ca.key: cannot read: Permission denied" in done.stdout


def test_control_characters_in_a_subject_are_escaped(
    make_tree: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    pki_dir = root / "etc/kubernetes/pki"
    ca = (
        pki.load_cert((pki_dir / "ca.crt").read_bytes()),
        pki.load_key((pki_dir / "ca.key").read_bytes()),
    )
    hostile = "system:node:cp\x1b]0;pwned\x07\u202e-1"
    cert, key = fabricate.make_leaf(
        ca, hostile, ("system:nodes",), fabricate.CLIENT, (), REAL_NOW, 100 * DAY, "ecdsa"
    )
    conf = root / "etc/kubernetes/kubelet.conf"
    conf.write_bytes(fabricate.kubeconfig_text(ca[0], (cert, key), "node", "10.0.0.11"))
    for args in (["plan", "--host-root", root], ["check-expiration", "--host-root", root]):
        _, out, err = kucero(*args, capsys=capsys)
        assert "\x1b" not in out + err and "\x07" not in out + err and "\u202e" not in out + err
    _, out, _ = kucero("plan", "--host-root", root, capsys=capsys)
    assert "node cp\\x1b]0;pwned\\x07\\u202e-1" in out
    assert kubeadm.KUBELET_CONF  # the same file the header's node name came from
