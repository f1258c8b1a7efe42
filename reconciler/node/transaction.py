"""All-or-nothing file changes on a node: backup, stage, journal, apply, recover.

A certificate and its key live in two files, and no filesystem renames two files at once, so a
crash can always fall between them. This module makes that harmless:

1. keep every file it will touch in ``/etc/kubernetes/tmp/kucero-backup-<UTC>/old/`` (a hard
   link to the very inode, or a copy where no link can be made: ``Host.preserve``) and stage
   every new content in a temporary beside its target (``Host.stage``), each fsynced, then one
   fsync per directory;
2. write the journal ``/etc/kubernetes/tmp/kucero-journal.json`` atomically: from this point
   the change is decided;
3. rename each staged file over its target (``Host.commit``), then fsync their directories;
4. remove the journal.

Each new content is written once (it used to be written twice, into the backup's ``new/`` and
again beside the target) and the old content not at all: kucero only ever replaces files by
rename, so a linked old inode is never written again. fsync is most of a pass's time.

``recover`` runs at the start of every pass: a journal left by a crash is rolled forward (every
file installed already or staged intact, by its hash), or, if a staged file is damaged, rolled
back from the backup. A crash before step 2 changed nothing but the backup directory, which the
retention pruning removes in time, and temporaries, which ``remove_temporaries`` removes after
``recover``. Either way, once ``recover`` returns, every pair on disk is a pair that was
written together. A journal written by an older kucero (staged copies in the backup's ``new/``)
is still finished the old way.

Edge: a crash before the journal leaves the backup's ``old/`` holding links to files that
stayed live; a tool that later rewrites one of them in place (``kubeadm certs renew`` does)
changes that backup too. It is the backup of a pass that changed nothing, and pruning removes
it in time (a failed attempt that does not crash removes its links itself).

Edge: the old content is as durable as its last writer made it. kucero's own files were
fsynced; a file that another tool wrote moments ago without fsync (``kubeadm certs renew``
does not sync) could be lost with the power, with or without kucero, and then only a rollback
(staged files damaged too) would miss it.

A ``Failpoint`` makes the process SIGKILL itself at the n-th step (for the crash tests, which
also kill from outside at random times).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import posixpath
import signal
import stat
from typing import Any

from reconciler.decide import ownfiles
from reconciler.model import kubeadm, paths
from reconciler.node import host as host_


@dataclasses.dataclass(frozen=True)
class Write:
    path: str  # host path
    data: bytes
    mode: int | None = None  # None: keep the existing file's mode (0600 for a new file)


class TransactionError(Exception):
    """The change was not applied (or was rolled back); the message says where it stopped."""

    def __init__(self, message: str, backup: str | None = None) -> None:
        super().__init__(message)
        self.backup = backup  # the backup directory this attempt made, if any


class Failpoint:
    """Kill this process with SIGKILL at the ``at``-th step of a transaction (0: never).

    Only the crash tests set it (through the hidden ``--failpoint`` flag); production code
    never reads it from the environment.
    """

    def __init__(self, at: int = 0) -> None:
        self.at = at
        self.count = 0

    def step(self) -> None:
        self.count += 1
        if self.at and self.count == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def apply(
    host: host_.Host,
    writes: list[Write],
    now: dt.datetime,
    retain: int,
    failpoints: Failpoint | None = None,
    protected: tuple[str, ...] = (),
) -> str:
    """Apply ``writes`` all together; return the backup directory (host path).

    Raises ``TransactionError`` if two writes are one file or one is in ``protected`` (nothing
    changed), if the backup cannot be made (nothing changed: the staged files and the backup's
    links to the live files are removed, the empty backup is left to pruning) or a write fails
    (everything rolled back; the backup keeps the replaced files).
    """
    failpoints = failpoints or Failpoint()
    refuse_shared(host, [w.path for w in writes], protected)
    backup = _new_backup_dir(host, now)
    entries: list[dict[str, Any]] = []
    try:
        made: set[str] = set()  # one level at a time, synced together at the barrier
        for write in writes:
            saved = f"{backup}/old/{write.path.lstrip('/')}"
            for directory in _levels(backup, posixpath.dirname(saved)):
                if directory not in made:
                    host.makedirs(directory, mode=0o700, sync=False)
                    made.add(directory)
            kept = host.preserve(write.path, saved)
            old, st = kept if kept is not None else (None, None)
            old_mode = st.st_mode & 0o7777 if st else None
            mode = write.mode if write.mode is not None else (old_mode or 0o600)
            owner = (st.st_uid, st.st_gid) if st else None
            entries.append(
                {
                    "path": write.path,
                    "sha256": _sha(write.data),
                    "mode": mode,
                    "oldSha256": _sha(old) if old is not None else None,
                    "oldMode": old_mode,
                    "owner": list(owner) if owner else None,
                    "staged": host.stage(write.path, write.data, mode, owner),
                }
            )
            failpoints.step()
        # Barrier: the backup's links or copies and every staged file are durable (each staged
        # file was fsynced; one fsync per directory makes the names durable) before the journal
        # points at them.
        targets = _target_dirs(host, [w.path for w in writes])
        host.sync_dirs([kubeadm.TMP, backup, *made, *targets])
        journal = {"backup": backup, "files": entries}
        host.write_atomic(paths.JOURNAL, json.dumps(journal, indent=1).encode(), mode=0o600)
    except host_.HostError as e:
        _discard_staged(host, entries)
        # its old/ holds links to files that stay live: not a backup of anything
        with contextlib.suppress(host_.HostError):
            host.remove_tree(f"{backup}/old", literal=2)
        raise TransactionError(f"backup failed, nothing changed: {e}", backup) from e
    failpoints.step()
    try:
        for entry in entries:
            host.commit(entry["path"], entry["staged"])
            failpoints.step()
        # Barrier: every replacement is durable before the journal that could redo it goes.
        host.sync_dirs(targets)
    except host_.HostError as e:
        try:
            _rollback(host, journal)
        except (host_.HostError, TransactionError) as again:
            raise TransactionError(
                f"write failed ({e}) and so did the rollback ({again}); the journal {paths.JOURNAL} is kept for the next pass",
                backup,
            ) from e
        raise TransactionError(
            f"write failed, every file restored from {backup}: {e}", backup
        ) from e
    host.remove(paths.JOURNAL)
    failpoints.step()
    return backup


def _levels(top: str, directory: str) -> list[str]:
    """``top``'s descendants down to ``directory``, outermost first."""
    parts = directory[len(top) :].strip("/").split("/")
    return [posixpath.join(top, *parts[: i + 1]) for i in range(len(parts))]


