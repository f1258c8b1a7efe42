"""Slot arithmetic as a table: who may take which rotation slot at a fixed ``now``."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from reconciler.decide import slots
from reconciler.model import actions

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)


LEASE = 15.0  # the configured rotation lease duration


def held(
    index: int, holder: str, seen_for: float = 1.0, duration: int | None = 15, ours: bool = False
) -> slots.Slot:
    """A held slot this node has seen unchanged for ``seen_for`` seconds."""
    return slots.Slot(
        index, True, holder, NOW, duration, f"rv{index}", unchanged_for=seen_for, ours=ours
    )


Why = slots.Why


@pytest.mark.parametrize(
    ("me", "control_plane", "max_concurrent", "table", "index", "why"),
    [
        pytest.param("w1", False, 1, [], 0, Why.MISSING, id="no-lease-yet-slot-0-is-created"),
        pytest.param("w1", False, 3, [], 2, Why.MISSING, id="worker-prefers-the-highest-slot"),
        pytest.param("cp1", True, 3, [], 0, Why.MISSING, id="control-plane-only-ever-takes-slot-0"),
        pytest.param(
            "w1",
            False,
            1,
            [slots.Slot(0, True, None, None, None, "rv0")],
            0,
            Why.UNHELD,
            id="released-lease-is-free",
        ),
        pytest.param(
            "w1", False, 1, [held(0, "w2")], None, Why.ALL_SLOTS_BUSY, id="live-holder-blocks"
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2", seen_for=15)],
            0,
            Why.EXPIRED,
            id="unchanged-for-a-lease-duration-on-our-clock-is-free",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2", seen_for=14.9)],
            None,
            Why.ALL_SLOTS_BUSY,
            id="unchanged-just-under-a-lease-duration-is-held",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2", seen_for=5, duration=5)],
            0,
            Why.EXPIRED,
            id="a-shorter-written-duration-is-honoured",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2", seen_for=15, duration=10**9)],
            0,
            Why.EXPIRED,
            id="a-huge-written-duration-is-capped-at-the-configured-one",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2", seen_for=14, duration=10**9)],
            None,
            Why.ALL_SLOTS_BUSY,
            id="a-huge-written-duration-still-holds-a-lease-duration",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "Not A Node!", seen_for=1)],
            None,
            Why.ALL_SLOTS_BUSY,
            id="garbage-holder-is-judged-on-observed-time-not-freed-at-once",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2", seen_for=1, duration=None)],
            None,
            Why.ALL_SLOTS_BUSY,
            id="garbage-duration-counts-as-the-configured-one",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2", seen_for=15, duration=0)],
            0,
            Why.EXPIRED,
            id="zero-duration-counts-as-the-configured-one",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [slots.Slot(0, False, unchanged_for=3, deleted_while_held=True)],
            None,
            Why.ALL_SLOTS_BUSY,
            id="slot-deleted-while-held-is-not-free-at-once",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [slots.Slot(0, False, unchanged_for=15, deleted_while_held=True)],
            0,
            Why.MISSING,
            id="slot-deleted-a-lease-duration-ago-is-free",
        ),
        pytest.param(
            "w1",
            False,
            2,
            [held(0, "cp1"), held(1, "w2")],
            None,
            Why.ALL_SLOTS_BUSY,
            id="worker-waits-when-every-slot-is-held",
        ),
        pytest.param(
            "w1", False, 2, [held(1, "w2")], 0, Why.MISSING, id="worker-falls-back-to-slot-0"
        ),
        pytest.param(
            "cp2",
            True,
            5,
            [held(0, "cp1")],
            None,
            Why.CONTROL_PLANE_SLOT_BUSY,
            id="second-control-plane-waits-whatever-max-concurrent-says",
        ),
        pytest.param(
            "cp2",
            True,
            5,
            [held(0, "w1"), held(4, "cp1")],
            None,
            Why.CONTROL_PLANE_SLOT_BUSY,
            id="control-plane-waits-for-slot-0-even-when-others-are-free",
        ),
        pytest.param(
            "cp1",
            True,
            1,
            [held(0, "cp1", seen_for=1, ours=True)],
            0,
            Why.MINE,
            id="slot-this-process-wrote-last-is-taken-again",
        ),
        pytest.param(
            "cp1",
            True,
            1,
            [held(0, "cp1", seen_for=1)],
            None,
            Why.CONTROL_PLANE_SLOT_BUSY,
            id="own-name-written-by-someone-else-waits-like-any-holder",
        ),
        pytest.param(
            "w1",
            False,
            3,
            [held(0, "w1", ours=True)],
            0,
            Why.MINE,
            id="own-slot-is-preferred-over-a-free-one",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2"), held(1, "w3")],
            None,
            Why.ALL_SLOTS_BUSY,
            id="slot-beyond-max-is-never-taken",
        ),
    ],
)
def test_choose(
    me: str,
    control_plane: bool,
    max_concurrent: int,
    table: list[slots.Slot],
    index: int | None,
    why: slots.Why,
) -> None:
    choice = slots.choose(me, control_plane, max_concurrent, table, LEASE)
    assert (choice.index, choice.why) == (index, why), choice.detail


def test_choice_carries_the_resource_version_to_use_as_precondition() -> None:
    choice = slots.choose("w1", False, 1, [held(0, "w2", seen_for=60)], LEASE)
    assert choice.slot is not None and choice.slot.resource_version == "rv0"


def test_a_renew_time_in_the_future_does_not_matter() -> None:
    future = dataclasses.replace(held(0, "w2", seen_for=15), renew_time=NOW + 3650 * 86400 * S)
    assert slots.choose("w1", False, 1, [future], LEASE).why == Why.EXPIRED


@pytest.mark.parametrize(
    ("peers", "expected"),
    [
        pytest.param([slots.Peer("cp1", True, 0.0)], ["cp1"], id="peer-rotating-now-blocks"),
        pytest.param([slots.Peer("cp1", False, 0.0)], [], id="peer-not-rotating"),
        pytest.param(
            [slots.Peer("cp1", True, LEASE + 99.9)],
            ["cp1"],
            id="rotating-status-quiet-just-under-the-bound-still-blocks",
        ),
        pytest.param(
            [slots.Peer("cp1", True, LEASE + 100.0)],
            [],
            id="rotating-status-quiet-for-lease-plus-the-longest-step-is-stale",
        ),
        pytest.param(
            [slots.Peer("b", True, 0.0), slots.Peer("a", True, 0.0)],
            ["a", "b"],
            id="all-listed-sorted",
        ),
    ],
)
def test_rotating_peers(peers: list[slots.Peer], expected: list[str]) -> None:
    assert slots.rotating_peers(peers, LEASE, 100.0) == expected


def test_step_bound_covers_a_restart_and_its_rollback() -> None:
    assert slots.step_bound(25.0, 300.0) == 2 * 325.0 + slots.STEP_SECONDS


@pytest.mark.parametrize(
    ("lease", "grace", "fits"),
    [
        pytest.param(60.0, 25.0, True, id="defaults-fit"),
        pytest.param(3.0, 0.5, True, id="test-settings-fit"),
        pytest.param(3.0, 3.0, False, id="grace-as-long-as-the-lease-never-fits"),
        pytest.param(26.0, 25.0, False, id="no-room-for-the-step-itself"),
    ],
)
def test_lease_fits(lease: float, grace: float, fits: bool) -> None:
    why = slots.lease_fits(lease, grace)
    assert (why is None) is fits
    if why:
        assert "--rotation-lease-duration" in why and "--manifest-grace" in why


@pytest.mark.parametrize(
    ("lease", "expected"),
    [
        pytest.param(None, slots.Slot(0, False), id="missing"),
        pytest.param(
            {
                "metadata": {"resourceVersion": "7"},
                "spec": {
                    "holderIdentity": "cp1",
                    "renewTime": "2026-06-01T11:59:59.500000Z",
                    "leaseDurationSeconds": 15,
                },
            },
            slots.Slot(0, True, "cp1", NOW - 0.5 * S, 15, "7"),
            id="well-formed",
        ),
        pytest.param(
            {"metadata": {"resourceVersion": "7"}, "spec": {"holderIdentity": ""}},
            slots.Slot(0, True, None, None, None, "7"),
            id="released",
        ),
        pytest.param(
            {
                "metadata": "nonsense",
                "spec": {
                    "holderIdentity": 42,
                    "renewTime": "yesterday",
                    "leaseDurationSeconds": True,
                },
            },
            slots.Slot(0, True, None, None, None, None),
            id="garbage-fields-become-none",
        ),
        pytest.param(
            {"spec": {"holderIdentity": "a", "renewTime": "2026-06-01T11:00:00"}},
            slots.Slot(0, True, "a", None, None, None),
            id="renew-time-without-zone-is-garbage",
        ),
    ],
)
def test_from_lease(lease: dict[str, Any] | None, expected: slots.Slot) -> None:
    assert slots.from_lease(0, lease) == expected


@pytest.mark.parametrize(
    ("name", "index"),
    [
        pytest.param("kucero-rotation-0", 0, id="zero"),
        pytest.param("kucero-rotation-12", 12, id="two-digits"),
        pytest.param("kucero-rotation-01", None, id="leading-zero"),
        pytest.param("kucero-rotation-", None, id="no-index"),
        pytest.param("kucero-leader-election", None, id="other-lease"),
    ],
)
def test_index_of(name: str, index: int | None) -> None:
    assert slots.index_of(name) == index


def test_micro_time_round_trips_through_from_lease() -> None:
    lease = {"spec": {"holderIdentity": "a", "renewTime": slots.micro_time(NOW)}}
    assert slots.from_lease(0, lease).renew_time == NOW


def _plan(*kinds: actions.ActionKind) -> actions.Plan:
    return actions.Plan(
        tuple(actions.Action(k, "x", actions.Reason.NEARING_EXPIRY) for k in kinds), ()
    )


K = actions.ActionKind


@pytest.mark.parametrize(
    ("kinds", "control_plane", "expected"),
    [
        pytest.param((), True, False, id="nothing-to-do-needs-nothing"),
        pytest.param((K.RENEW, K.RESTART_STATIC_POD), True, True, id="renewal-needs-a-slot"),
        pytest.param((K.RESTART_STATIC_POD,), True, True, id="owed-restart-needs-a-slot"),
        pytest.param(
            (K.FIX_KUBELET_CONF, K.RESTART_KUBELET), False, False, id="kubelet-repair-on-a-worker"
        ),
        pytest.param(
            (K.SET_KUBELET_CONFIG, K.RESTART_KUBELET),
            True,
            True,
            id="kubelet-restart-on-a-control-plane-node",
        ),
        pytest.param((K.SET_KUBELET_CONFIG,), True, False, id="config-write-without-restart"),
    ],
)
def test_needs_slot(
    kinds: tuple[actions.ActionKind, ...], control_plane: bool, expected: bool
) -> None:
    assert slots.needs_slot(_plan(*kinds), control_plane) is expected
