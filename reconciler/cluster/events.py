"""Events through the door (``events.k8s.io/v1``), so ``kubectl describe`` and ``kubectl get
events`` show what kucero did and why. ``reason`` is a str-enum value (``NearingExpiry``,
``InvalidPolicy``), the same word as in logs and metric labels.

Edge cases: an Event about a cluster-scoped object (a Node) lives in ``default``, as the
kubelet's do; ``note`` is cut to the API's 1 kB limit; failing to record an Event never fails the
work it describes (``emit`` logs and returns None).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from reconciler.cluster import kube as kube_

log = logging.getLogger(__name__)

NOTE_MAX_BYTES = 1024  # the API rejects a longer note
CONTROLLER = "kucero.io/kucero"
NORMAL = "Normal"
WARNING = "Warning"


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
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
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
    """Record an Event; returns it, or None (logged) when the API refused it."""
    event = body(regarding, reason, note, type_, action)
    namespace = event["metadata"]["namespace"]
    try:
        return kube.create(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", event)
    except kube_.KubeError as e:
        log.warning("could not record event %s %s: %s", reason, note[:200], e)
        return None


def list_for(kube: kube_.Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    """Events regarding the object ``name`` in ``namespace`` (newest last)."""
    params = {"fieldSelector": f"regarding.name={name}"}
    items = kube.list(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", params)
    return sorted(items.get("items") or [], key=lambda e: e.get("eventTime") or "")
