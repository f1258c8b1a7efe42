"""The etcd quorum rule as a table: may the local member restart, given the member list and
who answers healthy? (The real etcd cluster: tests/integration/test_etcd_quorum.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.decide import quorum

Member = quorum.Member


def members(n: int, learners: tuple[int, ...] = ()) -> list[quorum.Member]:
    return [
        Member(str(i), f"cp-{i}", (f"https://10.0.0.{i}:2379",), i in learners)
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize(
    ("n", "learners", "local_healthy", "healthy", "allowed"),
    [
        pytest.param(1, (), True, {}, True, id="single-member-may-restart"),
        pytest.param(3, (), True, {"2": True, "3": True}, True, id="three-all-healthy"),
        pytest.param(3, (), True, {"2": True, "3": False}, False, id="three-one-other-down"),
        pytest.param(3, (), True, {"2": True}, False, id="three-one-other-unanswered"),
        pytest.param(2, (), True, {"2": True}, False, id="two-members-never-keep-quorum"),
        pytest.param(5, (), True, {"2": True, "3": True, "4": True}, True, id="five-three-others"),
        pytest.param(5, (), True, {"2": True, "3": True}, False, id="five-two-others"),
        pytest.param(3, (1,), True, {}, True, id="a-learner-may-always-restart"),
        pytest.param(3, (3,), True, {"2": True}, False, id="learners-do-not-count-toward-quorum"),
        pytest.param(
            3, (), False, {"2": False, "3": False}, True, id="unhealthy-local-member-adds-nothing"
        ),
    ],
)
def test_verdict(
    n: int, learners: tuple[int, ...], local_healthy: bool, healthy: dict[str, bool], allowed: bool
) -> None:
    why = quorum.verdict("1", members(n, learners), local_healthy, healthy)
    assert (why is None) is allowed, why


def test_refusal_names_the_members_that_are_not_healthy() -> None:
    why = quorum.verdict("1", members(3), True, {"2": True, "3": False})
    assert why is not None and "cp-3 (https://10.0.0.3:2379)" in why and "needs 2" in why


def test_local_member_missing_from_its_own_list_is_refused() -> None:
    assert "not in its own member list" in (quorum.verdict("9", members(3), True, {}) or "")


def test_parse_members_reads_the_gateway_json() -> None:
    listing = {
        "header": {"cluster_id": "1", "member_id": "11", "raft_term": "2"},
        "members": [
            {"ID": "11", "name": "a", "peerURLs": [], "clientURLs": ["https://127.0.0.1:1"]},
            {"ID": "12", "name": "b", "clientURLs": ["https://127.0.0.1:2"], "isLearner": True},
            {"ID": 13, "peerURLs": ["https://x"]},
        ],
    }
    local, found = quorum.parse_members(listing)
    assert local == "11"
    assert found == [
        Member("11", "a", ("https://127.0.0.1:1",)),
        Member("12", "b", ("https://127.0.0.1:2",), True),
        Member("13", "", ()),
    ]


@pytest.mark.parametrize(
    "listing",
    [
        pytest.param({}, id="empty"),
        pytest.param({"header": {"member_id": "1"}, "members": []}, id="no-members"),
        pytest.param({"header": {}, "members": [{"ID": "1"}]}, id="no-local-id"),
        pytest.param(
            {"header": {"member_id": "1"}, "members": [{"name": "x"}]}, id="member-without-id"
        ),
        pytest.param(
            {"header": {"member_id": "1"}, "members": [{"ID": "1", "clientURLs": "https://x"}]},
            id="client-urls-not-a-list",
        ),
        pytest.param({"header": {"member_id": True}, "members": [{"ID": "1"}]}, id="boolean-id"),
    ],
)
def test_parse_members_refuses_what_etcd_never_answers(listing: dict[str, Any]) -> None:
    with pytest.raises(quorum.QuorumError):
        quorum.parse_members(listing)