def _target_dirs(host: host_.Host, targets: list[str]) -> set[str]:
    """The directories the targets resolve to: where their temporaries are renamed."""
    return {posixpath.dirname(host.path_resolved(path)) for path in targets}


def refuse_shared(host: host_.Host, targets: list[str], protected: tuple[str, ...]) -> None:
    """The last guard before any write: refuse when two targets are one file (a key shared
    through a link: renewing one pair would break the other) or a target is a protected file
    (a CA's certificate or key), compared by resolved path and by (device, inode)."""
    owners: dict[object, str] = {}
    for path in protected:
        found = host.identity(path)
        if found is not None:
            owners[found.resolved] = owners[(found.device, found.inode)] = f"protected {path}"
    for path in targets:
        found = host.identity(path)
        if found is None:
            continue
        for key in (found.resolved, (found.device, found.inode)):
            if key in owners:
                raise TransactionError(
                    f"refused, nothing changed: {path} is the same file as {owners[key]}"
                )
        owners[found.resolved] = owners[(found.device, found.inode)] = path


def is_backup(host: host_.Host, name: str) -> bool:
    """Whether ``TMP/name`` is a backup kucero made: a real directory (never a link) holding
    the marker file kucero writes first into every backup it creates."""
    if not name.startswith(paths.BACKUP_PREFIX) or "/" in name:
        return False
    directory = host.lstat(paths.backup_dir(name))
    marker = host.lstat(f"{paths.backup_dir(name)}/{paths.BACKUP_MARKER}")
    return (
        directory is not None
        and stat.S_ISDIR(directory.st_mode)
        and marker is not None
        and stat.S_ISREG(marker.st_mode)
        and host.read(f"{paths.backup_dir(name)}/{paths.BACKUP_MARKER}") == paths.MARKER_CONTENT
    )


