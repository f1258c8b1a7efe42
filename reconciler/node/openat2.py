"""Linux ``openat2(2)``: open a directory below a root in one system call, with the kernel
refusing every symbolic link on the way.

``confined.locate`` walks a host path one component at a time (an ``lstat`` and an ``open`` per
component) so that no link is ever followed by the OS. That was about a third of a renewing
pass (issue 10: ~330 walks, ~1,950 ``open`` and ~2,190 ``stat`` calls per ECDSA pass). Most host
paths hold no link at all; for those, ``openat2`` with ``RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS
| RESOLVE_NO_MAGICLINKS`` opens the final directory in one call and fails with ``ELOOP`` the
moment a link is met (``ENOTDIR`` for a link in the last place: ``O_NOFOLLOW`` takes the link
itself, not a directory), which is the caller's cue to walk the slow way. Python's ``os`` has
no ``openat2`` (3.11), so it is called through libc's ``syscall(2)`` with ctypes.

Edge cases: the syscall number is known only for x86_64 and aarch64 (437, the unified table);
elsewhere ``usable()`` is False from the start. ``ENOSYS`` (kernel before 5.6), ``EPERM`` (a
container runtime's seccomp profile that predates the call), ``EINVAL`` and ``E2BIG`` (a
kernel that does not know a flag or the struct's size) turn it off for the rest of the process
on the first try, as does a libc without ``syscall``: ``Unavailable``, never an error of the
path. ctypes (about 3 ms to import) is
loaded on first use, so commands that never touch host files do not pay for it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

# include/uapi/linux/openat2.h
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10
# openat2 is 437 on every architecture that uses the unified syscall table; only those we can
# test are listed (uname's machine name).
SYSCALL_NUMBERS = {"x86_64": 437, "aarch64": 437}
_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
# The call itself is refused (old kernel, seccomp, unknown flag or struct size): not the path.
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG})


class Unavailable(Exception):
    """openat2 cannot be used in this process; walk the slow way."""


class State:
    """Whether openat2 is worth trying; process-wide, so a refused call is tried once only."""

    def __init__(self) -> None:
        self.usable = os.uname().machine in SYSCALL_NUMBERS
        self.call: Callable[[int, bytes], int] | None = None


STATE = State()


def usable() -> bool:
    return STATE.usable


def open_dir(root_fd: int, path: str) -> int:
    """A descriptor of the directory ``path`` (relative, no ``..``) below ``root_fd``.

    Raises ``OSError`` as ``open(2)`` would (``ELOOP`` for any link on the way, ``ENOENT``,
    ``ENOTDIR``), or ``Unavailable`` when the call itself is refused (from then on, at once).
    """
    if not STATE.usable:
        raise Unavailable
    call = STATE.call or _load()
    try:
        return call(root_fd, os.fsencode(path))
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            STATE.usable = False
            raise Unavailable from e
        raise


def _load() -> Callable[[int, bytes], int]:
    number = SYSCALL_NUMBERS.get(os.uname().machine)
    if number is None:
        STATE.usable = False
        raise Unavailable
    import ctypes  # about 3 ms: only when a host path is first opened

    class OpenHow(ctypes.Structure):  # struct open_how
        _fields_ = (
            ("flags", ctypes.c_uint64),
            ("mode", ctypes.c_uint64),
            ("resolve", ctypes.c_uint64),
        )

    how = ctypes.byref(OpenHow(_FLAGS, 0, _RESOLVE))  # the reference keeps the struct alive
    how_size = ctypes.sizeof(OpenHow)
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError) as e:  # no libc to load, or one without syscall(2)
        STATE.usable = False
        raise Unavailable from e
    syscall.restype = ctypes.c_long
    syscall.argtypes = (
        ctypes.c_long,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.POINTER(OpenHow),
        ctypes.c_size_t,
    )

    def call(root_fd: int, path: bytes) -> int:
        fd: int = syscall(number, root_fd, path, how, how_size)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return fd

    STATE.call = call
    return call
