"""The node's files: symlinks resolved inside the root, and transactions that roll back only to
a verified state."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from reconciler.model import paths
from reconciler.node import host, transaction

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_absolute_symlink_is_resolved_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/kubelet/pki").mkdir(parents=True)
    (root / "var/lib/kubelet/pki/real.pem").write_bytes(b"inside")
    (root / "var/lib/kubelet/pki/current.pem").symlink_to("/var/lib/kubelet/pki/real.pem")
    assert host.Host(root).read("/var/lib/kubelet/pki/current.pem") == b"inside"


@pytest.mark.parametrize(
    "target",
    ["/outside", "../../../../outside", "../../.."],
    ids=["absolute", "dotdot", "dotdot-dir"],
)
def test_links_cannot_lead_out_of_the_root(tmp_path: Path, target: str) -> None:
    root = tmp_path / "root"
    (root / "etc/kubernetes").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "etc/kubernetes/tmp").symlink_to(target)
    node = host.Host(root)
    node.write_atomic("/etc/kubernetes/tmp/secret.key", b"key", mode=0o600)
    assert not (outside / "secret.key").exists()
    assert not (tmp_path / "secret.key").exists()
    assert node.path("/etc/kubernetes/tmp/secret.key").is_relative_to(root)
    assert node.read("/etc/kubernetes/tmp/secret.key") == b"key"


def test_symlink_loop_is_an_error_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("/b")
    (tmp_path / "b").symlink_to("/a")
    with pytest.raises(host.HostError, match=r"/a/x: .*too many levels of symbolic links"):
        host.Host(tmp_path).read("/a/x")


def test_write_atomic_keeps_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    (tmp_path / "f").chmod(0o640)
    host.Host(tmp_path).write_atomic("/f", b"new")
    assert (tmp_path / "f").read_bytes() == b"new" and (
        tmp_path / "f"
    ).stat().st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["f"]


def _tree(tmp_path: Path) -> host.Host:
    root = tmp_path / "root"
    (root / "etc/kubernetes/pki").mkdir(parents=True)
    (root / "etc/kubernetes/pki/a.crt").write_bytes(b"crt-v1")
    (root / "etc/kubernetes/pki/a.key").write_bytes(b"key-v1")
    return host.Host(root)


WRITES = [
    transaction.Write("/etc/kubernetes/pki/a.crt", b"crt-v2"),
    transaction.Write("/etc/kubernetes/pki/a.key", b"key-v2", mode=0o600),
]


def _pair(node: host.Host) -> tuple[bytes | None, bytes | None]:
    return node.read("/etc/kubernetes/pki/a.crt"), node.read("/etc/kubernetes/pki/a.key")


def test_a_failed_write_rolls_every_file_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = _tree(tmp_path)
    real = host.Host.commit

    def failing(self: host.Host, path: str, staged: str) -> None:
        if path == "/etc/kubernetes/pki/a.key":  # the second install: a.crt is new already
            raise host.HostError(f"{path}: cannot replace: No space left on device")
        real(self, path, staged)

    monkeypatch.setattr(host.Host, "commit", failing)
    with pytest.raises(transaction.TransactionError, match=r"every file restored.*No space left"):
        transaction.apply(node, WRITES, NOW, retain=5)
    assert _pair(node) == (b"crt-v1", b"key-v1")
    assert node.read(paths.JOURNAL) is None
    assert not [p for p in node.path("/etc/kubernetes/pki").iterdir() if p.name.startswith(".")]


def _interrupted(node: host.Host) -> dict[str, object]:
    """The state a SIGKILL right after the first install leaves: new crt, old key, journal."""
    backup = "/etc/kubernetes/tmp/kucero-backup-x"
    node.write_atomic(f"{backup}/{paths.BACKUP_MARKER}", paths.MARKER_CONTENT)
    files = []
    for write, old in zip(WRITES, (b"crt-v1", b"key-v1"), strict=True):
        rel = write.path.lstrip("/")
        node.write_atomic(f"{backup}/old/{rel}", old)
        node.write_atomic(f"{backup}/new/{rel}", write.data)
        files.append(
            {
                "path": write.path,
                "sha256": hashlib.sha256(write.data).hexdigest(),
                "mode": 0o600,
                "oldSha256": hashlib.sha256(old).hexdigest(),
                "oldMode": 0o644,
                "owner": None,
            }
        )
    journal = {"backup": backup, "files": files}
    node.write_atomic(paths.JOURNAL, json.dumps(journal).encode())
    node.write_atomic("/etc/kubernetes/pki/a.crt", b"crt-v2")
    return journal


def test_recover_rolls_forward_from_verified_staged_files(tmp_path: Path) -> None:
    node = _tree(tmp_path)
    _interrupted(node)
    assert "completed" in (transaction.recover(node) or "")
    assert _pair(node) == (b"crt-v2", b"key-v2")
    assert node.read(paths.JOURNAL) is None


def test_recover_rolls_back_when_a_staged_file_is_damaged(tmp_path: Path) -> None:
    node = _tree(tmp_path)
    _interrupted(node)
    node.write_atomic(
        "/etc/kubernetes/tmp/kucero-backup-x/new/etc/kubernetes/pki/a.key", b"garbage"
    )
    assert "rolled back" in (transaction.recover(node) or "")
    assert _pair(node) == (b"crt-v1", b"key-v1")


def test_recover_touches_nothing_when_neither_side_verifies(tmp_path: Path) -> None:
    node = _tree(tmp_path)
    _interrupted(node)
    node.write_atomic(
        "/etc/kubernetes/tmp/kucero-backup-x/new/etc/kubernetes/pki/a.key", b"garbage"
    )
    node.remove("/etc/kubernetes/tmp/kucero-backup-x/old/etc/kubernetes/pki/a.crt")
    with pytest.raises(
        transaction.TransactionError, match=r"cannot roll back.*kept, nothing touched"
    ):
        transaction.recover(node)
    assert _pair(node) == (b"crt-v2", b"key-v1")  # as the crash left it, journal kept for a human
    assert node.read(paths.JOURNAL) is not None


def test_unreadable_journal_is_an_error(tmp_path: Path) -> None:
    node = _tree(tmp_path)
    node.write_atomic(paths.JOURNAL, b"{not json")
    with pytest.raises(transaction.TransactionError, match="unreadable"):
        transaction.recover(node)


def test_recover_finishes_a_journal_of_the_older_layout_and_temporaries_go_after_it(
    tmp_path: Path,
) -> None:
    node = _tree(tmp_path)
    _interrupted(node)  # staged copies in the backup's new/, as an older kucero wrote them
    leftover = node.path("/etc/kubernetes/pki") / f"{paths.TEMP_PREFIX}a.key.0123456789ab"
    leftover.write_bytes(b"half a key")
    assert "completed" in (transaction.recover(node) or "")
    assert leftover.exists()  # recover never guesses which temporaries are staged files
    assert transaction.remove_temporaries(node) == [
        f"/etc/kubernetes/pki/{paths.TEMP_PREFIX}a.key.0123456789ab"
    ]
    assert not leftover.exists()
    assert not node.path("/etc/kubernetes/tmp/kucero-backup-x/new").exists()


class Crash(BaseException):
    """Stands for a SIGKILL: nothing below it runs (apply catches only HostError)."""


def _crash_at_commit(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    real = host.Host.commit
    calls = 0

    def commit(self: host.Host, path: str, staged: str) -> None:
        nonlocal calls
        calls += 1
        if calls == nth:
            raise Crash
        real(self, path, staged)

    monkeypatch.setattr(host.Host, "commit", commit)


def _journal_write_fails(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Writing the journal raises ``error``; every other write happens."""
    real = host.Host.write_atomic

    def failing(self: host.Host, path: str, *args: Any, **kwargs: Any) -> None:
        if path == paths.JOURNAL:
            raise error
        real(self, path, *args, **kwargs)

    monkeypatch.setattr(host.Host, "write_atomic", failing)


