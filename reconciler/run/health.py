"""Liveness of a process's loops: one heartbeat per loop, each with its own deadline.

``/healthz`` answers 200 only while every loop that should be running has beaten within the
deadline it gave itself. A loop beats as it goes round (``beat(name, within)``: "you will hear
from me again within this many seconds"), so the deadline follows from its own period: the node
daemon's idle wait is cut into short slices, a pass gets a budget from its policy, a watch the
length of one watch request plus its back-off. A loop that ends (a leader's term, a stopped
process) says so (``retire``) and is no longer expected.

Edge cases: a loop that has never beaten is not expected (a role that is not running, a
standby's leader loops); an API server that is down is not a failed loop (the loops retrying it
still beat), so liveness never restarts kucero for what a restart cannot fix, and kucero stays
up for the recovery path. Monotonic clock: a wall clock step neither fails nor hides a loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Heartbeats:
    """Thread-safe; one per process, shared by every loop and the endpoint."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due: dict[str, tuple[float, float]] = {}  # name -> (deadline, within)
        self._lock = threading.Lock()

    def beat(self, name: str, within: float) -> None:
        """``name`` made progress and will beat again within ``within`` seconds."""
        with self._lock:
            self._due[name] = (self._clock() + within, within)

    def retire(self, name: str) -> None:
        """``name`` ended on purpose: no longer expected to beat."""
        with self._lock:
            self._due.pop(name, None)

    def check(self) -> list[tuple[str, str | None]]:
        """Each loop expected to beat, sorted by name, with None when it is on time or why
        it is not."""
        now = self._clock()
        with self._lock:
            due = dict(self._due)
        out = []
        for name, (deadline, within) in sorted(due.items()):
            late = now - deadline
            problem = None
            if late > 0:
                problem = f"no progress for {late + within:.0f}s (expected within {within:.0f}s)"
            out.append((name, problem))
        return out

    def healthy(self) -> bool:
        return all(problem is None for _, problem in self.check())

    def report(self) -> str:
        """The ``/healthz`` body, in the Kubernetes components' verbose style."""
        lines = ["[+]ping ok"]
        for name, problem in self.check():
            lines.append(f"[-]{name} failed: {problem}" if problem else f"[+]{name} ok")
        lines.append("healthz check passed" if self.healthy() else "healthz check failed")
        return "\n".join(lines) + "\n"
