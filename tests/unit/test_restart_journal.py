"""The restart journal and the state file's restartRequired: checked before they steer
anything, and recovery from them (a manifest left out, a rollback cut short)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.decide import ownfiles
from reconciler.model import paths
from reconciler.node import host, restart

MOVED = f"{paths.MOVED_MANIFESTS}/kube-apiserver.yaml"
GOOD = {
    "component": "kube-apiserver",
    "manifest": "/etc/kubernetes/manifests/kube-apiserver.yaml",
    "phase": "restart",
    "parked": MOVED,
    "sha256": "0" * 64,
}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"component": "kubelet"}, id="not-a-static-pod"),
        pytest.param({"manifest": "/etc/passwd"}, id="manifest-not-named-after-the-component"),
        pytest.param(
            {"manifest": "/etc/kubernetes/../../root/kube-apiserver.yaml"}, id="dotdot-in-manifest"
        ),
        pytest.param({"parked": "/etc/kubernetes/manifests/etcd.yaml"}, id="parked-elsewhere"),
        pytest.param({"phase": "explode"}, id="unknown-phase"),
        pytest.param({"files": ["/etc/shadow"], "backup": "/x"}, id="restore-outside-kubeadm"),
        pytest.param({"files": ["/etc/kubernetes/pki/apiserver.crt"]}, id="files-without-backup"),
        pytest.param({"extra": 1}, id="unknown-key"),
    ],
)
def test_a_restart_journal_that_could_steer_writes_elsewhere_is_refused(
    change: dict[str, Any],
) -> None:
    with pytest.raises(ownfiles.OwnFileError, match=r"kucero-restart\.json"):
        ownfiles.parse_restart_journal(json.dumps({**GOOD, **change}).encode())


def test_a_rollback_journal_parses() -> None:
    doc = {
        **GOOD,
        "phase": "rollback",
        "backup": f"{paths.TMP}/{paths.BACKUP_PREFIX}20260101T000000Z",
        "files": ["/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/pki/apiserver.key"],
    }
    assert ownfiles.parse_restart_journal(json.dumps(doc).encode()) == doc


@pytest.mark.parametrize(
    "required",
    [{"kubelet": {}}, {"etcd": {"fingerprint": "nope"}}, {"etcd": {"serving": "yes"}}, []],
    ids=["kubelet", "bad-fingerprint", "serving-not-bool", "not-an-object"],
)
def test_state_restart_required_is_checked(required: object) -> None:
    with pytest.raises(ownfiles.OwnFileError, match="restartRequired"):
        ownfiles.parse_state(json.dumps({"restartRequired": required}).encode())


def test_state_restart_required_round_trips() -> None:
    doc = {
        "pendingRestarts": [],
        "restartRequired": {"etcd": {"fingerprint": None, "serving": True}},
    }
    assert ownfiles.parse_state(json.dumps(doc).encode()) == doc


def _tree(tmp_path: Path, journal: dict[str, Any] | str) -> tuple[Path, Path]:
    root = tmp_path / "root"
    manifest = root / "etc/kubernetes/manifests/kube-apiserver.yaml"
    parked = root / MOVED.lstrip("/")
    parked.parent.mkdir(parents=True)
    manifest.parent.mkdir(parents=True)
    parked.write_text("apiVersion: v1\nkind: Pod\n")
    text = journal if isinstance(journal, str) else json.dumps(journal)
    (root / paths.RESTART_JOURNAL.lstrip("/")).write_text(text)
    return root, manifest


def test_recovery_puts_the_parked_manifest_back_and_owes_the_restart(tmp_path: Path) -> None:
    root, manifest = _tree(tmp_path, GOOD)
    notes = restart.recover(host.Host(root), lambda: None)  # type: ignore[arg-type,return-value]
    assert manifest.read_text() == "apiVersion: v1\nkind: Pod\n"
    assert any("moved /etc/kubernetes/manifests/kube-apiserver.yaml back" in n for n in notes)
    state = json.loads((root / paths.STATE.lstrip("/")).read_text())
    assert state["pendingRestarts"] == ["kube-apiserver"]
    assert not (root / paths.RESTART_JOURNAL.lstrip("/")).exists()
    assert restart.recover(host.Host(root), lambda: None) == []  # type: ignore[arg-type,return-value]


def test_a_damaged_restart_journal_is_reported_and_the_manifest_still_goes_back(
    tmp_path: Path,
) -> None:
    root, manifest = _tree(tmp_path, {**GOOD, "manifest": "/etc/passwd"})
    notes = restart.recover(host.Host(root), lambda: None)  # type: ignore[arg-type,return-value]
    assert any(n.startswith("ignored") and "manifest" in n for n in notes)
    assert manifest.exists() and not (root / "etc/passwd").exists()
