"""Keep a watch going for the life of a process: list, watch, resume, re-list, back off.

``watch_forever`` is a small informer without a cache: it lists (``on_list(items)`` gets the
full state, or each item arrives as an ``ADDED`` event when there is no ``on_list``), then
watches from the list's resourceVersion. The server ends each watch after a long, jittered
timeout (an idle watch costs about two requests an hour); the next one resumes from the last
resourceVersion seen (bookmarks included) without listing again. Edge cases:

- ``410 Gone`` (the resourceVersion was compacted away, e.g. after an API server restart):
  list again at once and hand the new full state to ``on_list``, so deletions missed in the gap
  are seen;
- the API server is down or restarting, or answers 403/401/5xx: log, wait with the process's
  back-off (``retrying``: 0.5 s doubling to 30 s, jittered; never a tight loop), retry until
  ``stop``. A watch that delivered something before it broke reconnects at once with a fresh
  back-off: only failures in a row wait longer and longer;
- ``stop`` set: a helper thread shuts down the open response, so a blocked read returns at once
  rather than at the server's timeout, and no new request starts.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import tenacity

from reconciler import retrying
from reconciler.cluster import kube as kube_

log = logging.getLogger(__name__)

# client-go's reflector asks for 5-10 min; kucero's watches are few and mostly idle, so 30-33
# min (jittered so many nodes do not reconnect together) costs about 2 requests an hour each.
WATCH_TIMEOUT_SECONDS = 1800
WATCH_TIMEOUT_JITTER = 0.1
# Back-off after failures in a row: 0.5 s doubling to 30 s, each wait jittered to 50-100 %.
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
BACKOFF = retrying.backoff(BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS)
# The longest a healthy watch loop goes without a sign of life (``on_alive``): one watch request
# (its jittered server timeout and the read margin), a back-off, and one list retried to the end.
ALIVE_WITHIN_SECONDS = (
    WATCH_TIMEOUT_SECONDS * (1 + WATCH_TIMEOUT_JITTER)
    + kube_.WATCH_READ_MARGIN_SECONDS
    + BACKOFF_MAX_SECONDS
    + kube_.RETRY_MAX_TOTAL_SECONDS
    + kube_.READ_TIMEOUT_SECONDS
)


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
    ``on_alive`` is called at the start of each attempt and after each event (bookmarks
    included), at least every ``ALIVE_WITHIN_SECONDS`` while the loop runs (a liveness
    heartbeat; a callback stuck in ``on_event`` stops it). Exceptions raised by the callbacks
    propagate (a bug there must not be retried forever).
    """
    current: dict[str, Any] = {}
    interrupter = threading.Thread(
        target=_interrupt_on_stop, args=(stop, current), name=f"watch-stop {path}", daemon=True
    )
    interrupter.start()
    callbacks = _Callbacks(on_event, on_list, on_error, on_alive or (lambda: None))
    watch = _Watch(kube, path, params, callbacks, timeout_seconds, stop, current)
    try:
        while not stop.is_set():
            # a fresh back-off for each run of failures (``_Watch.round``)
            retrying.until_stopped(stop, watch.round, kube_.KubeError, BACKOFF, watch.failed)
    finally:
        current["done"] = True
        current.pop("resp", None)


class _Callbacks(NamedTuple):
    on_event: Callable[[kube_.WatchEvent], None]
    on_list: Callable[[list[dict[str, Any]]], None] | None
    on_error: Callable[[kube_.KubeError], None] | None
    on_alive: Callable[[], None]


class _Watch:
    """One watch's state across its rounds: the resourceVersion to resume from."""

    def __init__(
        self,
        kube: kube_.Kube,
        path: str,
        params: Mapping[str, str] | None,
        callbacks: _Callbacks,
        timeout_seconds: int,
        stop: threading.Event,
        current: dict[str, Any],
    ) -> None:
        self.kube, self.path, self.params, self.stop = kube, path, params, stop
        self.cb = callbacks
        self.timeout_seconds = timeout_seconds
        self.current = current  # the open response, for ``_interrupt_on_stop``
        self.version: str | None = None

    def round(self) -> None:
        """List if needed, then one watch request. Returns when the server ends the watch, on
        410 (the next round lists again) and when a watch that delivered something breaks (the
        next round reconnects at once, its back-off fresh); raises a failure that came before
        anything was delivered (``retrying`` waits, longer each time)."""
        delivered = False
        self.cb.on_alive()
        try:
            if self.version is None:
                self._list()
                delivered = True
            jitter = 1 + random.uniform(0, WATCH_TIMEOUT_JITTER)
            for event in self.kube.watch(
                self.path,
                self.params,
                self.version,
                int(self.timeout_seconds * jitter),
                on_response=lambda resp: self.current.__setitem__("resp", resp),
            ):
                self.version = event.obj.get("metadata", {}).get("resourceVersion") or self.version
                delivered = True
                self.cb.on_alive()
                if event.type != "BOOKMARK":
                    self.cb.on_event(event)
                if self.stop.is_set():
                    return
        except kube_.Gone as e:
            log.info("watch %s: %s; listing again", self.path, e)
            self.version = None
        except kube_.KubeError as e:
            if self.stop.is_set():
                return  # the interrupter closed the response: nothing went wrong
            if not delivered:
                raise
            self._report(e, logging.INFO, "reconnecting")

    def _list(self) -> None:
        listed = self.kube.list(self.path, self.params)
        self.version = listed.get("metadata", {}).get("resourceVersion") or None
        items = listed.get("items") or []
        if self.cb.on_list is not None:
            self.cb.on_list(items)
        else:
            for item in items:
                self.cb.on_event(kube_.WatchEvent("ADDED", item))

    def failed(self, state: tenacity.RetryCallState) -> None:
        """Before each wait: say why (louder from the second failure in a row), count it."""
        error = retrying.failure(state)
        assert isinstance(error, kube_.KubeError)
        level = logging.WARNING if state.attempt_number > 1 else logging.INFO
        if isinstance(error, kube_.Forbidden | kube_.Unauthorized):
            level = logging.ERROR
        self._report(error, level, f"retrying in {retrying.next_wait(state):.1f}s")

    def _report(self, error: kube_.KubeError, level: int, then: str) -> None:
        if self.cb.on_error is not None:
            self.cb.on_error(error)
        log.log(level, "watch %s: %s; %s", self.path, error, then)


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
