"""The one door to the API server against the real kube-apiserver: errors mapped to ours,
Leases with resourceVersion preconditions, Events, and watches that keep going."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest

from reconciler.cluster import configmaps, events, kube, leases, nodes

pytestmark = pytest.mark.controlplane

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def _cm(namespace: str, name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "data": data or {}}


def test_missing_object_is_not_found(admin_kube: kube.Kube) -> None:
    with pytest.raises(kube.NotFound) as raised:
        admin_kube.get("/api/v1/nodes/no-such-node")
    assert raised.value.status == 404
    assert 'nodes "no-such-node" not found' in str(raised.value)


def test_creating_twice_and_stale_replace_are_conflicts(
    admin_kube: kube.Kube, namespace: str
) -> None:
    made = admin_kube.create(configmaps.collection(namespace), _cm(namespace, "c"))
    with pytest.raises(kube.Conflict) as exists:
        admin_kube.create(configmaps.collection(namespace), _cm(namespace, "c"))
    assert exists.value.reason == "AlreadyExists"
    admin_kube.replace(configmaps.path(namespace, "c"), {**made, "data": {"k": "1"}})
    with pytest.raises(kube.Conflict) as stale:  # ``made`` carries the old resourceVersion
        admin_kube.replace(configmaps.path(namespace, "c"), {**made, "data": {"k": "2"}})
    assert stale.value.status == 409 and stale.value.reason == "Conflict"


def test_user_without_rbac_is_forbidden(control_plane: Any, namespace: str) -> None:
    alice = kube.connect(str(control_plane.user_kubeconfig("alice")))
    with pytest.raises(kube.Forbidden) as raised:
        alice.list(configmaps.collection(namespace))
    assert raised.value.status == 403
    assert 'User "alice" cannot list resource "configmaps"' in str(raised.value)


def test_bad_token_is_unauthorized(control_plane: Any) -> None:
    stranger = kube.connect(str(control_plane.token_kubeconfig("stranger", "not-a-token")))
    with pytest.raises(kube.Unauthorized) as raised:
        stranger.get("/api/v1/nodes")
    assert raised.value.status == 401


def test_invalid_object_is_invalid(admin_kube: kube.Kube, namespace: str) -> None:
    with pytest.raises(kube.Invalid) as raised:
        admin_kube.create(configmaps.collection(namespace), _cm(namespace, "Not_A_Name"))
    assert raised.value.status == 422
    assert "metadata.name" in str(raised.value)


def test_no_server_is_unavailable_after_bounded_retries(control_plane: Any) -> None:
    door = kube.connect(str(control_plane.admin_kubeconfig))
    door.host = "https://127.0.0.1:1"  # nothing listens on port 1
    door.retry_attempts = 3
    began = time.monotonic()
    with pytest.raises(kube.Unavailable) as raised:
        door.get("/version")
    assert raised.value.status == 0 and "Connection refused" in str(raised.value)
    assert time.monotonic() - began < kube.RETRY_MAX_TOTAL_SECONDS


def test_node_annotations_are_merge_patched(admin_kube: kube.Kube, make_node: Any) -> None:
    make_node("door-1", labels={"pool": "a"}, annotations={"other": "kept"})
    nodes.patch_annotations(admin_kube, "door-1", {"kucero.io/desired": '{"a":1}'})
    node = nodes.get(admin_kube, "door-1")
    assert nodes.annotation(node, "kucero.io/desired") == '{"a":1}'
    assert nodes.annotation(node, "other") == "kept"
    nodes.patch_annotations(admin_kube, "door-1", {"kucero.io/desired": None})
    assert nodes.annotation(nodes.get(admin_kube, "door-1"), "kucero.io/desired") is None
    assert nodes.labels(node) == {"pool": "a"}


def test_lease_is_won_by_one_contender_only(admin_kube: kube.Kube, namespace: str) -> None:
    first = leases.acquire(admin_kube, namespace, "slot", "a", 15, NOW, None)
    with pytest.raises(kube.Conflict):  # b also saw no Lease, and lost the create
        leases.acquire(admin_kube, namespace, "slot", "b", 15, NOW, None)
    renewed = leases.renew(admin_kube, first, "a", 15, NOW + dt.timedelta(seconds=5))
    with pytest.raises(kube.Conflict):  # b read ``first`` before a renewed: stale
        leases.acquire(admin_kube, namespace, "slot", "b", 15, NOW, first)
    assert not leases.expired(renewed, NOW + dt.timedelta(seconds=19))
    assert leases.expired(renewed, NOW + dt.timedelta(seconds=20))
    leases.release(admin_kube, renewed, "a", NOW + dt.timedelta(seconds=6))
    released = leases.get(admin_kube, namespace, "slot")
    assert leases.holder(released) == "" and leases.expired(released, NOW)
    taken = leases.acquire(admin_kube, namespace, "slot", "b", 15, NOW, released)
    assert leases.holder(taken) == "b" and taken["spec"]["leaseTransitions"] == 1


def test_hand_edited_garbage_lease_reads_as_expired() -> None:
    garbage = {"spec": {"holderIdentity": "x", "leaseDurationSeconds": "ten", "renewTime": "?"}}
    assert leases.expired(garbage, NOW)
    assert leases.expired({"spec": {"holderIdentity": 7}}, NOW)


def test_event_regarding_a_configmap_is_listed(admin_kube: kube.Kube, namespace: str) -> None:
    made = admin_kube.create(configmaps.collection(namespace), _cm(namespace, "policy"))
    assert events.emit(admin_kube, made, "InvalidPolicy", "x" * 3000, events.WARNING)
    (event,) = events.list_for(admin_kube, namespace, "policy")
    assert event["reason"] == "InvalidPolicy" and event["type"] == "Warning"
    assert len(event["note"].encode()) <= events.NOTE_MAX_BYTES


def test_a_list_comes_in_pages_that_make_one_snapshot(
    admin_kube: kube.Kube, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"page-{i}" for i in range(7)]
    for name in names:
        admin_kube.create(configmaps.collection(namespace), _cm(namespace, name))
    requests: list[dict[str, str]] = []
    real = admin_kube._call

    def recording(method: str, path: str, params: Any, *args: Any, **kwargs: Any) -> Any:
        requests.append(dict(params or {}))
        return real(method, path, params, *args, **kwargs)

    monkeypatch.setattr(admin_kube, "_call", recording)
    listed = admin_kube.list(configmaps.collection(namespace), page_size=3)
    got = sorted(i["metadata"]["name"] for i in listed["items"])
    assert [n for n in got if n.startswith("page-")] == names  # (plus kube-root-ca.crt, maybe)
    assert len(requests) == (len(got) + 2) // 3 >= 3
    assert all(r["limit"] == "3" for r in requests) and "continue" in requests[-1]
    assert listed["metadata"]["resourceVersion"] and "continue" not in listed["metadata"]
    # the snapshot's resourceVersion is one a watch can start from: the next change comes
    # through it, and nothing listed comes again
    admin_kube.create(configmaps.collection(namespace), _cm(namespace, "after"))
    seen = admin_kube.watch(
        configmaps.collection(namespace), None, listed["metadata"]["resourceVersion"], 5
    )
    first = next(e for e in seen if e.type != "BOOKMARK" and e.obj["metadata"]["name"] != ROOT_CA)
    assert (first.type, first.obj["metadata"]["name"]) == ("ADDED", "after")


def test_an_expired_continue_token_lists_the_collection_whole(
    admin_kube: kube.Kube, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """etcd compacts a snapshot after about five minutes; its continue token then answers 410.
    The real server's 410 cannot be had in a test's time, so the second page stands for it."""
    for i in range(5):
        admin_kube.create(configmaps.collection(namespace), _cm(namespace, f"whole-{i}"))
    real = admin_kube._call
    asked: list[dict[str, str]] = []

    def expiring(method: str, path: str, params: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(dict(params or {}))
        if params and "continue" in params:
            raise kube.Gone("The provided continue parameter is too old")
        return real(method, path, params, *args, **kwargs)

    monkeypatch.setattr(admin_kube, "_call", expiring)
    listed = admin_kube.list(configmaps.collection(namespace), page_size=2)
    names = {i["metadata"]["name"] for i in listed["items"]}
    assert {f"whole-{i}" for i in range(5)} <= names
    assert "limit" not in asked[-1] and len(asked) == 3  # page, expired page, whole list


# kube-controller-manager puts this ConfigMap into every namespace, at a moment of its choosing.
ROOT_CA = "kube-root-ca.crt"


class Recorder:
    """Collects what watch_forever delivers (but the controller manager's ConfigMap), for
    assertions from the test thread."""

    def __init__(self) -> None:
        self.lists: list[list[str]] = []
        self.events: list[tuple[str, str]] = []
        self.changed = threading.Condition()

    def on_list(self, items: list[dict[str, Any]]) -> None:
        with self.changed:
            self.lists.append(sorted(n for i in items if (n := i["metadata"]["name"]) != ROOT_CA))
            self.changed.notify_all()

    def on_event(self, event: kube.WatchEvent) -> None:
        if event.obj["metadata"]["name"] == ROOT_CA:
            return
        with self.changed:
            self.events.append((event.type, event.obj["metadata"]["name"]))
            self.changed.notify_all()

    def wait_for(self, condition: Any, timeout: float = 30) -> None:
        with self.changed:
            assert self.changed.wait_for(condition, timeout), (self.lists, self.events)


def start_watch(door: kube.Kube, path: str, recorder: Recorder) -> tuple[threading.Event, Any]:
    stop = threading.Event()
    thread = threading.Thread(
        target=door.watch_forever,
        args=(path, None, recorder.on_event, stop, recorder.on_list),
        daemon=True,
    )
    thread.start()
    return stop, thread


def test_watch_delivers_changes_and_stops_at_once(admin_kube: kube.Kube, namespace: str) -> None:
    admin_kube.create(configmaps.collection(namespace), _cm(namespace, "before"))
    recorder = Recorder()
    stop, thread = start_watch(admin_kube, configmaps.collection(namespace), recorder)
    try:
        recorder.wait_for(lambda: recorder.lists == [["before"]])
        made = admin_kube.create(configmaps.collection(namespace), _cm(namespace, "after"))
        admin_kube.replace(configmaps.path(namespace, "after"), {**made, "data": {"k": "v"}})
        admin_kube.delete(configmaps.path(namespace, "before"))
        expected = [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "before")]
        recorder.wait_for(lambda: recorder.events == expected)
    except BaseException:
        stop.set()
        raise
    began = time.monotonic()
    stop.set()  # the watch is blocked in a read with a 30-minute server timeout
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - began < 5
