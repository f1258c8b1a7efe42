"""End a static pod's old process that stopped serving but lingers, so its restart is short.

Measured on a real kubeadm node (kubelet and containerd, kube-apiserver 1.37): once its
manifest leaves, kube-apiserver gets SIGTERM, stops listening within 0.2 s, and then waits in
its graceful shutdown for the HTTP server to finish every open request, watches included,
bounded by ``--request-timeout`` (60 s) unless ``--shutdown-send-retry-after`` is set. The
watches of the kubelet, kube-controller-manager, kube-scheduler and every other client never
finish by themselves, so the container went only when the kubelet killed it at the end of
its 30 s termination grace period. The new kube-apiserver (same pod, same ports) cannot start
before, so the API server was unavailable about 35 s: long enough for kube-controller-manager
and kube-scheduler to lose their leader leases (renew deadline 10 s) and exit as well.

etcd is restarted in place instead (``stop_in_place``). For the others, the manifest goes
back as soon as the component stopped answering (the kubelet then starts
the pod again once the old one is gone). Kept out longer, it made the kubelet's housekeeping
delete the static pod's mirror Pod as an orphan: for etcd, through an API server that cannot
reach etcd, which blocked housekeeping, and with it the pod's restart, for 34 s.

Once a component stopped answering, its old process gets ``drain`` seconds to exit by
itself (in-flight ordinary requests finish in that time; kube-controller-manager and
kube-scheduler exit in under 0.5 s), and is then sent the SIGKILL the kubelet would send at
the end of the grace period. Never etcd: it stops listening at once but keeps serving the
connections it has for about 5 s while it drains, and the kubelet's housekeeping needs one of
them: the restarted etcd pod waits until housekeeping has deleted the old mirror Pod through
the API server. Killed, etcd took those connections along; the deletion then hung until the
API server's timeout and etcd came back after 43 s instead of 10 s. Only a process running
exactly the manifest's command line inside a pod's cgroup (``kubepods``) is a candidate.

Reads ``/proc`` of the PID namespace kucero runs in (the DaemonSet has ``hostPID: true``);
outside a pod's cgroup, as in the stand-in tests, nothing is ever a candidate.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence

PROC = "/proc"
# Never killed: see the module docstring.
NEVER = frozenset({"etcd"})
# Restarted in place (SIGTERM to its process; the kubelet starts the container again in the
# same pod) rather than by moving its manifest: see ``stop_in_place``.
IN_PLACE = frozenset({"etcd"})
_POLL_SECONDS = 0.1


# /proc/<pid>/cgroup is a line per hierarchy; a few KiB at most where kucero runs
_CGROUP_BYTES = 64 * 1024


def _read(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path`` (any process may have a huge command line)."""
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def lingering(argv: Sequence[str], proc: str = PROC) -> list[int]:
    """PIDs of processes in a pod's cgroup whose command line is exactly ``argv``."""
    if not argv:
        return []
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    found = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        # one byte more than ``want``: a longer command line is not a match
        if _read(f"{proc}/{name}/cmdline", len(want) + 1) == want and b"kubepods" in _read(
            f"{proc}/{name}/cgroup", _CGROUP_BYTES
        ):
            found.append(int(name))
    return found


def wait_gone(
    component: str,
    argv: Sequence[str],
    drain: float,
    deadline: float,
    sleep: Callable[[float], None],
    proc: str = PROC,
) -> tuple[bool, str | None]:
    """Wait until the old process of ``component`` is gone, SIGKILLing it once it lingered
    ``drain`` seconds (never etcd); give up at ``deadline`` (``time.monotonic()``).
    Returns (gone, what was done). ``sleep`` may raise to interrupt. Idempotent."""
    kill_at = None if component in NEVER else time.monotonic() + drain
    killed: list[int] = []
    pids = lingering(argv, proc)
    while pids:
        now = time.monotonic()
        if now >= deadline:
            return False, f"the old {component} (pid {', '.join(map(str, pids))}) is still running"
        if kill_at is not None and now >= kill_at and not killed:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    continue
        sleep(_POLL_SECONDS)
        pids = lingering(argv, proc)
    if not killed:
        return True, None
    return True, (
        f"killed the old {component} (pid {', '.join(map(str, killed))}): still there "
        f"{drain:g}s after it stopped serving"
    )


def stop_in_place(argv: Sequence[str], proc: str = PROC) -> list[int]:
    """SIGTERM the processes running exactly ``argv`` in a pod's cgroup; returns their PIDs.

    Why etcd is restarted this way: with its manifest moved out, the kubelet deletes the
    static pod's mirror Pod through the API server, which cannot answer without etcd; the
    request hung until the API server's timeout (34 s), again and again, and the pod's restart
    waited behind it in the kubelet's housekeeping: etcd stayed down 110 s on a real node, until
    the kubelet itself was restarted. Stopped in place, the pod never leaves the kubelet's
    configuration, there is no mirror Pod to delete, and the kubelet starts the container again
    at once (restartPolicy Always; a second restart within minutes waits its back-off, 10 s)."""
    pids = lingering(argv, proc)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    return pids
