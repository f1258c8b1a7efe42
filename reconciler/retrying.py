"""The one retry and back-off policy of the process, on tenacity: exponential back-off with
jitter, every wait capped.

Three kinds of loop use it:

- a request retried in place, a bounded number of times (the API door, ``cluster.kube``):
  ``tenacity.Retrying`` with ``backoff`` and a stop on attempts and total time;
- a loop that lasts as long as the process (a watch, the controller's writes):
  ``until_stopped``, which retries for as long as ``stop`` is not set, sleeps on ``stop``
  (setting it ends a wait at once, and no attempt starts after it) and then returns None;
- work that is scheduled rather than slept on (the CSR signer's requeue heap, the node
  daemon's next pass after a failure): ``delay``, the same waits for a given attempt.

Edge cases: the jitter keeps every wait between half and all of the exponential value, so
many nodes never retry in step and no wait is close to zero (a tight loop against an API server
that is starting up); a wait never exceeds ``cap``, so a long outage is noticed to be over
within ``cap`` of its end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")


def backoff(first: float, cap: float) -> tenacity.wait.wait_base:
    """``first`` seconds after the first failure, doubling up to ``cap``, each wait jittered
    to 50-100 % of that value."""
    fixed_half = tenacity.wait_exponential(multiplier=first / 2, max=cap / 2)
    return fixed_half + tenacity.wait_random_exponential(multiplier=first / 2, max=cap / 2)


def delay(wait: tenacity.wait.wait_base, failures: int) -> float:
    """The wait ``wait`` gives after ``failures`` failures in a row (1: the first), for loops
    that schedule their next try instead of sleeping on it."""
    state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = max(1, failures)
    return float(wait(state))


def until_stopped(
    stop: threading.Event,
    fn: Callable[[], T],
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    wait: tenacity.wait.wait_base,
    before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
) -> T | None:
    """``fn()``, retried on ``retry_on`` errors until ``stop`` is set, waiting on ``stop``.
    None when stopped (no attempt starts once ``stop`` is set); other errors propagate: a bug
    must not be retried forever."""

    def attempt() -> T | None:
        return None if stop.is_set() else fn()

    def stopped(_state: tenacity.RetryCallState) -> bool:
        return stop.is_set()

    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    def quietly(_state: tenacity.RetryCallState) -> None:
        return None

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(retry_on),
        wait=wait,
        stop=stopped,
        sleep=sleep,
        before_sleep=before_sleep,
        retry_error_callback=quietly,
    )
    return retrying(attempt)


def failure(state: tenacity.RetryCallState) -> BaseException | None:
    """The error of the attempt that just failed (in ``before_sleep``)."""
    return state.outcome.exception() if state.outcome is not None else None


def next_wait(state: tenacity.RetryCallState) -> float:
    """How long the loop is about to wait (in ``before_sleep``)."""
    return float(state.next_action.sleep) if state.next_action is not None else 0.0
