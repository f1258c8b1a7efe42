"""The one door to the node: files under ``--host-root`` and commands on the host.

Every path given to a ``Host`` is a *host path* (``/etc/kubernetes/pki/ca.crt``); the host maps
it under its root, so a ``tmp_path`` tree stands in for ``/`` in tests and the DaemonSet's
``/host`` mount in production. Absent files are ``None``, not exceptions; anything else that
goes wrong (permissions, a directory where a file should be, a FIFO or device where a file
should be, a file too large) is a ``HostError`` naming the host path.

Confinement cannot race: every path is walked from a descriptor of the root, one component at
a time, each opened with ``O_NOFOLLOW`` relative to its parent's descriptor. Symlinks are
resolved by this module, never by the OS: absolute targets restart at the root and ``..`` stops
there, as in a chroot. Every write, rename, unlink and mkdir is then made relative to the
parent's descriptor, so swapping a directory for a link to outside the root between the check
and the use (issue 6: 284 files, one holding ``client-key-data``, landed outside) at worst
makes the operation fail, never escape.

``write_atomic`` is the only way we change a file: a temporary file in the same directory,
written, fsynced, given the original's mode and owner, renamed over the original, and the
directory fsynced, so a reader (or a crash) sees the old content or the new, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import posixpath
import secrets
import shlex
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from reconciler.model import hoststate, paths
from reconciler.node import confined

# Largest file kucero reads: 1 MiB. kubeadm's largest (a kubeconfig with an embedded RSA-4096
# pair and CA certificate) is about 12 KiB, a kubelet config a few KiB, kucero's journal about
# 300 bytes per file; anything bigger is not one of them, and must not cost the pass its memory.
MAX_FILE_BYTES = 1 << 20
# A host command (systemctl, crictl) that hangs must not hang the pass forever.
COMMAND_TIMEOUT_SECONDS = 120.0
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class HostError(OSError):
    """A host file or command failed; the message names the host path or command."""


class Host:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root_fd: int | None = None  # while ``pinned``

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Open the root once for a pass, not once per path (a pass resolves about 300)."""
        if self._root_fd is not None:
            yield
            return
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield
        finally:
            os.close(self._root_fd)
            self._root_fd = None

    def _root(self) -> str | os.PathLike[str] | int:
        return self._root_fd if self._root_fd is not None else self.root

    def _at(
        self, host_path: str, *, follow_last: bool = True, create_parents: bool = False
    ) -> contextlib.AbstractContextManager[confined.Located]:
        return confined.locate(
            self._root(), host_path, follow_last=follow_last, create_parents=create_parents
        )

    def path(self, host_path: str) -> Path:
        """The local path ``host_path`` resolves to inside the root (for messages and tests;
        every operation below walks the path again from descriptors)."""
        try:
            with self._at(host_path) as where:
                return self.root.joinpath(where.resolved.lstrip("/"))
        except OSError:
            return self.root.joinpath(*confined.parts(host_path))

    def read(self, host_path: str, limit: int = MAX_FILE_BYTES) -> bytes | None:
        """The content of a regular file, or None when absent. A FIFO, device, directory or
        a file over ``limit`` bytes is a ``HostError`` (opened non-blocking: never a hang)."""
        try:
            with self._at(host_path) as where:
                return _read_at(where, host_path, limit)[0]
        except FileNotFoundError:
            return None
        except HostError:
            raise
        except OSError as e:
            raise HostError(f"{host_path}: cannot read: {e.strerror or e}") from e

    def stat(self, host_path: str) -> os.stat_result | None:
        """The file ``host_path`` ends at (links followed), or None when absent."""
        try:
            with self._at(host_path) as where:
                return os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise HostError(f"{host_path}: cannot stat: {e.strerror or e}") from e

    def lstat(self, host_path: str) -> os.stat_result | None:
        """The entry itself (a link is a link), or None when absent."""
        try:
            with self._at(host_path, follow_last=False) as where:
                return os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise HostError(f"{host_path}: cannot stat: {e.strerror or e}") from e

    def exists(self, host_path: str) -> bool:
        return self.stat(host_path) is not None

    def identity(self, host_path: str) -> hoststate.FileIdentity | None:
        """Which file ``host_path`` resolves to, to tell when two paths are one file."""
        try:
            with self._at(host_path) as where:
                st = os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
                return hoststate.FileIdentity(where.resolved, st.st_dev, st.st_ino)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise HostError(f"{host_path}: cannot stat: {e.strerror or e}") from e

    def listdir(self, host_path: str) -> list[str]:
        try:
            with self._at(host_path) as where:
                fd = os.open(where.name, _DIR_FLAGS, dir_fd=where.dir_fd)
                try:
                    return sorted(os.listdir(fd))
                finally:
                    os.close(fd)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise HostError(f"{host_path}: cannot list: {e.strerror or e}") from e

    def write_atomic(
        self,
        host_path: str,
        data: bytes,
        mode: int | None = None,
        owner: tuple[int, int] | None = None,
        sync_dir: bool = True,
    ) -> None:
        """Replace the file at ``host_path`` with ``data``, atomically and durably.

        ``mode``/``owner`` default to the existing file's (0600 and the caller's for a new
        file). Writing the content it already has is a no-op. ``sync_dir=False`` leaves the
        directory's fsync (which makes the rename durable) to a later ``sync_dirs`` by a
        caller that writes many files in one directory before its next barrier.
        """
        if mode is None and owner is None and self.read(host_path) == data:
            return
        try:
            with self._at(host_path, create_parents=True) as where:
                _write_at(where, data, mode, owner, sync_dir)
        except OSError as e:
            raise HostError(f"{host_path}: cannot write: {e.strerror or e}") from e

    def stage(
        self,
        host_path: str,
        data: bytes,
        mode: int | None = None,
        owner: tuple[int, int] | None = None,
    ) -> str:
        """The first half of ``write_atomic``: ``data`` written and fsynced to a new temporary
        beside the file ``host_path`` resolves to (its mode and owner as ``write_atomic`` gives
        them), the file itself untouched. Returns the temporary's name, for ``commit``."""
        try:
            with self._at(host_path, create_parents=True) as where:
                return _stage_at(where, data, mode, owner)
        except OSError as e:
            raise HostError(f"{host_path}: cannot write: {e.strerror or e}") from e

    def commit(self, host_path: str, staged: str) -> None:
        """The second half: rename the temporary ``staged`` over the file ``host_path`` resolves
        to. Durable once its directory is synced (``sync_dirs``). A temporary that is not in
        that directory any more (moved, or the path now resolves elsewhere) is an error."""
        if "/" in staged or not staged.startswith(paths.TEMP_PREFIX):
            raise HostError(f"{host_path}: {staged!r} is not a temporary kucero stages")
        try:
            with self._at(host_path) as where:
                os.rename(staged, where.name, src_dir_fd=where.dir_fd, dst_dir_fd=where.dir_fd)
        except OSError as e:
            raise HostError(f"{host_path}: cannot replace: {e.strerror or e}") from e

    def sibling(self, host_path: str, name: str) -> str:
        """The host path of ``name`` in the directory the file ``host_path`` resolves to (where
        ``stage`` put its temporary)."""
        return posixpath.join(posixpath.dirname(self.path_resolved(host_path)), name)

    def path_resolved(self, host_path: str) -> str:
        """``host_path`` with every link resolved by this module's rules (itself when a
        directory on the way is missing)."""
        try:
            with self._at(host_path) as where:
                return where.resolved
        except OSError:
            return "/" + "/".join(confined.parts(host_path))

    def preserve(
        self, host_path: str, backup_path: str, limit: int = MAX_FILE_BYTES
    ) -> tuple[bytes, os.stat_result] | None:
        """Keep the current file ``host_path`` under ``backup_path`` (a new name in an existing
        directory) and return its content and stat, or None when there is no such file.

        A hard link when the filesystem allows it: no copy and nothing to fsync but the
        directories, because kucero replaces files by rename, so the linked inode is never
        written again and becomes the backup's alone once the new file is installed. Else
        (another filesystem, a refused link) a durable copy, mode 0600. The link is checked to
        be the very file read (by device and inode), so a file swapped meanwhile is copied."""
        try:
            with self._at(host_path) as src:
                data, st = _read_at(src, host_path, limit)
                self._keep(src, st, data, backup_path)
                return data, st
        except FileNotFoundError:
            return None  # no such file (``_keep`` raises HostError only)
        except HostError:
            raise
        except OSError as e:
            raise HostError(
                f"{host_path} -> {backup_path}: cannot back up: {e.strerror or e}"
            ) from e

    def _keep(
        self, src: confined.Located, st: os.stat_result, data: bytes, backup_path: str
    ) -> None:
        try:
            with self._at(backup_path, follow_last=False) as dst:
                if not _linked(src, dst, st):
                    _write_at(dst, data, 0o600, None, sync_dir=False)
        except OSError as e:
            raise HostError(f"{backup_path}: cannot back up: {e.strerror or e}") from e

    def sync_dirs(self, host_dirs: Iterable[str]) -> None:
        """fsync each directory once: the renames made in it are durable when this returns."""
        for host_dir in sorted(set(host_dirs)):
            try:
                with self._at(host_dir) as where:
                    fd = os.open(where.name, _DIR_FLAGS, dir_fd=where.dir_fd)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            except OSError as e:
                raise HostError(f"{host_dir}: cannot sync: {e.strerror or e}") from e

    def remove(self, host_path: str) -> None:
        """Remove a file (a link itself, never what it points to); absent is a no-op."""
        try:
            with self._at(host_path, follow_last=False) as where:
                os.unlink(where.name, dir_fd=where.dir_fd)
                os.fsync(where.dir_fd)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise HostError(f"{host_path}: cannot remove: {e.strerror or e}") from e

    def rename(self, src: str, dst: str) -> None:
        """Move the entry ``src`` (a link is moved as a link) to ``dst``, replacing it."""
        try:
            with (
                self._at(src, follow_last=False) as s,
                self._at(dst, follow_last=False, create_parents=True) as d,
            ):
                os.rename(s.name, d.name, src_dir_fd=s.dir_fd, dst_dir_fd=d.dir_fd)
                os.fsync(d.dir_fd)
                os.fsync(s.dir_fd)
        except OSError as e:
            raise HostError(f"{src} -> {dst}: cannot rename: {e.strerror or e}") from e

    def makedirs(self, host_path: str, mode: int = 0o700, sync: bool = True) -> None:
        """Create a directory and its parents, durably (each new entry's parent fsynced).

        ``sync=False``: the new directory's own entry is left to a later ``sync_dirs`` of its
        parent (a caller that creates its directories one level at a time before a barrier)."""
        try:
            with confined.locate(self._root(), host_path, create_parents=True, mode=mode) as where:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(where.name, mode, dir_fd=where.dir_fd)
                    if sync:
                        os.fsync(where.dir_fd)
                st = os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    raise HostError(f"{host_path}: exists and is not a directory")
        except HostError:
            raise
        except OSError as e:
            raise HostError(f"{host_path}: cannot create directory: {e.strerror or e}") from e

    def remove_tree(self, host_path: str, literal: int = 1) -> None:
        """Remove a directory kucero made, never following a link: the last ``literal``
        components must be real directories reached without any link (a planted
        ``kucero-backup-x -> ../pki`` or ``.../new -> /etc/kubernetes/pki`` is refused)."""
        try:
            with self._at(host_path, follow_last=False) as where:
                st = os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode) or where.literal_tail < literal:
                    raise HostError(
                        f"{host_path}: not a directory kucero made (a link or a file); left alone"
                    )
                import shutil  # with bz2 and lzma: only when a backup is pruned

                shutil.rmtree(where.name, dir_fd=where.dir_fd)
                os.fsync(where.dir_fd)
        except FileNotFoundError:
            pass
        except HostError:
            raise
        except OSError as e:
            raise HostError(f"{host_path}: cannot remove: {e.strerror or e}") from e

    def remove_temporaries(self, host_dir: str) -> list[str]:
        """Remove write_atomic leftovers (a SIGKILL mid-write) in ``host_dir``."""
        removed = []
        for name in self.listdir(host_dir):
            if name.startswith(paths.TEMP_PREFIX):
                self.remove(f"{host_dir}/{name}")
                removed.append(f"{host_dir}/{name}")
        return removed

    @contextlib.contextmanager
    def lock(self, host_path: str) -> Iterator[None]:
        """Hold an exclusive lock file for the duration of a pass, so two kucero processes
        (an old pod still terminating, a `node --once` by hand) never interleave on a node.

        A host we cannot write to cannot be changed either, so the lock is skipped there and
        the pass reports the failed writes itself.
        """
        try:
            with self._at(host_path, create_parents=True) as where:
                fd = os.open(
                    where.name,
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=where.dir_fd,
                )
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                yield
                return
            raise HostError(f"{host_path}: cannot create lock: {e.strerror or e}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise HostError(f"{host_path}: another kucero pass holds the lock") from e
            yield
        finally:
            os.close(fd)

    def run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT_SECONDS) -> str:
        """Run a host command; return its output, raise ``HostError`` when it fails."""
        import subprocess  # only when a host command runs (a kubelet restart, crictl)

        command = shlex.join(argv)
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise HostError(f"{command}: {e}") from e
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise HostError(
                f"{command}: exit status {done.returncode}" + (f": {detail[-1]}" if detail else "")
            )
        return done.stdout


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A hard link cannot be made here: fall back to a copy (EXDEV: another filesystem; EPERM and
# EACCES: fs.protected_hardlinks for a caller without CAP_FOWNER; EOPNOTSUPP: a filesystem
# without links; EMLINK: too many links already).
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.EACCES)


