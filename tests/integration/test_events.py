"""Events are aggregated as client-go's recorder does, against the real API server: a repeat of
the same Event patches its ``series`` (count, lastObservedTime) instead of creating another
object; a different note, or a repeat after the series ended, is a new Event."""

from __future__ import annotations

from typing import Any

from reconciler.cluster import configmaps, events, kube
from reconciler.run import node_report


def _configmap(door: kube.Kube, namespace: str, name: str) -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}
    return door.create(configmaps.collection(namespace), body)


def _about(door: kube.Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return events.list_for(door, namespace, name)


def test_the_same_event_three_times_is_one_object_with_a_count_of_three(
    admin_kube: kube.Kube, namespace: str
) -> None:
    made = _configmap(admin_kube, namespace, "policy")
    for _ in range(3):
        assert events.emit(admin_kube, made, "InvalidPolicy", "bad field", events.WARNING)
    (event,) = _about(admin_kube, namespace, "policy")
    assert event["series"]["count"] == 3
    assert event["series"]["lastObservedTime"] >= event["eventTime"]


def test_another_note_or_reason_is_another_event(admin_kube: kube.Kube, namespace: str) -> None:
    made = _configmap(admin_kube, namespace, "policy")
    events.emit(admin_kube, made, "InvalidPolicy", "first", events.WARNING)
    events.emit(admin_kube, made, "InvalidPolicy", "second", events.WARNING)
    events.emit(admin_kube, made, "PolicyApplied", "first")
    found = _about(admin_kube, namespace, "policy")
    assert len(found) == 3 and not any("series" in e for e in found)


def test_a_repeat_after_the_series_ended_is_a_new_event(
    admin_kube: kube.Kube, namespace: str
) -> None:
    made = _configmap(admin_kube, namespace, "policy")
    now = [1000.0]
    recorder = events.Recorder(admin_kube, clock=lambda: now[0])
    event = events.body(made, "InvalidPolicy", "bad", events.WARNING)
    recorder.record(event)
    now[0] += events.SERIES_SECONDS / 2
    recorder.record(events.body(made, "InvalidPolicy", "bad", events.WARNING))
    now[0] += events.SERIES_SECONDS + 1
    recorder.record(events.body(made, "InvalidPolicy", "bad", events.WARNING))
    found = _about(admin_kube, namespace, "policy")
    assert sorted(e.get("series", {}).get("count", 1) for e in found) == [1, 2]


def test_a_repeat_of_an_event_deleted_meanwhile_recreates_it_with_its_count(
    admin_kube: kube.Kube, namespace: str
) -> None:
    made = _configmap(admin_kube, namespace, "policy")
    recorder = events.Recorder(admin_kube)
    first = recorder.record(events.body(made, "InvalidPolicy", "bad", events.WARNING))
    admin_kube.delete(
        f"/apis/events.k8s.io/v1/namespaces/{namespace}/events/{first['metadata']['name']}"
    )
    recorder.record(events.body(made, "InvalidPolicy", "bad", events.WARNING))
    (event,) = _about(admin_kube, namespace, "policy")
    assert event["series"]["count"] == 2


def test_a_node_failing_the_same_way_every_pass_makes_one_event(
    admin_kube: kube.Kube, make_node: Any
) -> None:
    """The node daemon's Events (node_report) go through the same aggregation."""
    node = make_node("events-node-1")
    reporter = node_report.Reporter(admin_kube, "events-node-1")
    reporter.seen(None, node.metadata.uid)
    for _ in range(4):
        reporter.owe("PassFailed", "cannot read /etc/kubernetes/pki/ca.crt", events.WARNING)
        reporter.flush()
    assert not reporter.pending
    found = [
        e for e in _about(admin_kube, "default", "events-node-1") if e["reason"] == "PassFailed"
    ]
    assert len(found) == 1 and found[0]["series"]["count"] == 4
    assert found[0]["regarding"]["kind"] == "Node"
