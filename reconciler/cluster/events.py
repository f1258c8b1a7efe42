"""Events through the door (``events.k8s.io/v1``), so ``kubectl describe`` and ``kubectl get
events`` show what kucero did and why. ``reason`` is a str-enum value (``NearingExpiry``,
``InvalidPolicy``), the same word as in logs and metric labels.

Repeats are aggregated as client-go's events recorder does (``k8s.io/client-go/tools/events``):
the first occurrence creates an Event; a repeat of the same Event (same regarding object, type,
action, reason, note, reporting controller and instance) within ``SERIES_SECONDS`` of the last
one patches that Event's ``series`` (``count``, ``lastObservedTime``) instead of creating
another object, so a node failing the same way every minute makes one Event with a growing
count, not one object a minute. Where we differ: the regarding object is matched without its
``resourceVersion`` (a Node's changes with every status write, so client-go would never
aggregate on one) and with the note (a different message is a different Event, as in the
legacy recorder); each repeat is patched at once rather than batched, as kucero's Events come
per pass, not per second. The memory of recent Events is per connection (one per process),
bounded (``CACHE_MAX``, oldest forgotten first); a patch that finds the Event gone (the API
server's Event TTL) creates it again with the series.

Edge cases: an Event about a cluster-scoped object (a Node) lives in ``default``, as the
kubelet's do; ``note`` is cut to the API's 1 kB limit; failing to record an Event never fails the
work it describes (``emit`` logs and returns None; ``record`` raises for a caller that keeps
owed Events).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.cluster import kube as kube_

log = logging.getLogger(__name__)

NOTE_MAX_BYTES = 1024  # the API rejects a longer note
CONTROLLER = "kucero.io/kucero"
NORMAL = "Normal"
WARNING = "Warning"
# client-go's finishTime: a repeat more than 6 minutes after the last one starts a new Event.
SERIES_SECONDS = 6 * 60.0
# Distinct Events remembered per process for aggregation; beyond it the oldest is forgotten
# (its next repeat creates a new Event: the cost of forgetting is one object, never a loss).
CACHE_MAX = 1024


def reference(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An ObjectReference to ``obj`` (as returned by the API)."""
    meta = obj.get("metadata", {})
    ref = {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj.get("kind", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    return {k: v for k, v in ref.items() if v}


def body(
    regarding: Mapping[str, Any],
    reason: str,
    note: str,
    type_: str = NORMAL,
    action: str = "Reconcile",
    instance: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    ref = reference(regarding)
    namespace = ref.get("namespace", "default")
    encoded = note.encode()
    if len(encoded) > NOTE_MAX_BYTES:
        note = encoded[: NOTE_MAX_BYTES - 3].decode(errors="ignore") + "..."
    stamp = _stamp(now)
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": f"{ref.get('name', 'kucero')}.{uuid.uuid4().hex[:16]}",
            "namespace": namespace,
        },
        "eventTime": stamp,
        "reportingController": CONTROLLER,
        "reportingInstance": (instance or os.environ.get("NODE_NAME") or socket.gethostname())[
            :128
        ],
        "action": action,
        "reason": str(reason),
        "note": note,
        "type": type_,
        "regarding": ref,
    }


def emit(
    kube: kube_.Kube,
    regarding: Mapping[str, Any],
    reason: str,
    note: str,
    type_: str = NORMAL,
    action: str = "Reconcile",
) -> dict[str, Any] | None:
    """Record an Event (or count a repeat); returns it, or None (logged) when the API refused
    it."""
    try:
        return record(kube, body(regarding, reason, note, type_, action))
    except kube_.KubeError as e:
        log.warning("could not record event %s %s: %s", reason, note[:200], e)
        return None


def record(kube: kube_.Kube, event: Mapping[str, Any]) -> dict[str, Any]:
    """Create ``event`` (a ``body``), or patch the series of the same Event recorded less than
    ``SERIES_SECONDS`` ago. Raises ``KubeError``; a failed write is not counted as recorded."""
    recorder = _recorders.get(kube)
    if recorder is None:
        recorder = _recorders.setdefault(kube, Recorder(kube))
    return recorder.record(event)


@dataclasses.dataclass
class _Seen:
    name: str  # the Event object that carries the series
    count: int  # occurrences so far, this one included
    last: float  # monotonic time of the last occurrence


class Recorder:
    """The aggregation memory of one connection. Thread-safe; API calls happen outside the
    lock (two threads recording the same new Event at once may both create it: one extra
    object, as with client-go)."""

    def __init__(self, kube: kube_.Kube, clock: Callable[[], float] = time.monotonic) -> None:
        self._kube, self._clock = kube, clock
        self._seen: dict[tuple[Any, ...], _Seen] = {}
        self._lock = threading.Lock()

    def record(self, event: Mapping[str, Any]) -> dict[str, Any]:
        key, now = _key(event), self._clock()
        namespace = event["metadata"]["namespace"]
        collection = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.last > SERIES_SECONDS:
                seen = None  # the series ended: a new Event, as client-go's finishSeries
            if seen is not None:
                seen.count, seen.last = seen.count + 1, now
                name, count = seen.name, seen.count
        if seen is None:
            created = self._kube.create(collection, event)
            self._remember(key, _Seen(created["metadata"]["name"], 1, now))
            return created
        series = {"count": count, "lastObservedTime": _stamp(None)}
        try:
            return self._kube.patch(f"{collection}/{name}", {"series": series})
        except kube_.NotFound:  # expired (the API server's Event TTL) or deleted
            created = self._kube.create(collection, {**event, "series": series})
            self._remember(key, _Seen(created["metadata"]["name"], count, now))
            return created

    def _remember(self, key: tuple[Any, ...], seen: _Seen) -> None:
        with self._lock:
            self._seen.pop(key, None)
            self._seen[key] = seen  # newest last: dicts keep insertion order
            while len(self._seen) > CACHE_MAX:
                del self._seen[next(iter(self._seen))]


# One Recorder per connection, made on first use and gone with the connection: the process's
# aggregation memory, as client-go keeps one per broadcaster.
_recorders: weakref.WeakKeyDictionary[kube_.Kube, Recorder] = weakref.WeakKeyDictionary()


def _key(event: Mapping[str, Any]) -> tuple[Any, ...]:
    regarding = {k: v for k, v in event["regarding"].items() if k != "resourceVersion"}
    return (
        event["metadata"]["namespace"],
        tuple(sorted(regarding.items())),
        event.get("type"),
        event.get("action"),
        event.get("reason"),
        event.get("note"),
        event.get("reportingController"),
        event.get("reportingInstance"),
    )


def _stamp(now: dt.datetime | None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def list_for(kube: kube_.Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    """Events regarding the object ``name`` in ``namespace`` (newest last)."""
    params = {"fieldSelector": f"regarding.name={name}"}
    items = kube.list(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", params)
    return sorted(items.get("items") or [], key=lambda e: e.get("eventTime") or "")
