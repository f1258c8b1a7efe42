"""Keep a watch going for the life of a process: list, watch, resume, re-list, back off.

``watch_forever`` is a small informer without a cache: it lists (``on_list(items)`` gets the
full state, or each item arrives as an ``ADDED`` event when there is no ``on_list``), then
watches from the list's resourceVersion. The server ends each watch after a long, jittered
timeout (an idle watch costs about two requests an hour); the next one resumes from the last
resourceVersion seen (bookmarks included) without listing again. Edge cases:

- ``410 Gone`` (the resourceVersion was compacted away, e.g. after an API server restart):
  list again at once and hand the new full state to ``on_list``, so deletions missed in the gap
  are seen;
- the API server is down or restarting, or answers 403/401/5xx: log, wait with exponential
  back-off and jitter (never a tight loop), retry forever until ``stop``; the back-off resets
  after an event arrives;
- ``stop`` set: a helper thread shuts down the open response, so a blocked read returns at once
  rather than at the server's timeout.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.cluster import kube as kube_

log = logging.getLogger(__name__)

# client-go's reflector asks for 5-10 min; kucero's watches are few and mostly idle, so 30-33
# min (jittered so many nodes do not reconnect together) costs about 2 requests an hour each.
WATCH_TIMEOUT_SECONDS = 1800
WATCH_TIMEOUT_JITTER = 0.1
# Back-off after a failure: 0.5 s doubling to 30 s, each wait jittered to 50-100 %.
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# The longest a healthy watch loop goes without a sign of life (``on_alive``): one watch request
# (its jittered server timeout and the read margin), a back-off, and one list retried to the end.
ALIVE_WITHIN_SECONDS = (
    WATCH_TIMEOUT_SECONDS * (1 + WATCH_TIMEOUT_JITTER)
    + kube_.WATCH_READ_MARGIN_SECONDS
    + BACKOFF_MAX_SECONDS
    + kube_.RETRY_MAX_TOTAL_SECONDS
    + kube_.READ_TIMEOUT_SECONDS
)


class Backoff:
    """Exponential back-off with jitter; ``reset`` after a success."""

    def __init__(self, first: float = BACKOFF_FIRST_SECONDS, cap: float = BACKOFF_MAX_SECONDS):
        self.first, self.cap, self.failures = first, cap, 0

    def next(self) -> float:
        delay: float = min(self.cap, self.first * 2.0**self.failures)
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


def watch_forever(
    kube: kube_.Kube,
    path: str,
    params: Mapping[str, str] | None,
    on_event: Callable[[kube_.WatchEvent], None],
    stop: threading.Event,
    on_list: Callable[[list[dict[str, Any]]], None] | None = None,
    timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
    on_error: Callable[[kube_.KubeError], None] | None = None,
    on_alive: Callable[[], None] | None = None,
) -> None:
    """Deliver the state of ``path`` and every change to it until ``stop`` is set.

    ``on_error`` hears of each failure before the back-off (to count it in a metric).
    ``on_alive`` is called each time round the loop and after each event (bookmarks included),
    at least every ``ALIVE_WITHIN_SECONDS`` while the loop runs (a liveness heartbeat; a callback
    stuck in ``on_event`` stops it). Exceptions raised by the callbacks propagate (a bug there
    must not be retried forever).
    """
    alive = on_alive or (lambda: None)
    current: dict[str, Any] = {}
    interrupter = threading.Thread(
        target=_interrupt_on_stop, args=(stop, current), name=f"watch-stop {path}", daemon=True
    )
    interrupter.start()
    backoff = Backoff()
    version: str | None = None
    try:
        while not stop.is_set():
            alive()
            try:
                if version is None:
                    listed = kube.list(path, params)
                    version = listed.get("metadata", {}).get("resourceVersion") or None
                    items = listed.get("items") or []
                    if on_list is not None:
                        on_list(items)
                    else:
                        for item in items:
                            on_event(kube_.WatchEvent("ADDED", item))
                    backoff.reset()
                jittered = int(timeout_seconds * (1 + random.uniform(0, WATCH_TIMEOUT_JITTER)))
                for event in kube.watch(
                    path,
                    params,
                    version,
                    jittered,
                    on_response=lambda resp: current.__setitem__("resp", resp),
                ):
                    version = event.obj.get("metadata", {}).get("resourceVersion") or version
                    backoff.reset()
                    alive()
                    if event.type != "BOOKMARK":
                        on_event(event)
                    if stop.is_set():
                        break
            except kube_.Gone as e:
                log.info("watch %s: %s; listing again", path, e)
                version = None
            except kube_.KubeError as e:
                if stop.is_set():
                    break
                if on_error is not None:
                    on_error(e)
                delay = backoff.next()
                level = logging.WARNING if backoff.failures > 1 else logging.INFO
                if isinstance(e, kube_.Forbidden | kube_.Unauthorized):
                    level = logging.ERROR
                log.log(level, "watch %s: %s; retrying in %.1fs", path, e, delay)
                stop.wait(delay)
    finally:
        current["done"] = True
        current.pop("resp", None)


def _interrupt_on_stop(stop: threading.Event, current: dict[str, Any]) -> None:
    while not current.get("done"):
        if stop.wait(1.0):
            resp = current.get("resp")
            if resp is not None:
                try:
                    resp.shutdown()
                except Exception:  # already closed: nothing to interrupt
                    log.debug("shutdown of a closed watch", exc_info=True)
            return