def _crashed_between_the_installs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> host.Host:
    """A tree whose transaction died after installing a.crt and before a.key."""
    node = _tree(tmp_path)
    _crash_at_commit(monkeypatch, 2)
    with pytest.raises(Crash):
        transaction.apply(node, WRITES, NOW, retain=5)
    monkeypatch.undo()
    return node


def _temporaries(node: host.Host) -> list[str]:
    return [p.name for p in node.path("/etc/kubernetes/pki").iterdir() if p.name.startswith(".")]


def test_a_crash_between_two_installs_is_rolled_forward_from_the_staged_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = _crashed_between_the_installs(tmp_path, monkeypatch)
    assert _pair(node) == (b"crt-v2", b"key-v1") and len(_temporaries(node)) == 1
    journal = json.loads(node.read(paths.JOURNAL) or b"")
    assert [e["staged"].startswith(paths.TEMP_PREFIX) for e in journal["files"]] == [True, True]
    assert "completed" in (transaction.recover(node) or "")
    assert _pair(node) == (b"crt-v2", b"key-v2") and not _temporaries(node)
    assert node.read(paths.JOURNAL) is None


def test_a_crash_with_a_damaged_staged_file_is_rolled_back_and_the_staged_files_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = _crashed_between_the_installs(tmp_path, monkeypatch)
    (node.path("/etc/kubernetes/pki") / _temporaries(node)[0]).write_bytes(b"torn")
    assert "rolled back" in (transaction.recover(node) or "")
    assert _pair(node) == (b"crt-v1", b"key-v1") and not _temporaries(node)


