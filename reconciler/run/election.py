"""Leader election on a coordination.k8s.io Lease, fenced: the leader acts only while no
standby can have taken over.

Not the client's ``leaderelection`` module (docs/pitfalls.md: it calls ``sys.exit`` on bad
settings, trusts the wall clock, never releases the Lease and cannot re-enter). The rules:

- **Taking over** (``decide.leasetime``): a Lease held by someone else is taken once its
  version has stood unchanged, on *our* monotonic clock, for its ``leaseDurationSeconds``
  capped at our ``lease_duration``. Clock skew, a ``renewTime`` in the future, a huge duration
  or an unknown holder delay a take-over by one lease duration at most. A released Lease (no
  holder) is free at once; a deleted one that this process saw held, once it has stayed gone a
  lease duration (a process that never saw it creates it at once).
- **The fence** (``Term``): a term lasts until ``renew_deadline`` after the *sending* of the
  last renewal that succeeded. A standby sees that renewal no earlier than it was sent and then
  waits a whole lease duration, so the leader's time ends ``lease_duration - renew_deadline``
  (5 s by default) before anyone may take over. The leader's work talks to the API only
  through ``Term.kube``: its requests end by then and its writes (desired annotations, CSR
  approvals and certificates, Events) are never sent after it (``kube.Fenced``), whatever its
  threads are doing. What remains: a write sent before the end that the network holds back
  for longer than that gap lands late (Kubernetes has no fencing token for these objects).
- **Bounded calls**: a renewal has the term's time left as its budget, an acquisition the
  renew deadline; per-request timeouts come from it and nothing is retried past it (the door's
  ``within``). The renew loop therefore notices a lost term within a request, not after a 30 s
  read timeout and its retries.
- The leader also ends its term at once when its Lease watch, having seen this term's own
  write, shows the Lease deleted or held by anyone else (a release forged by a third party
  included: a standby takes a released Lease at once).
- A term's work is stopped and joined before the election is entered again; work that does
  not end within a lease duration (it cannot write any more, but is stuck) ends the process
  (exit 1), which the DaemonSet restarts.
- On shutdown the leader releases the Lease (empty holder, one-second duration) so a standby
  takes over at its next try rather than after the lease duration.

API errors (403 included) are logged, counted, and retried with the process's one back-off
(``reconciler.retrying``), from the retry period up to ``lease_duration - renew_deadline``
when the API did not answer (an acquisition is bounded by the renew deadline, so a process is
back within one lease duration of the end of a network fault), and up to
``ERROR_BACKOFF_MAX_SECONDS`` when it refused (401/403: a missing RoleBinding does not fix
itself in seconds); they never end the process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import faulthandler
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import tenacity

from reconciler import metrics as metrics_
from reconciler import retrying
from reconciler.cluster import kube as kube_
from reconciler.cluster import leases
from reconciler.decide import leasetime

log = logging.getLogger(__name__)

# After API errors the next try waits from the retry period, doubling up to this (seconds).
ERROR_BACKOFF_MAX_SECONDS = 30.0
# The leader renews this many times per lease duration (see _renew_interval).
RENEWALS_PER_LEASE = 3
# How soon a waiting loop notices that it must stop (seconds).
STOP_POLL_SECONDS = 0.5
# The holder we remember for a Lease we saw held and then deleted (never a valid identity
# of ours; a Lease whose holder is this string is treated like any held Lease).
GONE = "(deleted)"


@dataclasses.dataclass(frozen=True)
class Config:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0  # client-go's defaults
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class Term:
    """One term of leadership as the leader's work sees it: ``stop`` is set when it ends,
    ``remaining()`` is how long this process may still act, and ``kube`` is the only door the
    work may use (its writes need ``write_margin`` seconds of the term left: time to spare)."""

    def __init__(self, kube: kube_.Kube, config: Config, clock: Callable[[], float]) -> None:
        self.stop = threading.Event()
        self.why = ""
        self.seen_own = False  # the Lease watch has shown this term's own write
        self._clock = clock
        self._deadline = config.renew_deadline
        self._until = -math.inf
        self._lock = threading.Lock()
        self.write_margin = config.retry_period / 2
        self.kube = kube.within(self.remaining, "the leadership", self.write_margin)

    def remaining(self) -> float:
        with self._lock:
            return self._until - self._clock()

    def renewed(self, sent_at: float) -> None:
        """A renewal (or the acquisition) sent at ``sent_at`` succeeded."""
        with self._lock:
            if not self.stop.is_set():
                self._until = max(self._until, sent_at + self._deadline)

    def end(self, why: str) -> None:
        """Revoke at once: no request of the work is sent after this."""
        with self._lock:
            self._until = -math.inf
            self.why = self.why or why
        self.stop.set()


class _Renewal(enum.Enum):
    DONE = "renewed"
    FAILED = "failed"  # try again until the term's time is up
    LOST = "lost"  # deleted, or held by someone else: stop now


class Elector:
    """Run ``lead(term)`` while this process holds the Lease, until ``stop`` is set."""

    def __init__(
        self,
        kube: kube_.Kube,
        config: Config,
        metrics: metrics_.Metrics,
        clock: Callable[[], float] = time.monotonic,
        on_stuck: Callable[[], None] | None = None,
    ) -> None:
        self.kube, self.config, self.metrics, self.clock = kube, config, metrics, clock
        self.on_stuck = on_stuck or _exit
        self.leader: str | None = None  # last holder seen ("" none); None: not known yet
        self._lease: dict[str, Any] | None = None  # what our last write returned
        self._sent_at = 0.0  # when that write was sent
        self._observed: tuple[str, str] | None = None  # (holder, resourceVersion)
        self._observed_at = 0.0
        self._observed_seconds: object = None  # its leaseDurationSeconds as written
        self._changed = threading.Condition()  # the watch saw the Lease change
        self._term: Term | None = None

    @property
    def is_leader(self) -> bool:
        return self.leader == self.config.identity

    def run(self, stop: threading.Event, lead: Callable[[Term], None]) -> None:
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
            while not stop.is_set() and self._campaign(stop):
                self._serve(stop, lead)
            log.info("leader election stopped")
        finally:
            done.set()
            watcher.join(5)

    # --- standing for election --------------------------------------------------------

    def _campaign(self, stop: threading.Event) -> bool:
        """Until this process holds the Lease (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            if self._attempt(stop):
                return True
            self._stand_by(stop)
        return False

    def _attempt(self, stop: threading.Event) -> bool:
        """One acquisition; API errors are retried with back-off until an answer or ``stop``."""
        c = self.config
        wait = _ByError(
            refused=retrying.backoff(c.retry_period, ERROR_BACKOFF_MAX_SECONDS),
            unanswered=retrying.backoff(
                c.retry_period, max(c.retry_period, c.lease_duration - c.renew_deadline)
            ),
        )
        got = retrying.until_stopped(
            stop, lambda: self._acquire(stop), kube_.KubeError, wait, self._failed
        )
        return bool(got)

    def _failed(self, state: tenacity.RetryCallState) -> None:
        e = retrying.failure(state)
        c = self.config
        self.metrics.api_errors.labels("leader-election", type(e).__name__).inc()
        log.error("leader election on %s/%s: %s", c.namespace, c.name, e)
        if isinstance(e, kube_.Forbidden):
            log.error("the service account needs get/create/update on leases in %s", c.namespace)

    def _acquire(self, stop: threading.Event) -> bool:
        """Take the Lease if it may be taken; raises ``KubeError`` when the API fails."""
        if stop.is_set():
            return False
        c = self.config
        started = self.clock()
        kube = self.kube.within(
            lambda: started + c.renew_deadline - self.clock(), "the renew deadline"
        )
        try:
            current = leases.get(kube, c.namespace, c.name)
            if leases.holder(current) != c.identity and not self._free(current):
                self.leader = leases.holder(current)
                return False
            sent, now_wall = self.clock(), dt.datetime.now(dt.UTC)
            if current is not None and leases.holder(current) == c.identity:
                lease = leases.renew(kube, current, c.identity, self._seconds(), now_wall)
            else:
                lease = leases.acquire(
                    kube, c.namespace, c.name, c.identity, self._seconds(), now_wall, current
                )
        except kube_.Conflict:
            # Someone else wrote first. Learn who: a standby that lost the race to create the
            # Lease would otherwise not know the leader (readiness says 503) until it changes.
            winner = leases.get(kube, c.namespace, c.name)
            with self._changed:
                self._note(winner)
            self.leader = leases.holder(winner)
            return False
        self._lease, self._sent_at, self.leader = lease, sent, c.identity
        return True

    def _stand_by(self, stop: threading.Event) -> None:
        """Wait until the Lease may be free: released (the watch says so at once), or unchanged
        for its (capped) duration. The leader's renewals arrive on the open watch and cost no
        request; polling every retry period would cost 1800 GETs an hour per standby."""
        with self._changed:
            while not stop.is_set():
                left = self._left()
                if left <= 0:
                    return
                self._changed.wait(min(left, STOP_POLL_SECONDS))

    def _saw(self, lease: dict[str, Any] | None) -> None:
        """The watch's view of the Lease; ends a term that someone else's write has ended."""
        with self._changed:
            self._note(lease)
            term, me = self._term, self.config.identity
            if term is not None:
                if lease is not None and leases.holder(lease) == me:
                    term.seen_own = True  # later events are newer than this term's start
                elif term.seen_own:
                    by = "deleted" if lease is None else f"held by {leases.holder(lease)!r}"
                    term.end(f"the Lease was {by}")
            self._changed.notify_all()

    def _note(self, current: dict[str, Any] | None) -> None:
        """Remember when the Lease's current version was first seen (under ``_changed``)."""
        seconds: object = None
        if current is None:
            held_before = self._observed is not None and bool(self._observed[0])
            seen = (GONE, "") if held_before else ("", "")
        else:
            meta = current.get("metadata") or {}
            seen = (leases.holder(current), str(meta.get("resourceVersion")))
            seconds = leases.spec(current).get("leaseDurationSeconds")
        if seen != self._observed:
            self._observed, self._observed_at, self._observed_seconds = (
                seen,
                self.clock(),
                seconds,
            )

    def _left(self) -> float:
        """Seconds until the Lease as last observed may be taken (under ``_changed``)."""
        if self._observed is None or self._observed[0] in ("", self.config.identity):
            return 0.0
        unchanged = self.clock() - self._observed_at
        return leasetime.left(unchanged, self._observed_seconds, self.config.lease_duration)

    def _free(self, current: dict[str, Any] | None) -> bool:
        with self._changed:
            self._note(current)
            return self._left() <= 0

    # --- leading ------------------------------------------------------------------------

    def _serve(self, stop: threading.Event, lead: Callable[[Term], None]) -> None:
        """One term: run the work, renew, end the term on the first sign it may be over."""
        c = self.config
        term = Term(self.kube, c, self.clock)
        term.renewed(self._sent_at)
        ours = (c.identity, str((self._lease or {}).get("metadata", {}).get("resourceVersion")))
        with self._changed:
            self._term = term
            # the watch may have shown our acquisition before this term existed: a fix, a
            # release forged in the first renew interval went unnoticed until the next renewal
            term.seen_own = self._observed == ours
        log.info("became leader (%s/%s)", c.namespace, c.name)
        self.metrics.leader.set(1)
        worker = threading.Thread(target=lead, args=(term,), name="leader-work")
        worker.start()
        due = self._sent_at + self._renew_interval()
        while not stop.is_set() and not term.stop.is_set():
            wait = due - self.clock()
            if wait > 0:
                term.stop.wait(min(wait, STOP_POLL_SECONDS))
                continue
            outcome = self._renew(term)
            if outcome is _Renewal.DONE:
                due = self._sent_at + self._renew_interval()
            elif outcome is _Renewal.LOST:
                term.end(f"the Lease is held by {self.leader!r} now")
            elif term.remaining() <= 0:
                term.end(f"could not renew within the renew deadline ({c.renew_deadline:g}s)")
            else:
                due = self.clock() + min(c.retry_period, max(0.0, term.remaining()))
        ended_by_work = not stop.is_set() and not term.why
        term.end("shutting down" if stop.is_set() else "the leader's work ended")
        (log.info if stop.is_set() else log.error)("stopped leading: %s", term.why)
        worker.join(c.lease_duration)
        if worker.is_alive():
            log.critical(
                "the leader's work did not stop within %gs (it can no longer write); exiting "
                "so that the process is restarted",
                c.lease_duration,
            )
            self.on_stuck()
        with self._changed:
            self._term = None
        self.metrics.leader.set(0)
        if (stop.is_set() or ended_by_work) and self.is_leader:
            self._release()  # a lost or unrenewed Lease is left alone

    def _renew(self, term: Term) -> _Renewal:
        """One renewal, bounded by the term's time left."""
        c = self.config
        kube = self.kube.within(term.remaining, "the leadership")
        sent = self.clock()
        try:
            base = self._lease
            if base is None or leases.holder(base) != c.identity:
                base = leases.get(kube, c.namespace, c.name)
            try:
                # from the copy our last write returned: one request, not a read and a write
                lease = self._renew_from(kube, base)
            except kube_.Conflict:
                fresh = leases.get(kube, c.namespace, c.name)  # changed since: by whom?
                with self._changed:
                    self._note(fresh)
                sent = self.clock()
                lease = self._renew_from(kube, fresh)
        except _LostLease as e:
            self.leader = e.holder
            self._lease = None
            return _Renewal.LOST
        except kube_.KubeError as e:
            self.metrics.api_errors.labels("leader-election", type(e).__name__).inc()
            log.error("renewing %s/%s: %s", c.namespace, c.name, e)
            return _Renewal.FAILED
        self._lease, self._sent_at = lease, sent
        term.renewed(sent)
        return _Renewal.DONE

    def _renew_from(self, kube: kube_.Kube, current: dict[str, Any] | None) -> dict[str, Any]:
        c = self.config
        if current is None:
            raise _LostLease("")
        if leases.holder(current) != c.identity:
            raise _LostLease(leases.holder(current))
        try:
            return leases.renew(kube, current, c.identity, self._seconds(), dt.datetime.now(dt.UTC))
        except kube_.NotFound as e:
            raise _LostLease("") from e

    def _renew_interval(self) -> float:
        """Renew a third of the way into the lease, but never more often than the retry
        period: client-go renews every retry period (2 s: 1800 writes an hour, measured in
        bench.cluster), 5 s still leaves two more tries before the renew deadline."""
        return max(self.config.retry_period, self.config.lease_duration / RENEWALS_PER_LEASE)

    def _seconds(self) -> int:
        return max(1, round(self.config.lease_duration))

    def _release(self) -> None:
        c = self.config
        started = self.clock()
        kube = self.kube.within(
            lambda: started + c.renew_deadline - self.clock(), "the renew deadline"
        )
        try:
            current = leases.get(kube, c.namespace, c.name)
            if current is not None:
                leases.release(kube, current, c.identity, dt.datetime.now(dt.UTC))
                log.info("released %s/%s", c.namespace, c.name)
        except kube_.KubeError as e:
            log.warning("could not release the lease (a standby waits it out): %s", e)
        self._lease = None
        self.leader = ""


class _ByError(tenacity.wait.wait_base):
    """The refused back-off after a 401/403 (a missing RoleBinding does not fix itself in
    seconds), the unanswered one after anything else (a network fault may end any moment)."""

    def __init__(self, refused: tenacity.wait.wait_base, unanswered: tenacity.wait.wait_base):
        self.refused, self.unanswered = refused, unanswered

    def __call__(self, state: tenacity.RetryCallState) -> float:
        denied = isinstance(retrying.failure(state), kube_.Forbidden | kube_.Unauthorized)
        return float((self.refused if denied else self.unanswered)(state))


class _LostLease(Exception):
    """The Lease is gone or someone else's (``holder``; "" when deleted)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def _exit() -> None:
    """Leave at once (threads that cannot stop would keep ``sys.exit`` waiting), with every
    thread's stack on stderr for the post-mortem."""
    faulthandler.dump_traceback(all_threads=True)
    logging.shutdown()
    os._exit(1)
