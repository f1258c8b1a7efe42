"""Rotation slots on the cluster: read the ``kucero-rotation-<i>`` Leases, take one, keep it
alive with a heartbeat while the work runs, give it back.

The decision (which slot, or why wait) is ``decide.slots.choose``; this module only gathers
its inputs (the Leases, and whether a holder's Node still exists) and writes its answer with
``leases.acquire``, whose ``resourceVersion`` precondition makes a lost race a ``Conflict``:
then this node simply waits like any other.

Edge cases: a heartbeat that finds the Lease taken by someone else (an administrator edited it,
or this node's Node vanished and another node took over) marks the slot ``lost`` and logs
loudly; the pass in flight is not torn in half (the journal makes a finished pass safer than an
abandoned one), but nothing new starts under a lost slot. Releasing is idempotent and never
raises: a slot that cannot be released expires after its lease duration.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.cluster import kube as kube_
from reconciler.cluster import leases, nodes
from reconciler.decide import slots

log = logging.getLogger(__name__)


class Slots:
    def __init__(
        self,
        kube: kube_.Kube,
        namespace: str,
        identity: str,
        lease_seconds: int,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._identity = identity
        self._seconds = lease_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._lease: dict[str, Any] | None = None
        self._beat_stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost = False

    @property
    def held(self) -> str | None:
        """The name of the Lease held now, if any."""
        with self._lock:
            return None if self._lease is None else str(self._lease["metadata"]["name"])

    def take(self, max_concurrent: int, control_plane: bool) -> slots.Choice:
        """Try once to take a slot; ``choice.index`` is None when this node must wait.
        Raises ``kube.KubeError`` (``Unavailable`` ...) when the API cannot be asked."""
        indexes = slots.candidates(control_plane, max_concurrent)
        read = {i: leases.get(self._kube, self._namespace, slots.name(i)) for i in indexes}
        table = [slots.from_lease(i, read[i]) for i in indexes]
        now = self._clock()
        exists = self._holders_exist(table, now)
        choice = slots.choose(self._identity, control_plane, max_concurrent, table, exists, now)
        if choice.index is None:
            return choice
        try:
            lease = leases.acquire(
                self._kube,
                self._namespace,
                slots.name(choice.index),
                self._identity,
                self._seconds,
                self._clock(),
                read[choice.index],
            )
        except kube_.Conflict as e:
            return slots.Choice(None, slots.Why.HELD, f"another node was faster: {e}")
        log.info("took rotation slot %s (%s)", slots.name(choice.index), choice.detail)
        with self._lock:
            self._lease = lease
            self.lost = False
        self._start_heartbeat()
        return choice

    def release(self) -> None:
        """Stop the heartbeat and give the slot back; never raises."""
        self._beat_stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        with self._lock:
            lease, self._lease = self._lease, None
        if lease is None:
            return
        try:
            leases.release(self._kube, lease, self._identity, self._clock())
            log.info("released rotation slot %s", lease["metadata"]["name"])
        except kube_.KubeError as e:
            log.warning(
                "could not release rotation slot %s (it expires by itself): %s",
                lease["metadata"]["name"],
                e,
            )

    def _holders_exist(self, table: list[slots.Slot], now: dt.datetime) -> Mapping[str, bool]:
        """Look up the Node of each holder that would otherwise keep its slot."""
        out: dict[str, bool] = {}
        for slot in table:
            held, _ = slots.free(slot, now, {})
            if held or slot.holder is None or slot.holder == self._identity:
                continue
            try:
                nodes.get(self._kube, slot.holder)
                out[slot.holder] = True
            except kube_.NotFound:
                out[slot.holder] = False
        return out

    def _start_heartbeat(self) -> None:
        self._beat_stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="slot-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        # a third of the lease: two beats may fail before anyone may take it over
        period = max(0.2, self._seconds / 3)
        while not self._beat_stop.wait(period):
            with self._lock:
                lease = self._lease
            if lease is None:
                return
            try:
                renewed = leases.renew(
                    self._kube, lease, self._identity, self._seconds, self._clock()
                )
            except kube_.Conflict:
                fresh = self._reread(lease)
                if fresh is None:
                    return
                renewed = fresh
            except kube_.KubeError as e:
                log.warning("rotation slot heartbeat failed, retrying: %s", e)
                continue
            with self._lock:
                if self._lease is not None:
                    self._lease = renewed

    def _reread(self, lease: Mapping[str, Any]) -> dict[str, Any] | None:
        name = lease["metadata"]["name"]
        try:
            fresh = leases.get(self._kube, self._namespace, name)
        except kube_.KubeError as e:
            log.warning("rotation slot %s: cannot re-read after a conflict: %s", name, e)
            return dict(lease)
        if fresh is not None and leases.holder(fresh) == self._identity:
            return fresh
        log.error(
            "LOST rotation slot %s: now held by %r; finishing the pass in flight, "
            "starting nothing new under it",
            name,
            leases.holder(fresh),
        )
        with self._lock:
            self._lease = None
            self.lost = True
        return None