def _linked(src: confined.Located, dst: confined.Located, st: os.stat_result) -> bool:
    """Hard-link ``src`` at ``dst`` if it still is the file ``st`` describes; False when no
    link could be made (the caller copies)."""
    try:
        os.link(
            src.name, dst.name, src_dir_fd=src.dir_fd, dst_dir_fd=dst.dir_fd, follow_symlinks=False
        )
    except OSError as e:
        if e.errno in _NO_LINK:
            return False
        raise
    made = os.stat(dst.name, dir_fd=dst.dir_fd, follow_symlinks=False)
    if (made.st_dev, made.st_ino) != (st.st_dev, st.st_ino):
        os.unlink(dst.name, dir_fd=dst.dir_fd)  # swapped since we read it: copy what we read
        return False
    return True


def _require_regular(host_path: str, st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        raise HostError(f"{host_path}: is {kind}, not a regular file; not read")
    if st.st_size > limit:
        raise HostError(f"{host_path}: larger than {limit} bytes; not read")


def _write_at(
    where: confined.Located,
    data: bytes,
    mode: int | None,
    owner: tuple[int, int] | None,
    sync_dir: bool = True,
) -> None:
    """Temporary file beside ``where.name``, fsynced, renamed over it, directory fsynced
    (unless ``sync_dir`` is False: the caller syncs it later)."""
    tmp = _stage_at(where, data, mode, owner)
    try:
        os.rename(tmp, where.name, src_dir_fd=where.dir_fd, dst_dir_fd=where.dir_fd)
        if sync_dir:
            os.fsync(where.dir_fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=where.dir_fd)
        raise


def _stage_at(
    where: confined.Located, data: bytes, mode: int | None, owner: tuple[int, int] | None
) -> str:
    """A new temporary beside ``where.name`` holding ``data``, with the mode and owner the file
    there has (0600 and ours when there is none) unless given, fsynced; returns its name."""
    try:
        st: os.stat_result | None = os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    mode = mode if mode is not None else (st.st_mode & 0o7777 if st else 0o600)
    owner = owner if owner is not None else ((st.st_uid, st.st_gid) if st else None)
    # Unpredictable name, O_EXCL|O_NOFOLLOW: never write a key through a planted link.
    tmp = f"{paths.TEMP_PREFIX}{where.name}.{secrets.token_hex(6)}"
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=where.dir_fd,
    )
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            if owner is not None:
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, owner[0], owner[1])
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=where.dir_fd)
        raise
    return tmp


def _read_at(where: confined.Located, host_path: str, limit: int) -> tuple[bytes, os.stat_result]:
    """The content and stat of the regular file at ``where`` (checked before it is opened, so
    a FIFO or a device is never opened, and again on the open descriptor), at most ``limit``
    bytes. ``FileNotFoundError`` when there is none."""
    _require_regular(
        host_path, os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False), limit
    )
    fd = os.open(where.name, _READ_FLAGS, dir_fd=where.dir_fd)
    try:
        st = os.fstat(fd)
        _require_regular(host_path, st, limit)
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > limit:
                raise HostError(f"{host_path}: larger than {limit} bytes; not read")
            chunks.append(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)
