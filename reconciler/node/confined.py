"""Find where a host path lives, from a descriptor of the root, never letting the OS follow a
symbolic link.

``Host`` used to resolve a path to a string and then hand the string to the OS: between the
check and the use, ``/etc/kubernetes/tmp`` could be swapped for a link to outside the root, and
backups and keys landed there. Here every directory on the way is opened with ``O_NOFOLLOW``
relative to its parent's descriptor, and a link met on the way is resolved by this code: an
absolute target restarts at the root, ``..`` stops at the root (a chroot's rules). The caller
gets the final directory's descriptor and the last name, and acts relative to them
(``dir_fd=``), so whatever is swapped after the walk can make the act fail, never escape.

The walk costs an ``lstat`` and an ``open`` per component; it was a third of a renewing pass
(issue 10). Most paths hold no link, so the kernel is asked first, once: ``openat2`` with
``RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`` opens the final directory or
refuses at the first link (see ``openat2``). It answers only where the walk would give the same
answer: a path without ``..``, every directory reached without a link; ``resolved`` is then the
literal path and ``literal_tail`` its number of components. Everything else is walked, the whole
path again: a link on the way (``ELOOP``; or ``ENOTDIR``, which openat2 also gives for a link in
the last directory's place, and for a file there), a link in the last place to follow, a
missing directory to create, any other error, and a kernel or sandbox that refuses openat2
(tried once per process). A missing directory without ``create_parents`` is
``FileNotFoundError`` at once: with no link allowed on the way, the walk stops at the same
component. tests/unit/test_confined.py and tests/fuzz/test_locate.py hold both ways to one answer.

Edge cases: a component that turns into a link between our ``lstat`` and our ``open``
(``ELOOP``/``ENOTDIR``) is looked at again and followed by our rules (on the fast path, the
kernel refuses it and the walk does the same); more than 40 links on one path (Linux's
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

from reconciler.node import openat2

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
    """Find ``host_path`` under ``root`` (one openat2 when it can answer, else the walk);
    yield where its last component lives.

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
        where = _at_once(root_fd, pending, follow_last, create_parents)
        if where is None:
            yield from _walk(root_fd, pending, follow_last, create_parents, mode)
            return
        try:
            yield where
        finally:
            if where.dir_fd != root_fd:
                os.close(where.dir_fd)
    finally:
        if owned:
            os.close(root_fd)


def _at_once(
    root_fd: int, pending: list[str], follow_last: bool, create_parents: bool
) -> Located | None:
    """The fast path: the final directory in one ``openat2`` that refuses every link, or None
    when only the walk can answer (a link or ``..`` on the way, a directory to create, a link
    in the last place to follow, openat2 unusable, any error but a missing directory)."""
    if not pending or ".." in pending or not openat2.usable():
        return None
    *dirs, last = pending
    fd = root_fd
    if dirs:
        try:
            fd = openat2.open_dir(root_fd, "/".join(dirs))
        except openat2.Unavailable:
            return None
        except FileNotFoundError:
            # With no link allowed on the way, ENOENT means every directory before the missing
            # one is real: the walk would stop at the same place. (ENOTDIR is not as clear: a
            # link in the last place of ``dirs`` gives ENOTDIR, not ELOOP.)
            if create_parents:
                return None
            raise
        except OSError:
            return None
    if follow_last:
        try:
            link = stat.S_ISLNK(os.stat(last, dir_fd=fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            link = False
        except OSError:
            link = True  # whatever it is, the walk says it the same way
        if link:
            if fd != root_fd:
                os.close(fd)
            return None
    return Located(fd, last, "/" + "/".join(pending), len(pending))


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
