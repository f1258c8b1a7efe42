"""What the node daemon keeps to tell the cluster later is bounded: the Events it owes while
the API server does not answer (they once grew without end on a node cut off for days), and
the published-CA refusals it remembers having told.

The door is kucero's own (``reconciler.cluster.kube.Kube``) over a pool that records what it
is sent (the real API server's side of Events: tests/integration/test_events.py)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from reconciler.cluster import kube
from reconciler.decide import policy
from reconciler.model import actions
from reconciler.run import node_report, once

HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


class Recording:
    """A pool that takes every request and answers it as the API server would a create."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kw: Any) -> Any:
        body = json.loads(kw.get("body") or "{}")
        self.sent.append(body)
        answer = {**body, "metadata": {**body.get("metadata", {}), "name": f"e{len(self.sent)}"}}
        return type("Response", (), {"status": 201, "data": json.dumps(answer).encode()})()


def test_owed_events_are_bounded_and_the_drop_is_told_first_when_the_api_answers() -> None:
    reporter = node_report.Reporter(None, "n1")  # owing sends nothing: as if the API were down
    for i in range(node_report.MAX_OWED * 10):
        reporter.owe("PassFailed", f"pass {i}: the API server did not answer")
    assert len(reporter._owed) == node_report.MAX_OWED
    assert reporter.pending

    pool = Recording()
    reporter._kube = kube.Kube("https://127.0.0.1:1", pool, lambda: None, None)
    reporter.flush()

    notes = [(e["reason"], e["note"]) for e in pool.sent]
    assert len(notes) == node_report.MAX_OWED + 1
    assert notes[0][0] == "EventsDropped" and notes[0][1].startswith(
        f"{node_report.MAX_OWED * 9} older Event(s)"
    )
    first_kept = node_report.MAX_OWED * 9
    assert notes[1][1].startswith(f"pass {first_kept}:")  # the newest are what was kept
    assert notes[-1][1].startswith(f"pass {node_report.MAX_OWED * 10 - 1}:")
    assert not reporter.pending


def test_remembered_ca_refusals_are_bounded_and_each_new_content_is_told_once() -> None:
    """Whoever can write kucero-ca can make every node refuse a new garbage value each
    minute; the node tells each once, and remembers a bounded number of them."""
    pool = Recording()
    reporter = node_report.Reporter(
        kube.Kube("https://127.0.0.1:1", pool, lambda: None, None), "n1"
    )
    spec = policy.resolve(policy.load(HEAD), {})
    for i in range(node_report.MAX_CA_REFUSED * 5):
        detail = f"ConfigMap ns/kucero-ca: ca refused (Unparseable): garbage {i}; nothing written"
        refusal = actions.Finding("ca", actions.Reason.CA_REFUSED, actions.Severity.ERROR, detail)
        after = actions.Plan((), (refusal,))
        for _ in range(2):  # the same content refused again on the next pass: not told again
            reporter.after_pass(
                once.PassResult(spec, (), actions.Plan((), ()), (), after), None, NOW
            )
        assert len(reporter.ca_refused) <= node_report.MAX_CA_REFUSED
    told = [e["note"] for e in pool.sent if e.get("reason") == "CARefused"]
    assert len(told) == len(set(told)) == node_report.MAX_CA_REFUSED * 5
