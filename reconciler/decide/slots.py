"""Rotation slots: who may take which ``kucero-rotation-<i>`` Lease at time ``now``.

Pure: the Leases, the existence of their holders' Nodes and ``now`` come in as values, a
``Choice`` comes out; the cluster layer then writes it with the Lease's ``resourceVersion`` as a
precondition, so of two nodes that chose the same slot exactly one wins.

Rules (DESIGN.md, Processes):

- Slots ``0 .. maxConcurrentNodes-1`` exist; a node holds at most one.
- A slot is free when its Lease is missing, has no holder, a garbage holder (not a Node name),
  a garbage or missing ``renewTime``/``leaseDurationSeconds``, a holder that stopped renewing
  for longer than its lease duration, or a holder whose Node no longer exists.
- Control-plane nodes never rotate concurrently, whatever ``maxConcurrentNodes`` says (etcd
  quorum). They take **slot 0 only**: one Lease guarded by ``resourceVersion`` makes the
  exclusion race-free, where "check the other slots, then take mine" would let two
  control-plane nodes that looked at the same moment both win. Workers take the highest free
  slot first, leaving slot 0 to the control plane while other slots are free.
- A node that already holds a slot (its own earlier process, restarted within the lease
  duration) takes that one again instead of waiting for itself.

Clock: expiry compares the holder's ``renewTime`` with this node's ``now``, so nodes' clocks
must agree to well within a lease duration (they must anyway: certificates have validity
windows, and kubeadm nodes run NTP).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.model import actions, hoststate

PREFIX = "kucero-rotation-"
# Kubernetes Node names are DNS-1123 subdomains: at most 253 characters.
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_NODE_NAME = 253


class Why(enum.StrEnum):
    # a slot is free
    MISSING = "LeaseMissing"
    UNHELD = "Unheld"
    EXPIRED = "HolderStoppedRenewing"
    HOLDER_GONE = "HolderNodeGone"
    HOLDER_GARBAGE = "HolderNotANode"
    RENEW_TIME_GARBAGE = "RenewTimeInvalid"
    MINE = "AlreadyMine"
    # nobody may take it
    HELD = "Held"
    CONTROL_PLANE_SLOT_BUSY = "ControlPlaneSlotBusy"
    ALL_SLOTS_BUSY = "AllSlotsBusy"


@dataclasses.dataclass(frozen=True)
class Slot:
    """One ``kucero-rotation-<index>`` Lease as read (``exists`` False: not created yet)."""

    index: int
    exists: bool
    holder: str | None = None
    renew_time: dt.datetime | None = None
    duration_seconds: int | None = None
    resource_version: str | None = None

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


def name(index: int) -> str:
    return f"{PREFIX}{index}"


def index_of(lease_name: str) -> int | None:
    tail = lease_name.removeprefix(PREFIX)
    if tail == lease_name or not tail.isdigit() or (len(tail) > 1 and tail[0] == "0"):
        return None
    return int(tail)


def is_node_name(text: object) -> bool:
    return (
        isinstance(text, str) and 0 < len(text) <= _MAX_NODE_NAME and bool(_NODE_NAME.match(text))
    )


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


def free(slot: Slot, now: dt.datetime, node_exists: Mapping[str, bool]) -> tuple[bool, Why]:
    """Whether anyone may take ``slot`` now, and why. ``node_exists`` maps holder names whose
    Node was looked up to whether it exists; a holder not in it is assumed to exist."""
    if not slot.exists:
        return True, Why.MISSING
    if slot.holder is None:
        return True, Why.UNHELD
    if not is_node_name(slot.holder):
        return True, Why.HOLDER_GARBAGE
    if node_exists.get(slot.holder) is False:
        return True, Why.HOLDER_GONE
    if slot.renew_time is None or slot.duration_seconds is None or slot.duration_seconds <= 0:
        return True, Why.RENEW_TIME_GARBAGE
    if slot.renew_time + dt.timedelta(seconds=slot.duration_seconds) <= now:
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
    node_exists: Mapping[str, bool],
    now: dt.datetime,
) -> Choice:
    """The slot ``me`` should write now, or why it must wait. Pure."""
    by_index = {s.index: s for s in slots}
    wanted = candidates(control_plane, max_concurrent)
    for i in wanted:
        slot = by_index.get(i, Slot(i, exists=False))
        if slot.holder == me:
            return Choice(i, Why.MINE, f"{slot.name} is already held by {me}", slot)
    for i in wanted:
        slot = by_index.get(i, Slot(i, exists=False))
        ok, why = free(slot, now, node_exists)
        if ok:
            was = f" (was {slot.holder!r})" if slot.holder else ""
            return Choice(i, why, f"{slot.name} is free: {why}{was}", slot)
    holders = ", ".join(f"{by_index[i].name}={by_index[i].holder}" for i in wanted if i in by_index)
    if control_plane:
        return Choice(
            None,
            Why.CONTROL_PLANE_SLOT_BUSY,
            f"control-plane nodes rotate one at a time through {name(0)}: held ({holders})",
        )
    return Choice(None, Why.ALL_SLOTS_BUSY, f"all {len(wanted)} rotation slot(s) held ({holders})")


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
