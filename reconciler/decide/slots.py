"""Rotation slots: who may take which ``kucero-rotation-<i>`` Lease, and when another
control-plane node may still be restarting.

Pure: the Leases as read, with what this node observed of them (how long each has stood
unchanged on its own monotonic clock), come in as values; a ``Choice`` comes out. The cluster
layer writes it with the Lease's ``resourceVersion`` as a precondition, so of two nodes that
chose the same slot exactly one wins.

Rules (docs/design.md, Processes; issue 17, fencing):

- Slots ``0 .. maxConcurrentNodes-1`` exist; a node holds at most one.
- A slot is free when its Lease is missing (unless this node saw it held and it has been gone
  less than a lease duration: deleting a held slot must not hand it over at once), has no holder
  (a release), or has stood **unchanged for its duration, capped at the configured one, on this
  node's clock** (``decide.leasetime``). Nothing the Lease says about itself frees it sooner:
  a ``renewTime`` in the past or future, a huge or garbage ``leaseDurationSeconds``, a holder
  that is no Node at all. A forged slot Lease therefore delays a rotation by one configured
  lease duration at most.
- Control-plane nodes never rotate concurrently, whatever ``maxConcurrentNodes`` says (etcd
  quorum). They take **slot 0 only**: one Lease guarded by ``resourceVersion`` makes the
  exclusion race-free, where "check the other slots, then take mine" would let two
  control-plane nodes that looked at the same moment both win. Workers take the highest free
  slot first, leaving slot 0 to the control plane while other slots are free.
- A slot this very process wrote last (same resourceVersion) is taken again at once; the same
  holder name from an earlier process counts as anyone else's (a forged holder name would be
  indistinguishable): it waits one lease duration.
- ``rotating_peers``: a control-plane node also waits while another control-plane Node's
  ``kucero.io/status`` says ``Rotating``, until that status has stood unchanged for a lease
  duration plus the longest step (``step_bound``), counted from the later of its first sight
  and the last change of the slots: the holder checks its slot before every step, so once its
  slot has been quiet that long its last step is over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.decide import leasetime
from reconciler.model import actions, hoststate

PREFIX = "kucero-rotation-"
# What a step needs beyond its own waits (seconds): a renewal transaction, a kubelet restart,
# a crictl stop, the renames and probes around a manifest move take well under this on a
# healthy node. The slot must have this much left (plus the step's own wait) for it to start.
STEP_SECONDS = 1.0


class Why(enum.StrEnum):
    # a slot is free
    MISSING = "LeaseMissing"
    UNHELD = "Unheld"
    EXPIRED = "HolderStoppedRenewing"
    MINE = "AlreadyMine"
    # nobody may take it
    HELD = "Held"
    DELETED = "DeletedWhileHeld"
    CONTROL_PLANE_SLOT_BUSY = "ControlPlaneSlotBusy"
    ALL_SLOTS_BUSY = "AllSlotsBusy"
    PEER_ROTATING = "ControlPlanePeerRotating"


@dataclasses.dataclass(frozen=True)
class Slot:
    """One ``kucero-rotation-<index>`` Lease as read (``exists`` False: not created yet), and
    what this node observed of it."""

    index: int
    exists: bool
    holder: str | None = None
    renew_time: dt.datetime | None = None  # as written: shown, never trusted
    duration_seconds: int | None = None  # as written (None: missing or garbage)
    resource_version: str | None = None
    unchanged_for: float = 0.0  # seconds this node has seen it in this very state
    deleted_while_held: bool = False  # missing now, after this node saw it held
    ours: bool = False  # this version is the one this process wrote last

    @property
    def name(self) -> str:
        return name(self.index)


@dataclasses.dataclass(frozen=True)
class Choice:
    """``index`` is the slot to write (None: wait); ``why`` says why, ``detail`` for a log."""

    index: int | None
    why: Why
    detail: str
    slot: Slot | None = None  # the slot as read: its resourceVersion is the precondition


@dataclasses.dataclass(frozen=True)
class Peer:
    """Another control-plane Node: whether its status says Rotating, and for how long this
    node has known nothing to change (its status, the slots)."""

    name: str
    rotating: bool
    quiet_for: float


def name(index: int) -> str:
    return f"{PREFIX}{index}"


def index_of(lease_name: str) -> int | None:
    tail = lease_name.removeprefix(PREFIX)
    if tail == lease_name or not tail.isdigit() or (len(tail) > 1 and tail[0] == "0"):
        return None
    return int(tail)


def from_lease(index: int, lease: Mapping[str, Any] | None) -> Slot:
    """A Lease's JSON (or None when it does not exist) as a ``Slot``; garbage becomes None."""
    if lease is None:
        return Slot(index, exists=False)
    meta = lease.get("metadata") if isinstance(lease.get("metadata"), Mapping) else {}
    spec = lease.get("spec") if isinstance(lease.get("spec"), Mapping) else {}
    assert isinstance(meta, Mapping) and isinstance(spec, Mapping)
    holder = spec.get("holderIdentity")
    seconds = spec.get("leaseDurationSeconds")
    version = meta.get("resourceVersion")
    return Slot(
        index,
        exists=True,
        holder=holder if isinstance(holder, str) and holder else None,
        renew_time=_time(spec.get("renewTime")),
        duration_seconds=seconds
        if isinstance(seconds, int) and not isinstance(seconds, bool)
        else None,
        resource_version=version if isinstance(version, str) else None,
    )


