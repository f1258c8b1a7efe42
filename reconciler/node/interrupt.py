"""SIGTERM and SIGINT during a pass: finish or undo the step in flight, then stop.

A signal that killed the process mid-restart used to leave a static pod's manifest parked
outside the kubelet's directory (on a one-node control plane: no API server until some later
pass). Here a signal only sets a flag. The step in flight finishes (a transaction is never
cut in half), the ``manifest-move`` wait returns early and the manifest is put back in a
``finally``, restarts not yet started stay owed in the state file, the lock is released by
its ``with`` block, and the pass exits non-zero saying which signal stopped it. A SIGKILL
cannot be handled: the next pass's recovery moves a parked manifest back.

Generic on purpose: any long wait takes a ``Stop`` and calls ``wait``; anything between two
steps calls ``requested``.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from types import FrameType

# How often a wait looks at the flag: a signal is acted on within 0.1 s.
_POLL_SECONDS = 0.1


class Interrupted(Exception):
    """A wait ended early because a signal asked the pass to stop."""


class Stop:
    """Set by a signal handler; read by the pass between steps and during waits."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "nothing"

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until a stop is requested; True when stopped early."""
        deadline = time.monotonic() + seconds
        while not self.requested:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_POLL_SECONDS, left))
        return True


@contextlib.contextmanager
def on_signals(
    stop: Stop, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
) -> Iterator[Stop]:
    """Turn ``signals`` into ``stop`` for the duration of the block (main thread only)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.signal = signum

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