def recover(host: host_.Host) -> str | None:
    """Finish or undo a pass interrupted by a crash; say what was done (None: nothing to do).

    Rolls forward when every file is either installed already or staged intact, else back
    when every backed-up file verifies; when neither is possible it touches nothing, keeps the
    journal and raises, because guessing could pair a certificate with the wrong key. Run
    ``remove_temporaries`` after it, never before: a journal's staged files are temporaries.
    """
    data = host.read(paths.JOURNAL)
    if data is None:
        # A crash before the journal leaves staged temporaries beside the targets; one between
        # removing the journal and the old layout's staged copies leaves copies of live keys in
        # a backup's new/. Nothing needs them. Only in backups kucero made, never through a
        # link (a planted new -> /etc/kubernetes/pki is left alone).
        for name in host.listdir(kubeadm.TMP):
            staged = host.lstat(f"{paths.backup_dir(name)}/new")
            if is_backup(host, name) and staged is not None and stat.S_ISDIR(staged.st_mode):
                host.remove_tree(f"{paths.backup_dir(name)}/new", literal=2)
        return None
    try:
        journal = ownfiles.parse_journal(data)
    except ownfiles.OwnFileError as e:
        # The journal is written atomically, so this is damage from outside.
        raise TransactionError(
            f"unreadable journal: {e}; inspect it and the backups by hand"
        ) from e
    backup, entries = journal["backup"], journal["files"]
    if not is_backup(host, posixpath.basename(backup)):
        raise TransactionError(
            f"{paths.JOURNAL}: {backup} is not a backup kucero made; inspect it by hand"
        )
    pending = [e for e in entries if not _installed(host, e)]
    if all(_staged_ok(host, backup, e) for e in pending):
        for entry in pending:
            _install(host, backup, entry)
        host.sync_dirs(_target_dirs(host, [e["path"] for e in entries]))
        host.remove(paths.JOURNAL)
        done = f"completed an interrupted pass from {backup}"
    else:
        _rollback(host, journal)
        done = f"rolled back an interrupted pass from {backup}/old (staged files were damaged)"
    with contextlib.suppress(host_.HostError):
        host.remove_tree(f"{backup}/new", literal=2)  # a journal of the old layout
    return done


def prune(host: host_.Host, retain: int, keep: str | None = None) -> list[str]:
    """Remove all but the newest ``retain`` backups (by modification time, so a clock that
    stepped back cannot make the newest look oldest); never ``keep``, never the backup an open
    journal still needs, never anything kucero did not make (``is_backup``: a link named like
    a backup, or a directory without kucero's marker, is not counted and not touched).
    Returns the removed."""
    pinned = {keep, _journal_backup(host)} - {None}
    dated = []
    for name in host.listdir(kubeadm.TMP):
        if is_backup(host, name):
            st = host.lstat(paths.backup_dir(name))
            if st is not None:
                dated.append((st.st_mtime, name))
    newest_first = [n for _, n in sorted(dated, reverse=True)]
    kept = [n for n in newest_first if paths.backup_dir(n) in pinned]
    kept += [n for n in newest_first if n not in kept][: max(0, retain - len(kept))]
    removed = [n for n in newest_first if n not in kept]
    for name in removed:
        host.remove_tree(paths.backup_dir(name))
    return [paths.backup_dir(n) for n in removed]


def _journal_backup(host: host_.Host) -> str | None:
    try:
        data = host.read(paths.JOURNAL)
        return ownfiles.parse_journal(data)["backup"] if data is not None else None
    except (host_.HostError, ownfiles.OwnFileError):
        return None


