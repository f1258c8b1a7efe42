"""Rotation slots on the cluster: read the ``kucero-rotation-<i>`` Leases, take one, keep it
alive with a heartbeat while the work runs, prove it is still held before each disruptive step,
give it back.

The decision (which slot, or why wait) is ``decide.slots.choose``; this module gathers its
inputs: the Leases, and how long each has stood unchanged on this node's monotonic clock
(``_observe``, kept across tries, as the leader election does), so a forged ``renewTime`` or
duration buys at most one lease duration. It writes the answer with ``leases.acquire``, whose
``resourceVersion`` precondition makes a lost race a ``Conflict``: then this node waits like any
other.

Holding: the slot is valid until one lease duration after the *sending* of the last renewal that
succeeded (a contender sees that renewal no earlier, then waits a whole lease duration).
``confirm(margin)``, called immediately before each disruptive step, renews once more and says
no when the slot is gone (written by anyone else: the renewal conflicts; deleted: the renewal
finds nothing, or, since Leases allow create-on-update, makes a new object with another UID,
which is then released) or has less than ``margin`` seconds left, so a node never starts a step
its slot might not outlive. The
heartbeat notices the same between steps (``lost``). Releasing is idempotent and never raises: a
slot that cannot be released expires after its lease duration.

``rotating_peers`` lists the other control-plane Nodes whose status still says ``Rotating``
(``decide.slots.rotating_peers``): what a control-plane node checks besides slot 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.cluster import kube as kube_
from reconciler.cluster import leases, nodes
from reconciler.decide import slots, status

log = logging.getLogger(__name__)

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


@dataclasses.dataclass(frozen=True)
class _Seen:
    version: str  # resourceVersion, or "" when missing
    since: float  # monotonic time this node first saw it so
    held: bool
    deleted_while_held: bool = False


class Slots:
    def __init__(
        self,
        kube: kube_.Kube,
        namespace: str,
        identity: str,
        lease_seconds: int,
        clock: Callable[[], dt.datetime],
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._identity = identity
        self._seconds = lease_seconds
        self._clock = clock
        self._mono = mono
        self._lock = threading.Lock()
        self._renewing = threading.Lock()  # one renewal at a time: heartbeat or confirm
        self._lease: dict[str, Any] | None = None
        self._valid_until = 0.0
        self._seen: dict[int, _Seen] = {}
        self._last_change = -float("inf")  # when a slot last changed by someone else's write
        self._ours: dict[str, str] = {}  # Lease name -> resourceVersion of our last write
        self._statuses: dict[str, tuple[str, float]] = {}  # peer -> (status text, first seen)
        self._beat_stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost = False
        self.lost_why = ""

    @property
    def held(self) -> str | None:
        """The name of the Lease held now, if any."""
        with self._lock:
            return None if self._lease is None else str(self._lease["metadata"]["name"])

    def take(
        self, max_concurrent: int, control_plane: bool, step_bound: float = 0.0
    ) -> slots.Choice:
        """Try once to take a slot; ``choice.index`` is None when this node must wait. A
        control-plane node also waits while ``rotating_peers(step_bound)`` names anyone, asked
        before and again after slot 0 is taken (see ``run.turn``). Raises ``kube.KubeError``
        (``Unavailable`` ...) when the API cannot be asked."""
        kube = self._bounded()
        indexes = slots.candidates(control_plane, max_concurrent)
        read = {i: leases.get(kube, self._namespace, slots.name(i)) for i in indexes}
        table = [self._observe(i, read[i]) for i in indexes]
        if control_plane and (busy := self._busy_peers(step_bound)):
            return busy
        choice = slots.choose(self._identity, control_plane, max_concurrent, table, self._seconds)
        if choice.index is None:
            return choice
        sent = self._mono()
        try:
            lease = leases.acquire(
                kube,
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
            self._lease, self._valid_until = lease, sent + self._seconds
            self._ours[slots.name(choice.index)] = _version(lease)
            self.lost, self.lost_why = False, ""
        self._start_heartbeat()
        if control_plane and (busy := self._busy_peers(step_bound)):
            self.release()  # slot 0 was freed under a peer still in a step: let it finish
            return busy
        return choice

    def _busy_peers(self, step_bound: float) -> slots.Choice | None:
        busy = self.rotating_peers(step_bound)
        if not busy:
            return None
        return slots.Choice(
            None,
            slots.Why.PEER_ROTATING,
            f"control-plane node(s) {', '.join(busy)} still say Rotating: waiting until they "
            "report the end of their pass, or stay silent for a lease duration plus the "
            "longest restart",
        )

    def confirm(self, margin: float) -> str | None:
        """Immediately before a disruptive step: None when the slot is still ours with at least
        ``margin`` seconds left (after renewing it now), else why the step must not start."""
        self._renew()
        with self._lock:
            if self._lease is None:
                why = self.lost_why or "no rotation slot is held"
                return f"rotation slot lost ({why}): not starting another step"
            name = self._lease["metadata"]["name"]
            left = self._valid_until - self._mono()
        if left < margin:
            return (
                f"{name}: {max(0.0, left):.1f}s left in the slot (it could not be renewed), the "
                f"step needs {margin:.1f}s: not starting it"
            )
        return None

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
            released = leases.release(self._bounded(), lease, self._identity, self._clock())
            if released is not None:  # our own write: no sign of anyone else's activity
                self._ours[lease["metadata"]["name"]] = _version(released)
            log.info("released rotation slot %s", lease["metadata"]["name"])
        except kube_.KubeError as e:
            log.warning(
                "could not release rotation slot %s (it expires by itself): %s",
                lease["metadata"]["name"],
                e,
            )

    def rotating_peers(self, step_bound: float) -> list[str]:
        """Other control-plane Nodes whose ``kucero.io/status`` says Rotating and may still be
        in a step (``decide.slots.rotating_peers``). Raises ``kube.KubeError``."""
        now = self._mono()
        peers = []
        for node in nodes.list_all(self._bounded(), CONTROL_PLANE_LABEL):
            peer = nodes.name(node)
            if peer == self._identity:
                continue
            text = nodes.annotation(node, status.ANNOTATION) or ""
            seen = self._statuses.get(peer)
            if seen is None or seen[0] != text:
                seen = self._statuses[peer] = (text, now)
            decoded = status.decode(text)
            rotating = decoded is not None and decoded.phase == status.Phase.ROTATING
            quiet = now - max(seen[1], self._last_change)
            peers.append(slots.Peer(peer, rotating, quiet))
        return slots.rotating_peers(peers, self._seconds, step_bound)

    def _bounded(self) -> kube_.Kube:
        """The door for one slot operation: a lease duration at most, so a silent network
        costs a pass that long, not the door's 30 s read timeout and its retries."""
        started = self._mono()
        return self._kube.within(
            lambda: started + self._seconds - self._mono(), "the rotation lease duration"
        )

    # --- observing -----------------------------------------------------------------------

    def _observe(self, index: int, lease: Mapping[str, Any] | None) -> slots.Slot:
        """The slot as read, with how long this node has seen it so (kept across tries)."""
        slot = slots.from_lease(index, lease)
        now = self._mono()
        version = _version(lease) if lease is not None else ""
        before = self._seen.get(index)
        if before is None or before.version != version:
            gone = (
                lease is None and before is not None and (before.held or before.deleted_while_held)
            )
            before = self._seen[index] = _Seen(version, now, slot.holder is not None, gone)
            if lease is None or version != self._ours.get(slot.name):
                self._last_change = max(self._last_change, now)
        return dataclasses.replace(
            slot,
            unchanged_for=now - before.since,
            deleted_while_held=before.deleted_while_held,
            ours=lease is not None and version == self._ours.get(slot.name),
        )

    # --- holding -------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._beat_stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="slot-heartbeat", daemon=True)
        self._beat.start()

    def _period(self) -> float:
        # a third of the lease: two beats may fail before anyone may take it over
        return max(0.2, self._seconds / 3)

    def _heartbeat(self) -> None:
        while not self._beat_stop.wait(self._period()):
            with self._lock:
                if self._lease is None:
                    return
            self._renew()

    def _renew(self) -> None:
        """One renewal of the slot held, bounded by a heartbeat period; a deleted slot, or one
        written by anyone else, is lost (logged loudly). Never raises."""
        with self._renewing:
            with self._lock:
                lease = self._lease
            if lease is None:
                return
            started = self._mono()
            kube = self._kube.within(
                lambda: started + self._period() - self._mono(), "the heartbeat period"
            )
            name = lease["metadata"]["name"]
            try:
                sent = self._mono()
                try:
                    renewed = leases.renew(
                        kube, lease, self._identity, self._seconds, self._clock()
                    )
                except kube_.Conflict:
                    fresh = leases.get(kube, self._namespace, name)
                    if fresh is None or leases.holder(fresh) != self._identity:
                        self._lose(name, None if fresh is None else leases.holder(fresh))
                        return
                    sent = self._mono()
                    renewed = leases.renew(
                        kube, fresh, self._identity, self._seconds, self._clock()
                    )
            except kube_.NotFound:
                self._lose(name, None)
                return
            except kube_.KubeError as e:
                log.warning("rotation slot %s: renewal failed, retrying: %s", name, e)
                return
            if _uid(renewed) != _uid(lease):
                # Leases allow create-on-update: our PUT made a new one where a deleted one was
                self._lose(name, None)
                with contextlib.suppress(kube_.KubeError):
                    leases.release(kube, renewed, self._identity, self._clock())
                return
            with self._lock:
                if self._lease is not None:
                    self._lease, self._valid_until = renewed, sent + self._seconds
                    self._ours[name] = _version(renewed)

    def _lose(self, name: str, holder: str | None) -> None:
        why = "the Lease was deleted" if holder is None else f"now held by {holder!r}"
        log.error(
            "LOST rotation slot %s: %s; finishing the step in flight, starting no other", name, why
        )
        with self._lock:
            self._lease = None
            self.lost, self.lost_why = True, f"{name}: {why}"


def _uid(lease: Mapping[str, Any]) -> str:
    return str((lease.get("metadata") or {}).get("uid") or "")


def _version(lease: Mapping[str, Any]) -> str:
    return str((lease.get("metadata") or {}).get("resourceVersion") or "")
