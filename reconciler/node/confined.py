"""Find where a host path lives, from a descriptor of the root, never letting the OS follow a
symbolic link.

``Host`` used to resolve a path to a string and then hand the string to the OS: between the
check and the use, ``/etc/kubernetes/tmp`` could be swapped for a link to outside the root, and
backups and keys landed there. Here every directory on the way is opened with ``O_NOFOLLOW``
relative to its parent's descriptor, and a link met on the way is resolved by this code: an
absolute target restarts at the root, ``..`` stops at the root (a chroot's rules). The caller
gets the final directory's descriptor and the last name, and acts relative to them
(``dir_fd=``), so whatever is swapped after the walk can make the act fail, never escape.

The walk costs an ``lstat`` and an ``open`` per component. An ``openat2`` fast path
(``RESOLVE_IN_ROOT``) once saved about 10 ms a pass; it was a second resolver that had to agree
exactly with this one, on a trust boundary, and was removed (issue 18): one walk, one answer.

Edge cases: a component that turns into a link between our ``lstat`` and our ``open``
(``ELOOP``/``ENOTDIR``) is looked at again and followed by our rules; more than 40 links on one path (Linux's
MAXSYMLINKS) is ``ELOOP``; a missing directory is ``FileNotFoundError`` unless the caller asks
to create it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
from collections.abc import Iterator

# Linux's own limit on symlinks followed while resolving one path (MAXSYMLINKS).
MAX_SYMLINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclasses.dataclass(frozen=True)
class Located:
    dir_fd: int  # the final directory, valid only inside the ``locate`` block
    name: str  # the last component ("." for a directory reached by "..", or the root)
    resolved: str  # the host path reached, every link resolved ("/etc/kubernetes/pki/ca.key")
    literal_tail: int  # how many final components were reached without following a link


def parts(host_path: str) -> list[str]:
    return [p for p in host_path.split("/") if p not in ("", ".")]


@contextlib.contextmanager
def locate(
    root: str | os.PathLike[str] | int,
    host_path: str,
    *,
    follow_last: bool = True,
    create_parents: bool = False,
    mode: int = 0o755,
) -> Iterator[Located]:
    """Find ``host_path`` under ``root`` by the walk; yield where its last component lives.

    ``follow_last``: a link in the last place is resolved too (to read or write the file it
    names); without it the link itself is the result (to remove or rename the entry).
    ``root``: a path, opened for this call, or a descriptor of it the caller keeps open.
    """
    pending = parts(host_path)
    if isinstance(root, int):
        root_fd, owned = root, False
    else:
        root_fd, owned = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), True
    try:
        yield from _walk(root_fd, pending, follow_last, create_parents, mode)
    finally:
        if owned:
            os.close(root_fd)


def _walk(
    root_fd: int, pending: list[str], follow_last: bool, create_parents: bool, mode: int
) -> Iterator[Located]:
    """The walk, one component at a time, links resolved by our rules; yields once."""
    stack = [root_fd]
    names: list[str] = []
    pending = list(pending)
    hops = 0
    tail = 0

    def follow(fd: int, part: str) -> None:
        nonlocal hops, tail
        hops += 1
        if hops > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links")
        target = os.readlink(part, dir_fd=fd)
        if target.startswith("/"):
            while len(stack) > 1:
                os.close(stack.pop())
            names.clear()
        pending[:0] = parts(target)
        tail = 0

    try:
        while pending:
            part = pending.pop(0)
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    names.pop()
                tail = 0
                continue
            fd = stack[-1]
            try:
                st: os.stat_result | None = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            last = not pending
            if st is not None and stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                follow(fd, part)
                continue
            if last:
                yield Located(fd, part, "/" + "/".join([*names, part]), tail + 1)
                return
            if st is None:
                if not create_parents:
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), part)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
                    os.fsync(fd)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, part):
                    follow(fd, part)  # swapped for a link since the lstat: our rules, again
                    continue
                raise
            stack.append(child)
            names.append(part)
            tail += 1
        yield Located(stack[-1], ".", "/" + "/".join(names), tail)
    finally:
        for fd in stack[1:]:
            os.close(fd)


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