def _discard_staged(host: host_.Host, entries: list[dict[str, Any]]) -> None:
    """Staged copies of a change that did not land hold new private keys nobody needs."""
    for entry in entries:
        if "staged" in entry:
            with contextlib.suppress(host_.HostError):
                host.remove(host.sibling(entry["path"], entry["staged"]))


def remove_temporaries(host: host_.Host) -> list[str]:
    """Remove what interrupted writes left (kucero's ``.kucero-tmp-*`` names only, never
    followed through a link) in every directory kucero writes to; after ``recover``."""
    return [p for d in paths.WRITTEN_DIRECTORIES for p in host.remove_temporaries(d)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _new_backup_dir(host: host_.Host, now: dt.datetime) -> str:
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{kubeadm.TMP}/{paths.BACKUP_PREFIX}{stamp}"
    candidate, n = base, 1
    try:
        while host.lstat(candidate) is not None:
            candidate, n = f"{base}-{n}", n + 1
        # both entries are made durable by apply's barrier, before the journal names them
        host.makedirs(candidate, mode=0o700, sync=False)
        # written first: only directories holding it are ever pruned or emptied by kucero
        marker = f"{candidate}/{paths.BACKUP_MARKER}"
        host.write_atomic(marker, paths.MARKER_CONTENT, mode=0o600, sync_dir=False)
    except OSError as e:
        raise TransactionError(f"backup failed, nothing changed: {e}") from e
    return candidate


def _owner(entry: dict[str, Any]) -> tuple[int, int] | None:
    return (entry["owner"][0], entry["owner"][1]) if entry.get("owner") else None


def _installed(host: host_.Host, entry: dict[str, Any]) -> bool:
    current = host.read(entry["path"])
    return current is not None and _sha(current) == entry["sha256"]


def _staged_path(host: host_.Host, backup: str, entry: dict[str, Any]) -> str:
    if "staged" in entry:
        return host.sibling(entry["path"], entry["staged"])
    return f"{backup}/new/{entry['path'].lstrip('/')}"  # a journal of the old layout


def _staged_ok(host: host_.Host, backup: str, entry: dict[str, Any]) -> bool:
    staged = host.read(_staged_path(host, backup, entry))
    return staged is not None and _sha(staged) == entry["sha256"]


def _install(host: host_.Host, backup: str, entry: dict[str, Any]) -> None:
    """Install a verified staged file: rename it over its target, or (old layout) copy it."""
    if "staged" in entry:
        host.commit(entry["path"], entry["staged"])
        return
    staged = host.read(_staged_path(host, backup, entry))
    if staged is None or _sha(staged) != entry["sha256"]:
        raise host_.HostError(f"{backup}/new{entry['path']}: staged copy missing or damaged")
    host.write_atomic(entry["path"], staged, mode=entry["mode"], owner=_owner(entry))


def _rollback(host: host_.Host, journal: dict[str, Any]) -> None:
    backup = journal["backup"]
    originals: dict[str, bytes | None] = {}
    for entry in journal["files"]:
        if entry.get("oldSha256") is None:
            originals[entry["path"]] = None
            continue
        old = host.read(f"{backup}/old/{entry['path'].lstrip('/')}")
        if old is None or _sha(old) != entry["oldSha256"]:
            raise TransactionError(
                f"cannot roll back: {backup}/old{entry['path']} is missing or damaged and the "
                f"staged new files are too; {paths.JOURNAL} kept, nothing touched; restore by hand"
            )
        originals[entry["path"]] = old
    for entry in journal["files"]:
        old = originals[entry["path"]]
        if old is None:
            host.remove(entry["path"])
        else:
            mode = entry.get("oldMode") or entry["mode"]
            host.write_atomic(entry["path"], old, mode=mode, owner=_owner(entry))
    host.remove(paths.JOURNAL)
    _discard_staged(host, journal["files"])