def test_a_crash_before_the_journal_changes_nothing_and_its_temporaries_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = _tree(tmp_path)
    _journal_write_fails(monkeypatch, Crash())
    with pytest.raises(Crash):
        transaction.apply(node, WRITES, NOW, retain=5)
    monkeypatch.undo()
    assert _pair(node) == (b"crt-v1", b"key-v1") and len(_temporaries(node)) == 2
    assert transaction.recover(node) is None
    assert len(transaction.remove_temporaries(node)) == 2
    assert _pair(node) == (b"crt-v1", b"key-v1") and not _temporaries(node)


def test_the_backup_is_the_replaced_file_itself_or_a_copy_across_filesystems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = _tree(tmp_path)
    old_inode = node.path("/etc/kubernetes/pki/a.key").stat().st_ino
    backup = transaction.apply(node, WRITES, NOW, retain=5)
    saved = node.path(f"{backup}/old/etc/kubernetes/pki/a.key")
    assert saved.read_bytes() == b"key-v1" and saved.stat().st_ino == old_inode

    def cross_device(*args: object, **kwargs: object) -> None:
        raise OSError(18, "Invalid cross-device link")  # EXDEV

    monkeypatch.setattr(os, "link", cross_device)
    later = transaction.apply(node, [dataclasses.replace(WRITES[1], data=b"key-v3")], NOW, retain=5)
    copied = node.path(f"{later}/old/etc/kubernetes/pki/a.key")
    assert copied.read_bytes() == b"key-v2" and copied.stat().st_mode & 0o777 == 0o600


def test_temporaries_are_removed_by_name_only_and_never_through_a_link(tmp_path: Path) -> None:
    node = _tree(tmp_path)
    pki = node.path("/etc/kubernetes/pki")
    (pki / f"{paths.TEMP_PREFIX}x").symlink_to("a.key")
    (pki / "kept.tmp").write_bytes(b"not ours")
    assert transaction.remove_temporaries(node) == [f"/etc/kubernetes/pki/{paths.TEMP_PREFIX}x"]
    assert _pair(node) == (b"crt-v1", b"key-v1") and (pki / "kept.tmp").exists()


def test_a_backup_that_fails_removes_its_staged_files_and_its_links_to_the_live_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = _tree(tmp_path)
    _journal_write_fails(monkeypatch, host.HostError("cannot write: No space left on device"))
    with pytest.raises(transaction.TransactionError, match="backup failed, nothing changed"):
        transaction.apply(node, WRITES, NOW, retain=5)
    assert _pair(node) == (b"crt-v1", b"key-v1") and not _temporaries(node)
    assert node.path("/etc/kubernetes/pki/a.key").stat().st_nlink == 1  # no backup link left
    (backup,) = node.path("/etc/kubernetes/tmp").glob("kucero-backup-*")
    assert not (backup / "old").exists() and (backup / paths.BACKUP_MARKER).exists()