def free(slot: Slot, lease_seconds: float) -> tuple[bool, Why]:
    """Whether anyone may take ``slot`` now, and why; ``lease_seconds`` is the configured
    lease duration (the cap on what a holder may claim)."""
    if not slot.exists:
        if slot.deleted_while_held and slot.unchanged_for < lease_seconds:
            return False, Why.DELETED
        return True, Why.MISSING
    if slot.holder is None:
        return True, Why.UNHELD
    if leasetime.left(slot.unchanged_for, slot.duration_seconds, lease_seconds) <= 0:
        return True, Why.EXPIRED
    return False, Why.HELD


def candidates(control_plane: bool, max_concurrent: int) -> list[int]:
    """Slot indexes this node may take, in order of preference."""
    if control_plane:
        return [0]
    return list(range(max(1, max_concurrent) - 1, -1, -1))


def choose(
    me: str,
    control_plane: bool,
    max_concurrent: int,
    slots: Sequence[Slot],
    lease_seconds: float,
) -> Choice:
    """The slot ``me`` should write now, or why it must wait. Pure."""
    by_index = {s.index: s for s in slots}
    wanted = candidates(control_plane, max_concurrent)
    for i in wanted:
        slot = by_index.get(i, Slot(i, exists=False))
        if slot.holder == me and slot.ours:
            return Choice(i, Why.MINE, f"{slot.name} is already held by {me}", slot)
    for i in wanted:
        slot = by_index.get(i, Slot(i, exists=False))
        ok, why = free(slot, lease_seconds)
        if ok:
            was = f" (was {slot.holder!r})" if slot.holder else ""
            return Choice(i, why, f"{slot.name} is free: {why}{was}", slot)
    holders = ", ".join(_shown(by_index[i], lease_seconds) for i in wanted if i in by_index)
    if control_plane:
        return Choice(
            None,
            Why.CONTROL_PLANE_SLOT_BUSY,
            f"control-plane nodes rotate one at a time through {name(0)}: held ({holders})",
        )
    return Choice(None, Why.ALL_SLOTS_BUSY, f"all {len(wanted)} rotation slot(s) held ({holders})")


def _shown(slot: Slot, lease_seconds: float) -> str:
    if not slot.exists:
        return f"{slot.name} deleted {slot.unchanged_for:.0f}s ago while held"
    left = leasetime.left(slot.unchanged_for, slot.duration_seconds, lease_seconds)
    return f"{slot.name}={slot.holder} (free in {max(0.0, left):.0f}s unless renewed)"


def step_bound(manifest_grace: float, health_timeout: float) -> float:
    """The longest one static pod restart can run once started (seconds): the wait for the
    component to stop, then to serve again, and all of it again for a rollback."""
    return 2 * (manifest_grace + health_timeout) + STEP_SECONDS


def rotating_peers(peers: Sequence[Peer], lease_seconds: float, bound: float) -> list[str]:
    """The control-plane peers that may still be restarting something: their status says
    Rotating and has not been quiet for a lease duration plus ``bound`` (``step_bound``)."""
    return sorted(p.name for p in peers if p.rotating and p.quiet_for < lease_seconds + bound)


def lease_fits(lease_seconds: float, manifest_grace: float) -> str | None:
    """Why a rotation slot of ``lease_seconds`` could never cover a restart's stop wait (the
    check before each step would refuse every restart), or None."""
    needed = manifest_grace + STEP_SECONDS
    if lease_seconds > needed:
        return None
    return (
        f"--rotation-lease-duration ({lease_seconds:g}s) must be longer than --manifest-grace "
        f"({manifest_grace:g}s) plus {STEP_SECONDS:g}s: a node checks before each restart that "
        "its slot outlives the wait for the component to stop"
    )


def _time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(dt.UTC)


def micro_time(when: dt.datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def needs_slot(the_plan: actions.Plan, control_plane: bool) -> bool:
    """Renewals and static pod restarts are disruptive; so is a kubelet restart on a control
    plane node (its static pods' health is watched through it). Kubelet-only repairs on a
    worker need no slot."""
    kinds = {a.kind for a in the_plan.actions}
    disruptive = {actions.ActionKind.RENEW, actions.ActionKind.RESTART_STATIC_POD}
    # a CA renewal rewrites trust anchors and restarts what loads them: one node at a time
    disruptive |= {actions.ActionKind.RENEW_CA, actions.ActionKind.INSTALL_CA}
    if kinds & disruptive:
        return True
    return control_plane and actions.ActionKind.RESTART_KUBELET in kinds


def expired_certificates(observed: hoststate.Observed, now: dt.datetime) -> list[str]:
    """kubeadm names whose certificate is already past notAfter: the recovery path's trigger
    (the API server is likely down because of them, so no slot can be taken)."""
    return sorted(
        name
        for name, leaf in observed.leaves.items()
        if leaf.cert is not None and leaf.cert.not_valid_after_utc <= now
    )
