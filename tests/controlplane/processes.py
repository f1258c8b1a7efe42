"""The control plane's processes: started detached, stopped by PID, and only if still ours.

The processes outlive the ``start`` command that launched them, so each runs in its own session
(its PID is also its process group) with its output in a log file. A PID recorded yesterday may
belong to an unrelated process today: before signalling, ``terminate`` checks that the PID still
runs the binary that was started, so a stale PID file never kills anything else.

``guard`` ties a control plane to the life of the test session: a small child process that
stops the control plane when its stdin closes, which happens however the session ends, even
when pytest is killed with SIGKILL and no finalizer runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# SIGTERM lets etcd and kube-apiserver shut down cleanly in about a second; 15 s means stuck.
GRACE_SECONDS = 15.0
POLL_SECONDS = 0.1
REPO = Path(__file__).resolve().parents[2]


def spawn(argv: list[str], log: Path) -> int:
    """Start ``argv`` detached (own session, stdin from /dev/null, output appended to ``log``).

    posix_spawn rather than Popen: the process outlives this call (``start`` by hand exits
    while it runs), and a collected Popen of a running child warns.
    """
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(fd)


def running(pid: int, binary: str) -> bool:
    """Whether ``pid`` is alive and runs ``binary`` (reaping it first if it is our dead child)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:  # not our child: started by `start` in another process
        pass
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    # build.sh replaces binaries by rename, so a running one may show as deleted
    exe = exe.removesuffix(" (deleted)")
    return os.path.realpath(exe) == os.path.realpath(binary)


def terminate(pid: int, binary: str) -> bool:
    """Stop the process group of ``pid`` if it still runs ``binary``; True if it was running.

    SIGTERM, then SIGKILL after GRACE_SECONDS. Idempotent: a gone process is left alone.
    """
    if not running(pid, binary):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        if not running(pid, binary):
            return True
        time.sleep(POLL_SECONDS)
    os.killpg(pid, signal.SIGKILL)
    while running(pid, binary):
        time.sleep(POLL_SECONDS)
    return True


def guard(directory: Path) -> subprocess.Popen[bytes]:
    """A child that stops the control plane in ``directory`` once its stdin closes (output in
    ``logs/guard.log``). Close ``.stdin`` and wait for it."""
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    with (directory / "logs" / "guard.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.controlplane", "guard", "--dir", str(directory)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            cwd=REPO,
            # its own session: a Ctrl-C meant for pytest must not kill it before it has
            # stopped the control plane
            start_new_session=True,
        )


def wait_for_eof() -> None:
    """The guard's side: block until stdin closes, ignoring the terminal's signals."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass
