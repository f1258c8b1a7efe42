"""coordination.k8s.io/v1 Leases through the door: acquire, renew, release with
resourceVersion preconditions, so two contenders can never both win.

Every write here is a create (``Conflict`` when someone made it first) or a replace carrying the
resourceVersion that was read (``Conflict`` when someone changed it since). Callers decide from
what they observed whether a Lease is free; the helpers only refuse to write over a change they
did not see. ``release`` does what client-go's ReleaseOnCancel does: empty holder, a one-second
duration, so a standby takes over at its next try instead of waiting out the lease.

A Lease edited by hand to garbage (a missing or non-numeric ``leaseDurationSeconds``, an
unparsable ``renewTime``) reads as expired: ``expired`` says so rather than raising.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

from reconciler.cluster import kube as kube_

API = "/apis/coordination.k8s.io/v1"


def collection(namespace: str) -> str:
    return f"{API}/namespaces/{namespace}/leases"


def path(namespace: str, name: str) -> str:
    return f"{collection(namespace)}/{name}"


def micro_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: object) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def spec(lease: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict((lease or {}).get("spec") or {})


def holder(lease: Mapping[str, Any] | None) -> str:
    value = spec(lease).get("holderIdentity")
    return value if isinstance(value, str) else ""


def duration_seconds(lease: Mapping[str, Any] | None) -> int:
    value = spec(lease).get("leaseDurationSeconds")
    return value if isinstance(value, int) and value > 0 else 0


def expired(lease: Mapping[str, Any] | None, now: dt.datetime) -> bool:
    """No holder, or its renewTime + leaseDurationSeconds is past (by ``now``, wall clock),
    or the Lease is garbage. Clock skew between nodes shifts this: callers that can, also
    require the Lease to have stayed unchanged for a lease duration on their own clock."""
    renewed = parse_time(spec(lease).get("renewTime"))
    seconds = duration_seconds(lease)
    if not holder(lease) or renewed is None or seconds == 0:
        return True
    return renewed + dt.timedelta(seconds=seconds) <= now


def get(kube: kube_.Kube, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return kube.get(path(namespace, name))
    except kube_.NotFound:
        return None


def acquire(
    kube: kube_.Kube,
    namespace: str,
    name: str,
    identity: str,
    seconds: int,
    now: dt.datetime,
    current: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Make ``identity`` the holder. ``current`` is the Lease as read (None: it did not exist);
    raises ``Conflict`` when the Lease changed since (someone else was faster)."""
    stamp = micro_time(now)
    new_spec = {
        "holderIdentity": identity,
        "leaseDurationSeconds": seconds,
        "acquireTime": stamp,
        "renewTime": stamp,
    }
    if current is None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**new_spec, "leaseTransitions": 0},
        }
        return kube.create(collection(namespace), body)
    old = spec(current)
    transitions = old.get("leaseTransitions")
    transitions = transitions if isinstance(transitions, int) and transitions >= 0 else 0
    if holder(current) != identity:
        transitions += 1
    return _replace(kube, current, {**old, **new_spec, "leaseTransitions": transitions})


def renew(
    kube: kube_.Kube, current: Mapping[str, Any], identity: str, seconds: int, now: dt.datetime
) -> dict[str, Any]:
    """Renew a Lease ``identity`` holds; ``Conflict`` if it changed since ``current`` was read
    (then re-read: someone may have taken it)."""
    if holder(current) != identity:
        raise kube_.Conflict(f"lease {current['metadata']['name']} is held by {holder(current)!r}")
    new_spec = {**spec(current), "renewTime": micro_time(now), "leaseDurationSeconds": seconds}
    return _replace(kube, current, new_spec)


def release(
    kube: kube_.Kube, current: Mapping[str, Any], identity: str, now: dt.datetime
) -> dict[str, Any] | None:
    """Give the Lease up if ``identity`` still holds it (idempotent; a lost race is fine);
    returns the released Lease, or None when there was nothing of ours to release."""
    if holder(current) != identity:
        return None
    new_spec = {
        **spec(current),
        "holderIdentity": None,
        "leaseDurationSeconds": 1,
        "renewTime": micro_time(now),
    }
    # Conflict/NotFound: someone else changed it, so it is not ours to release any more
    with contextlib.suppress(kube_.Conflict, kube_.NotFound):
        return _replace(kube, current, new_spec)
    return None


def _replace(
    kube: kube_.Kube, current: Mapping[str, Any], new_spec: dict[str, Any]
) -> dict[str, Any]:
    meta = current["metadata"]
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "resourceVersion": meta["resourceVersion"],
        },
        "spec": {k: v for k, v in new_spec.items() if v is not None},
    }
    return kube.replace(path(meta["namespace"], meta["name"]), body)
