"""Leader election on a coordination.k8s.io Lease, with our own ``leases`` helpers.

Not the client's ``leaderelection`` module (PITFALLS.md: it calls ``sys.exit`` on bad
settings, trusts the wall clock, never releases the Lease and cannot re-enter). The rules are
client-go's:

- a Lease held by someone else is taken only when it has not changed for its
  ``leaseDurationSeconds`` as measured on *our* monotonic clock since we first saw that version
  (so clock skew between nodes cannot make two leaders), or when it has no holder;
- the leader renews every ``retry_period``; if it cannot renew for ``renew_deadline`` (shorter
  than the lease duration, so it steps down before anyone may take over) it stops leading: the
  leader's work is stopped and joined before the election is entered again;
- on shutdown the leader releases the Lease (empty holder, one-second duration) so a standby
  takes over at its next try rather than after the lease duration.

Errors talking to the API server (403 included) are logged, counted, and retried at the retry
period with back-off; they never end the process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from reconciler import metrics as metrics_
from reconciler.cluster import kube as kube_
from reconciler.cluster import leases

log = logging.getLogger(__name__)

# After API errors the retry waits double from the retry period up to this (seconds).
ERROR_BACKOFF_MAX_SECONDS = 30.0
# The leader renews this many times per lease duration (see _renew_interval).
RENEWALS_PER_LEASE = 3
# How soon a standby notices that it must stop (seconds).
STOP_POLL_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class Config:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0  # client-go's defaults
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class Elector:
    """Run ``lead(stop_leading)`` while this process holds the Lease, until ``stop`` is set."""

    def __init__(
        self,
        kube: kube_.Kube,
        config: Config,
        metrics: metrics_.Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube, self.config, self.metrics, self.clock = kube, config, metrics, clock
        self.leader: str | None = None  # last holder seen ("" none); None: not known yet
        self._lease: dict[str, Any] | None = None
        self._observed: tuple[str, str] | None = None  # (holder, resourceVersion)
        self._observed_at = 0.0
        self._observed_seconds = 0  # its leaseDurationSeconds (0: free)
        self._changed = threading.Condition()  # the watch saw the Lease released or deleted
        self._errors = 0  # API errors in a row: the retry waits back off

    @property
    def is_leader(self) -> bool:
        return self.leader == self.config.identity

    def run(self, stop: threading.Event, lead: Callable[[threading.Event], None]) -> None:
        done = threading.Event()  # ends the Lease watch (the caller's ``stop`` is theirs)
        watcher = threading.Thread(
            target=self.kube.watch_forever,
            args=(
                leases.collection(self.config.namespace),
                {"fieldSelector": f"metadata.name={self.config.name}"},
                lambda event: self._saw(None if event.type == "DELETED" else event.obj),
                done,
                lambda items: self._saw(items[0] if items else None),
                lambda e: self.metrics.api_errors.labels("watch-lease", type(e).__name__).inc(),
            ),
            name="watch-lease",
            daemon=True,
        )
        watcher.start()
        try:
            self._elect(stop, lead)
        finally:
            done.set()
            watcher.join(5)

    def _elect(self, stop: threading.Event, lead: Callable[[threading.Event], None]) -> None:
        while not stop.is_set():
            if not self._try():
                self._stand_by(stop)
                continue
            log.info("became leader (%s/%s)", self.config.namespace, self.config.name)
            self.metrics.leader.set(1)
            stop_leading = threading.Event()
            worker = threading.Thread(target=lead, args=(stop_leading,), name="leader-work")
            worker.start()
            renewed = self.clock()
            wait = self._renew_interval()
            while not stop.is_set() and worker.is_alive():
                stop.wait(wait)
                if stop.is_set():
                    break
                if self._try():
                    renewed, wait = self.clock(), self._renew_interval()
                    continue
                wait = self.config.retry_period  # failed: try again soon, until the deadline
                if not self.is_leader or self.clock() - renewed > self.config.renew_deadline:
                    log.error("lost leadership (holder now %r); stopping leader work", self.leader)
                    break
            stop_leading.set()
            worker.join()
            self.metrics.leader.set(0)
            if stop.is_set() or self.is_leader:  # a lost Lease is left alone by release
                self._release()
        log.info("leader election stopped")

    def _renew_interval(self) -> float:
        """Renew a third of the way into the lease, but never more often than the retry
        period: client-go renews every retry period (2 s: 1800 writes an hour, measured in
        bench.cluster), 5 s still leaves two more tries before the renew deadline."""
        return max(self.config.retry_period, self.config.lease_duration / RENEWALS_PER_LEASE)

    def _delay(self) -> float:
        """The retry period, doubled per API error in a row up to ERROR_BACKOFF_MAX_SECONDS,
        jittered: a 403 must not become a request storm."""
        if not self._errors:
            return self.config.retry_period
        delay = min(ERROR_BACKOFF_MAX_SECONDS, self.config.retry_period * 2.0 ** (self._errors - 1))
        return delay * random.uniform(0.5, 1.0)

    def _try(self) -> bool:
        """One attempt to acquire or renew; True when we hold the Lease afterwards."""
        c = self.config
        now_wall = dt.datetime.now(dt.UTC)
        try:
            if self._lease is not None and leases.holder(self._lease) == c.identity:
                # Renew from the copy our last write returned: one request, not a read and a
                # write. If anyone changed the Lease since, this is a Conflict and the next
                # try reads it again.
                try:
                    self._lease = leases.renew(
                        self.kube, self._lease, c.identity, self._seconds(), now_wall
                    )
                except kube_.Conflict:
                    self._lease = None
                    raise
                self._errors = 0
                return True
            current = leases.get(self.kube, c.namespace, c.name)
            if current is None:
                self._lease = leases.acquire(
                    self.kube, c.namespace, c.name, c.identity, self._seconds(), now_wall, None
                )
            elif leases.holder(current) == c.identity:
                self._lease = leases.renew(
                    self.kube, current, c.identity, self._seconds(), now_wall
                )
            else:
                if not self._free(current):
                    self.leader = leases.holder(current)
                    self._errors = 0
                    return False
                self._lease = leases.acquire(
                    self.kube, c.namespace, c.name, c.identity, self._seconds(), now_wall, current
                )
        except kube_.Conflict:
            # Someone else wrote first. Learn who: a standby that lost the race to create the
            # Lease would otherwise not know the leader (readiness says 503) until the Lease
            # next changes.
            self._errors = 0
            try:
                winner = leases.get(self.kube, c.namespace, c.name)
            except kube_.KubeError:
                winner = None
            if winner is not None:
                self.leader = leases.holder(winner)
            return False
        except kube_.KubeError as e:
            self.metrics.api_errors.labels("leader-election", type(e).__name__).inc()
            log.error("leader election on %s/%s: %s", c.namespace, c.name, e)
            if isinstance(e, kube_.Forbidden):
                log.error(
                    "the service account needs get/create/update on leases in %s", c.namespace
                )
            self._errors += 1
            return False
        self._errors = 0
        self.leader = c.identity
        return True

    def _stand_by(self, stop: threading.Event) -> None:
        """Wait until the Lease may be free: released or deleted (the watch says so at once),
        or unchanged for its duration. The leader's renewals arrive on the open watch and cost
        no request; polling every retry period would cost 1800 GETs an hour per standby."""
        if self._errors:
            stop.wait(self._delay())
            return
        with self._changed:
            while not stop.is_set():
                if self._observed is None or not self._observed[0]:
                    return
                left = self._observed_at + self._observed_seconds - self.clock()
                if left <= 0:
                    return
                # wake up for a stop within STOP_POLL_SECONDS
                self._changed.wait(min(left, STOP_POLL_SECONDS))

    def _saw(self, lease: dict[str, Any] | None) -> None:
        """The watch's view of the Lease."""
        with self._changed:
            if lease is None:
                self._observed = None
            else:
                self._note(lease)
            if lease is None or not leases.holder(lease):
                self._changed.notify_all()

    def _note(self, current: dict[str, Any]) -> None:
        seen = (leases.holder(current), str(current.get("metadata", {}).get("resourceVersion")))
        if seen != self._observed:
            self._observed, self._observed_at = seen, self.clock()
            # garbage or missing: 0, so free
            self._observed_seconds = leases.duration_seconds(current)

    def _free(self, current: dict[str, Any]) -> bool:
        with self._changed:
            self._note(current)
            if not self._observed or not self._observed[0]:
                return True
            return self.clock() - self._observed_at >= self._observed_seconds

    def _seconds(self) -> int:
        return max(1, round(self.config.lease_duration))

    def _release(self) -> None:
        if not self.is_leader:
            return
        try:
            current = leases.get(self.kube, self.config.namespace, self.config.name)
            if current is not None:
                leases.release(self.kube, current, self.config.identity, dt.datetime.now(dt.UTC))
                log.info("released %s/%s", self.config.namespace, self.config.name)
        except kube_.KubeError as e:
            log.warning("could not release the lease (a standby waits it out): %s", e)
        self._lease = None
        self.leader = ""
