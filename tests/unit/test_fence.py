"""The fence's arithmetic: a term's time is counted from the sending of its last renewal, a
revoked term never comes back, and the door's ``within`` view sends nothing once its budget is
spent and cuts every request's timeouts to the time left. (Against the real API server, with
real processes and network faults: tests/integration/test_fencing_election.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.cluster import kube
from reconciler.run import election

CONFIG = election.Config("ns", "lease", "me", lease_duration=15.0, renew_deadline=10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Pool:
    """Records what would have been sent; answers 200 {}."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method: str, url: str, **kw: Any) -> Any:
        self.sent.append((method, url, kw["timeout"]))
        return type("Response", (), {"status": 200, "data": b"{}"})()


def door(pool: Pool) -> kube.Kube:
    return kube.Kube("https://127.0.0.1:1", pool, lambda: None, None)


def test_a_term_lasts_the_renew_deadline_after_the_renewal_was_sent() -> None:
    clock = Clock()
    term = election.Term(door(Pool()), CONFIG, clock)
    assert term.remaining() < 0  # nothing renewed yet: no time at all
    term.renewed(sent_at=99.0)  # sent a second ago, answered now
    assert term.remaining() == pytest.approx(9.0)
    clock.now = 109.5
    assert term.remaining() < 0


def test_an_ended_term_is_never_extended_again() -> None:
    clock = Clock()
    term = election.Term(door(Pool()), CONFIG, clock)
    term.renewed(100.0)
    term.end("the Lease was held by 'x'")
    term.renewed(100.0)  # a renewal that was in flight answers late
    assert term.remaining() < 0 and term.stop.is_set() and term.why.endswith("'x'")


def test_no_request_is_sent_once_the_term_is_over() -> None:
    clock, pool = Clock(), Pool()
    term = election.Term(door(pool), CONFIG, clock)
    term.renewed(100.0)
    term.kube.patch("/api/v1/nodes/n", {})
    assert len(pool.sent) == 1
    clock.now = 111.0
    for call in (lambda: term.kube.patch("/api/v1/nodes/n", {}), lambda: term.kube.get("/x")):
        with pytest.raises(kube.Fenced, match="the leadership has run out"):
            call()
    assert len(pool.sent) == 1


def test_a_write_needs_the_margin_a_read_does_not() -> None:
    clock, pool = Clock(), Pool()
    term = election.Term(door(pool), CONFIG, clock)  # write margin: half a retry period (1 s)
    term.renewed(100.0)
    clock.now = 109.5  # half a second left
    with pytest.raises(kube.Fenced):
        term.kube.create("/api/v1/namespaces/default/events", {})
    term.kube.get("/x")
    assert [m for m, _, _ in pool.sent] == ["GET"]


def test_each_request_times_out_with_the_time_left() -> None:
    pool = Pool()
    left = 3.5
    door(pool).within(lambda: left, "the test").get("/x")
    timeout = pool.sent[0][2]
    assert timeout.total == pytest.approx(3.5)
    assert timeout.connect_timeout == pytest.approx(3.5)
    assert timeout.read_timeout == pytest.approx(3.5)
    door(pool).get("/y")  # unbounded: the door's usual 5 s / 30 s
    assert (pool.sent[1][2].connect_timeout, pool.sent[1][2].read_timeout) == (5.0, 30.0)
