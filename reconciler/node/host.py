"""The one door to the node: files under ``--host-root`` and commands on the host.

Every path given to a ``Host`` is a *host path* (``/etc/kubernetes/pki/ca.crt``); the host maps
it under its root, so a ``tmp_path`` tree stands in for ``/`` in tests and the DaemonSet's
``/host`` mount in production. Absent files are ``None``, not exceptions; anything else that
goes wrong (permissions, a directory where a file should be) is a ``HostError`` naming the path.

``write_atomic`` is the only way we change a file: a temporary file in the same directory,
written, fsynced, given the original's mode and owner, renamed over the original, and the
directory fsynced, so a reader (or a crash) sees the old content or the new, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from reconciler.model import paths

# Linux's own limit on symlinks followed while resolving one path (MAXSYMLINKS).
_MAX_SYMLINKS = 40
# A host command (systemctl, crictl) that hangs must not hang the pass forever.
COMMAND_TIMEOUT_SECONDS = 120.0


# Temporary files of write_atomic; a SIGKILL can leave one, which recovery removes.


class HostError(OSError):
    """A host file or command failed; the message names the host path or command."""


class Host:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, host_path: str) -> Path:
        """The local path of ``host_path``, with every symlink resolved *inside* the root.

        The kubelet makes ``kubelet-client-current.pem`` an absolute symlink; followed by the
        OS under ``--host-root /host`` it would point into the container, and a hostile
        ``/etc/kubernetes/tmp -> /elsewhere`` link would send backups and keys out of the
        root. So absolute targets restart at the root and ``..`` stops there, as in a chroot.
        """
        pending = [p for p in host_path.split("/") if p not in ("", ".")]
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = self.root.joinpath(*resolved, part)
            if candidate.is_symlink():
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise HostError(f"{host_path}: too many levels of symbolic links")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                continue
            resolved.append(part)
        return self.root.joinpath(*resolved)

    def read(self, host_path: str) -> bytes | None:
        try:
            return self.path(host_path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise HostError(f"{host_path}: cannot read: {e.strerror or e}") from e

    def exists(self, host_path: str) -> bool:
        return self.path(host_path).exists()

    def listdir(self, host_path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(host_path)))
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
    ) -> None:
        """Replace the file at ``host_path`` with ``data``, atomically and durably.

        ``mode``/``owner`` default to the existing file's (0600 and the caller's for a new
        file). Writing the content it already has is a no-op.
        """
        target = self.path(host_path)
        try:
            st = target.stat()
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise HostError(f"{host_path}: cannot stat: {e.strerror or e}") from e
        if st is not None and mode is None and owner is None and self.read(host_path) == data:
            return
        mode = mode if mode is not None else (st.st_mode & 0o7777 if st else 0o600)
        owner = owner if owner is not None else ((st.st_uid, st.st_gid) if st else None)
        # Unpredictable name, O_EXCL|O_NOFOLLOW: never write a key through a planted link.
        tmp = target.with_name(f"{paths.TEMP_PREFIX}{target.name}.{secrets.token_hex(6)}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
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
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise HostError(f"{host_path}: cannot write: {e.strerror or e}") from e

    def stat(self, host_path: str) -> os.stat_result | None:
        try:
            return self.path(host_path).stat()
        except FileNotFoundError:
            return None

    def remove(self, host_path: str) -> None:
        """Remove a file; removing an absent file is a no-op."""
        target = self.path(host_path)
        try:
            target.unlink()
            _fsync_dir(target.parent)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise HostError(f"{host_path}: cannot remove: {e.strerror or e}") from e

    def rename(self, src: str, dst: str) -> None:
        try:
            self.path(dst).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path(src), self.path(dst))
            _fsync_dir(self.path(dst).parent)
            _fsync_dir(self.path(src).parent)
        except OSError as e:
            raise HostError(f"{src} -> {dst}: cannot rename: {e.strerror or e}") from e

    def makedirs(self, host_path: str, mode: int = 0o700) -> None:
        """Create a directory and its parents, durably (each new entry's parent fsynced)."""
        target = self.path(host_path)
        missing = [p for p in (target, *target.parents) if not p.exists()]
        try:
            target.mkdir(mode=mode, parents=True, exist_ok=True)
            for created in reversed(missing):
                _fsync_dir(created.parent)
        except OSError as e:
            raise HostError(f"{host_path}: cannot create directory: {e.strerror or e}") from e

    def remove_tree(self, host_path: str) -> None:
        try:
            shutil.rmtree(self.path(host_path))
        except FileNotFoundError:
            pass
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
        target = self.path(host_path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
