"""Slot arithmetic as a table: who may take which rotation slot at a fixed ``now``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from reconciler.decide import slots

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)


def held(index: int, holder: str, renewed_ago: float = 1.0, duration: int = 15) -> slots.Slot:
    return slots.Slot(index, True, holder, NOW - renewed_ago * S, duration, f"rv{index}")


def gone(index: int) -> slots.Slot:
    return slots.Slot(index, False)


Why = slots.Why


@pytest.mark.parametrize(
    ("me", "control_plane", "max_concurrent", "table", "exists", "index", "why"),
    [
        pytest.param("w1", False, 1, [], {}, 0, Why.MISSING, id="no-lease-yet-slot-0-is-created"),
        pytest.param("w1", False, 3, [], {}, 2, Why.MISSING, id="worker-prefers-the-highest-slot"),
        pytest.param(
            "cp1", True, 3, [], {}, 0, Why.MISSING, id="control-plane-only-ever-takes-slot-0"
        ),
        pytest.param(
            "w1",
            False,
            1,
            [slots.Slot(0, True, None, None, None, "rv0")],
            {},
            0,
            Why.UNHELD,
            id="released-lease-is-free",
        ),
        pytest.param(
            "w1", False, 1, [held(0, "w2")], {}, None, Why.ALL_SLOTS_BUSY, id="live-holder-blocks"
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2", renewed_ago=15)],
            {},
            0,
            Why.EXPIRED,
            id="holder-silent-exactly-a-lease-duration-has-lost-it",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2", renewed_ago=14.9)],
            {},
            None,
            Why.ALL_SLOTS_BUSY,
            id="holder-silent-just-under-a-lease-duration-keeps-it",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2")],
            {"w2": False},
            0,
            Why.HOLDER_GONE,
            id="holder-whose-node-was-deleted-has-lost-it",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2")],
            {"w2": True},
            None,
            Why.ALL_SLOTS_BUSY,
            id="holder-whose-node-exists-keeps-it",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "Not A Node!")],
            {},
            0,
            Why.HOLDER_GARBAGE,
            id="garbage-holder-is-free",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "x" * 254)],
            {},
            0,
            Why.HOLDER_GARBAGE,
            id="holder-longer-than-a-node-name-is-free",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [slots.Slot(0, True, "w2", None, 15, "rv0")],
            {},
            0,
            Why.RENEW_TIME_GARBAGE,
            id="holder-without-renew-time-is-free",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [slots.Slot(0, True, "w2", NOW, 0, "rv0")],
            {},
            0,
            Why.RENEW_TIME_GARBAGE,
            id="zero-lease-duration-is-free",
        ),
        pytest.param(
            "w1",
            False,
            2,
            [held(0, "cp1"), held(1, "w2")],
            {},
            None,
            Why.ALL_SLOTS_BUSY,
            id="worker-waits-when-every-slot-is-held",
        ),
        pytest.param(
            "w1",
            False,
            2,
            [held(1, "w2")],
            {},
            0,
            Why.MISSING,
            id="worker-falls-back-to-slot-0",
        ),
        pytest.param(
            "cp2",
            True,
            5,
            [held(0, "cp1")],
            {},
            None,
            Why.CONTROL_PLANE_SLOT_BUSY,
            id="second-control-plane-waits-whatever-max-concurrent-says",
        ),
        pytest.param(
            "cp2",
            True,
            5,
            [held(0, "w1"), held(4, "cp1")],
            {},
            None,
            Why.CONTROL_PLANE_SLOT_BUSY,
            id="control-plane-waits-for-slot-0-even-when-others-are-free",
        ),
        pytest.param(
            "cp1",
            True,
            1,
            [held(0, "cp1", renewed_ago=100)],
            {},
            0,
            Why.MINE,
            id="own-slot-from-a-restarted-process-is-taken-again",
        ),
        pytest.param(
            "w1",
            False,
            3,
            [held(0, "w1")],
            {},
            0,
            Why.MINE,
            id="own-slot-is-preferred-over-a-free-one",
        ),
        pytest.param(
            "w1",
            False,
            1,
            [held(0, "w2"), held(1, "w3")],
            {},
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
    exists: dict[str, bool],
    index: int | None,
    why: slots.Why,
) -> None:
    choice = slots.choose(me, control_plane, max_concurrent, table, exists, NOW)
    assert (choice.index, choice.why) == (index, why), choice.detail


def test_choice_carries_the_resource_version_to_use_as_precondition() -> None:
    choice = slots.choose("w1", False, 1, [held(0, "w2", renewed_ago=60)], {}, NOW)
    assert choice.slot is not None and choice.slot.resource_version == "rv0"


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
