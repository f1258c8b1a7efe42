"""All-or-nothing file changes on a node: backup, stage, journal, apply, recover.

A certificate and its key live in two files, and no filesystem renames two files at once, so a
crash can always fall between them. This module makes that harmless:

1. back up every file it will touch into ``/etc/kubernetes/tmp/kucero-backup-<UTC>/old/``
   (mode 0600, keys included) and stage every new content into ``.../new/``, all fsynced;
2. write the journal ``/etc/kubernetes/tmp/kucero-journal.json`` atomically: from this point
   the change is decided;
3. replace each file atomically (``Host.write_atomic``);
4. remove the journal.

``recover`` runs at the start of every pass: a journal left by a crash is rolled forward from
the staged files (each already verified by its hash), or, if a staged file is damaged, rolled
back from the backup. A crash before step 2 changed nothing but the backup directory, which
the retention pruning removes in time. Either way, once ``recover`` returns, every pair on disk
is a pair that was written together.

``KUCERO_FAILPOINT=<n>`` makes the process SIGKILL itself at the n-th step (for the crash
tests, which also kill from outside at random times).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import posixpath
import signal
from typing import Any

from reconciler import host as host_
from reconciler import kubeadm

JOURNAL = f"{kubeadm.TMP}/kucero-journal.json"
BACKUP_PREFIX = "kucero-backup-"
_FAILPOINT_ENV = "KUCERO_FAILPOINT"


@dataclasses.dataclass(frozen=True)
class Write:
    path: str  # host path
    data: bytes
    mode: int | None = None  # None: keep the existing file's mode (0600 for a new file)


class TransactionError(Exception):
    """The change was not applied (or was rolled back); the message says where it stopped."""


class _Failpoints:
    def __init__(self) -> None:
        value = os.environ.get(_FAILPOINT_ENV, "")
        self.at = int(value) if value.isdigit() else 0
        self.count = 0

    def step(self) -> None:
        self.count += 1
        if self.at and self.count == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def apply(host: host_.Host, writes: list[Write], now: dt.datetime, retain: int) -> str:
    """Apply ``writes`` all together; return the backup directory (host path).

    Raises ``TransactionError`` if the backup cannot be made (nothing changed) or a write
    fails (everything rolled back). Idempotent: writing content a file already has is a no-op.
    """
    failpoints = _Failpoints()
    backup = _new_backup_dir(host, now)
    entries = []
    try:
        for write in writes:
            old = host.read(write.path)
            st = host.stat(write.path)
            rel = write.path.lstrip("/")
            for side in ("old", "new"):
                host.makedirs(posixpath.dirname(f"{backup}/{side}/{rel}"), mode=0o700)
            if old is not None:
                host.write_atomic(f"{backup}/old/{rel}", old, mode=0o600)
            host.write_atomic(f"{backup}/new/{rel}", write.data, mode=0o600)
            mode = write.mode if write.mode is not None else (st.st_mode & 0o7777 if st else 0o600)
            entries.append(
                {
                    "path": write.path,
                    "existed": old is not None,
                    "sha256": hashlib.sha256(write.data).hexdigest(),
                    "mode": mode,
                    "owner": [st.st_uid, st.st_gid] if st else None,
                }
            )
            failpoints.step()
        journal = {"backup": backup, "files": entries}
        host.write_atomic(JOURNAL, json.dumps(journal, indent=1).encode(), mode=0o600)
    except host_.HostError as e:
        raise TransactionError(f"backup failed, nothing changed: {e}") from e
    failpoints.step()
    try:
        for entry in entries:
            _install(host, backup, entry)
            failpoints.step()
    except host_.HostError as e:
        _rollback(host, journal)
        raise TransactionError(f"write failed, every file restored from {backup}: {e}") from e
    host.remove(JOURNAL)
    failpoints.step()
    prune(host, retain)
    return backup


def recover(host: host_.Host) -> str | None:
    """Finish or undo a pass interrupted by a crash; say what was done (None: nothing to do)."""
    data = host.read(JOURNAL)
    if data is None:
        return None
    try:
        journal = json.loads(data)
        backup, entries = journal["backup"], journal["files"]
    except (ValueError, KeyError, TypeError) as e:
        # The journal is written atomically, so this is damage from outside; files were not
        # touched before a complete journal existed, and we cannot tell which are whose.
        raise TransactionError(
            f"{JOURNAL}: unreadable ({e}); inspect it and the backups by hand"
        ) from e
    if all(_staged_ok(host, backup, e) for e in entries):
        for entry in entries:
            _install(host, backup, entry)
        host.remove(JOURNAL)
        return f"completed an interrupted pass from {backup}"
    _rollback(host, journal)
    return f"rolled back an interrupted pass from {backup}/old (staged files were damaged)"


def prune(host: host_.Host, retain: int) -> list[str]:
    """Remove all but the newest ``retain`` backups; return the removed ones."""
    backups = sorted(n for n in host.listdir(kubeadm.TMP) if n.startswith(BACKUP_PREFIX))
    removed = backups[: max(0, len(backups) - retain)]
    for name in removed:
        _remove_tree(host, f"{kubeadm.TMP}/{name}")
    return removed


def _new_backup_dir(host: host_.Host, now: dt.datetime) -> str:
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{kubeadm.TMP}/{BACKUP_PREFIX}{stamp}"
    candidate, n = base, 1
    try:
        while host.exists(candidate):
            candidate, n = f"{base}-{n}", n + 1
        host.makedirs(candidate, mode=0o700)
    except OSError as e:
        raise TransactionError(f"backup failed, nothing changed: {e}") from e
    return candidate


def _install(host: host_.Host, backup: str, entry: dict[str, Any]) -> None:
    staged = host.read(f"{backup}/new/{entry['path'].lstrip('/')}")
    assert staged is not None
    owner = (entry["owner"][0], entry["owner"][1]) if entry.get("owner") else None
    host.write_atomic(entry["path"], staged, mode=entry["mode"], owner=owner)


def _staged_ok(host: host_.Host, backup: str, entry: dict[str, Any]) -> bool:
    staged = host.read(f"{backup}/new/{entry['path'].lstrip('/')}")
    return staged is not None and hashlib.sha256(staged).hexdigest() == entry["sha256"]


def _rollback(host: host_.Host, journal: dict[str, Any]) -> None:
    backup = journal["backup"]
    for entry in journal["files"]:
        if entry["existed"]:
            old = host.read(f"{backup}/old/{entry['path'].lstrip('/')}")
            if old is not None:
                owner = (entry["owner"][0], entry["owner"][1]) if entry.get("owner") else None
                host.write_atomic(entry["path"], old, mode=entry["mode"], owner=owner)
        else:
            host.remove(entry["path"])
    host.remove(JOURNAL)


def _remove_tree(host: host_.Host, path: str) -> None:
    root = host.path(path)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            os.rmdir(os.path.join(dirpath, name))
    os.rmdir(root)
