"""SIGKILL during renewal never leaves a certificate that does not match its key for longer
than it takes the next pass to start, and the next pass converges.

Not by mocking: a real ``kucero node --once`` process is killed with SIGKILL, either by itself
at the n-th step of its transaction (``KUCERO_FAILPOINT=n``, to hit every step
deterministically) or by the test at a spread of delays. After each kill the tree on disk must be
consistent or carry the journal that makes it so; the next pass must exit 0 with every pair
matching, every certificate renewed, the kubelet repaired and nothing left to plan.

The pair check below is written with ``cryptography`` and PyYAML only, independent of the
reconciler's own observation code.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from reconciler import cli, fabricate, kubeadm

NOW = dt.datetime.now(dt.UTC)
DUE = tuple((name, dt.timedelta(days=5)) for name in kubeadm.NAMES)
POLICY = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\nspec: {kubeadm: {restart: none}}\n"
JOURNAL = "etc/kubernetes/tmp/kucero-journal.json"
PKI_PAIRS = (
    "apiserver",
    "apiserver-etcd-client",
    "apiserver-kubelet-client",
    "front-proxy-client",
    "etcd/server",
    "etcd/peer",
    "etcd/healthcheck-client",
)
KUBECONFIGS = ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf")


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for key_type in ("ecdsa", "rsa"):
        root = tmp_path_factory.mktemp(f"template-{key_type}")
        fabricate.build(root, NOW, fabricate.Options(key_type=key_type, expiries=DUE))
        out[key_type] = root
    return out


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def _public(data: bytes, kind: str) -> bytes:
    if kind == "cert":
        key = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_private_key(data, None).public_key()
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def mismatched_pairs(root: Path) -> list[str]:
    pki = root / "etc/kubernetes/pki"
    bad = [
        p
        for p in PKI_PAIRS
        if _public((pki / f"{p}.crt").read_bytes(), "cert")
        != _public((pki / f"{p}.key").read_bytes(), "key")
    ]
    for conf in KUBECONFIGS:
        user = yaml.safe_load((root / "etc/kubernetes" / conf).read_text())["users"][0]["user"]
        cert = base64.b64decode(user["client-certificate-data"])
        key = base64.b64decode(user["client-key-data"])
        if _public(cert, "cert") != _public(key, "key"):
            bad.append(conf)
    return bad


def not_afters(root: Path) -> list[dt.datetime]:
    pki = root / "etc/kubernetes/pki"
    out = [
        x509.load_pem_x509_certificate((pki / f"{p}.crt").read_bytes()).not_valid_after_utc
        for p in PKI_PAIRS
    ]
    for conf in KUBECONFIGS:
        user = yaml.safe_load((root / "etc/kubernetes" / conf).read_text())["users"][0]["user"]
        out.append(
            x509.load_pem_x509_certificate(
                base64.b64decode(user["client-certificate-data"])
            ).not_valid_after_utc
        )
    return out


def command(root: Path, policy: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "reconciler",
        "node",
        "--once",
        "--host-root",
        str(root),
        "--policy",
        str(policy),
        "--kubelet-restart-command",
        "true",
    ]


def assert_consistent_or_journaled(root: Path) -> None:
    bad = mismatched_pairs(root)
    assert not bad or (root / JOURNAL).exists(), f"mismatched without a journal: {bad}"


def assert_next_pass_converges(
    root: Path, policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journaled = (root / JOURNAL).exists()
    if journaled:
        assert (
            cli.main(["plan", "--host-root", str(root), "--policy", str(policy), "-o", "json"]) == 0
        )
        findings = json.loads(capsys.readouterr().out)["findings"]
        assert "InterruptedPassPending" in {f["reason"] for f in findings}
    code = cli.main(command(root, policy)[3:])
    out = capsys.readouterr().out
    assert code == 0, out
    assert not mismatched_pairs(root)
    assert not (root / JOURNAL).exists()
    year = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    assert all(abs(na - year) < dt.timedelta(minutes=10) for na in not_afters(root)), out
    conf = (root / "etc/kubernetes/kubelet.conf").read_text()
    assert "client-certificate-data" not in conf
    assert "serverTLSBootstrap: true" in (root / "var/lib/kubelet/config.yaml").read_text()
    assert cli.main(["plan", "--host-root", str(root), "--policy", str(policy), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["actions"] == []


def test_failpoint_at_every_step(
    templates: dict[str, Path], policy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    killed = 0
    for step in range(1, 200):
        root = tmp_path / f"node-{step}"
        shutil.copytree(templates["ecdsa"], root, symlinks=True)
        env = dict(os.environ, KUCERO_FAILPOINT=str(step))
        done = subprocess.run(
            command(root, policy), env=env, capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            break
        assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
        killed += 1
        assert_consistent_or_journaled(root)
        assert_next_pass_converges(root, policy, capsys)
        shutil.rmtree(root)
    else:
        pytest.fail("the pass never got past its failpoints")
    # 11 renewals (7 pairs + 4 kubeconfigs = 18 files), 2 kubelet files and the state file,
    # each backed up then installed, plus the journal and its removal
    assert killed == 2 * 21 + 2


@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_sigkill_from_outside_at_spread_delays(
    templates: dict[str, Path],
    policy: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key_type: str,
) -> None:
    probe = tmp_path / "probe"
    shutil.copytree(templates[key_type], probe, symlinks=True)
    began = time.monotonic()
    assert subprocess.run(command(probe, policy), capture_output=True, check=False).returncode == 0
    duration = time.monotonic() - began
    outcomes = {"killed": 0, "finished": 0}
    for i in range(12):
        root = tmp_path / f"node-{i}"
        shutil.copytree(templates[key_type], root, symlinks=True)
        process = subprocess.Popen(
            command(root, policy), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(duration * (0.25 + 0.75 * i / 11))  # from just after start-up to the end
        process.send_signal(signal.SIGKILL)
        outcomes["killed" if process.wait() == -signal.SIGKILL else "finished"] += 1
        assert_consistent_or_journaled(root)
        assert_next_pass_converges(root, policy, capsys)
    assert outcomes["killed"] >= 6, outcomes
