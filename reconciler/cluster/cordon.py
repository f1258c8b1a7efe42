"""Cordon and uncordon a Node around a rotation (``rollout.cordon`` / ``rollout.drain``).

The original kucero cordoned and drained a node before touching it; this one does so only when
the policy asks. A node an administrator had already cordoned stays cordoned: kucero marks the
cordons it made itself with the annotation ``kucero.io/cordoned`` (set in the same patch as
``spec.unschedulable``, so a crash cannot separate them) and uncordons only those. Both
functions are idempotent.

Drain evicts the node's pods through the Eviction API (PodDisruptionBudgets apply), except
DaemonSet pods and static (mirror) pods, which a drain cannot move. It waits at most
``timeout`` for them to go and reports what is left rather than failing the rotation; it
stops at once (between two evictions, or in its wait) when the pass is asked to stop: the
wait is ``healthTimeout`` (5 minutes by default), longer than a pod's termination grace, and a
SIGTERM once went unheard for all of it, so the kubelet's SIGKILL cut the pass short. Its
``kube`` is the node's kubelet (run/turn.py): it lists only with ``spec.nodeName=<node>``, the
one list of Pods the Node authorizer grants a kubelet, and evicts only pods of that list, the
ones NodeRestriction lets a kubelet evict.

The patches of ``cordon``/``uncordon`` are exactly what kustomize/base/roles/node-writes.yaml
lets a node's ServiceAccount write on its own Node: ``spec.unschedulable`` and the mark,
together, and the mark only on a Node nobody had cordoned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.cluster import kube as kube_
from reconciler.cluster import nodes

log = logging.getLogger(__name__)

MARK = "kucero.io/cordoned"
MIRROR = "kubernetes.io/config.mirror"
# How often the drain looks whether the evicted pods are gone.
POLL_SECONDS = 1.0
# ``wait(seconds) -> True when stopped early`` (``node.interrupt.Stop.wait``).
Wait = Callable[[float], bool]


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def cordon(kube: kube_.Kube, node_name: str) -> bool:
    """Cordon the node unless it already is; True if kucero made this cordon."""
    node = nodes.get(kube, node_name)
    if (node.get("spec") or {}).get("unschedulable"):
        if nodes.annotation(node, MARK) is None:
            log.info("%s was cordoned by someone else: it stays cordoned afterwards", node_name)
        return nodes.annotation(node, MARK) is not None
    body = {"metadata": {"annotations": {MARK: "true"}}, "spec": {"unschedulable": True}}
    kube.patch(nodes.path(node_name), body, "merge")
    log.info("cordoned %s for its rotation", node_name)
    return True


def uncordon(kube: kube_.Kube, node_name: str) -> None:
    """Uncordon the node only if kucero cordoned it."""
    node = nodes.get(kube, node_name)
    if nodes.annotation(node, MARK) is None:
        return
    body = {"metadata": {"annotations": {MARK: None}}, "spec": {"unschedulable": None}}
    kube.patch(nodes.path(node_name), body, "merge")
    log.info("uncordoned %s after its rotation", node_name)


def drain(kube: kube_.Kube, node_name: str, timeout: float, wait: Wait = _sleep) -> list[str]:
    """Evict the node's movable pods; returns ``namespace/name`` of those still there. Returns
    early, evicting nothing more, once ``wait`` says the pass is stopping (the node stays
    cordoned for the caller to lift or keep: a drain is never half-undone here)."""
    params = {"fieldSelector": f"spec.nodeName={node_name}"}
    for pod in _movable(kube.list("/api/v1/pods", params).get("items") or []):
        if wait(0):
            break
        meta = pod["metadata"]
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        }
        try:
            kube.create(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/eviction", body
            )
        except (kube_.NotFound, kube_.TooManyRequests) as e:  # gone, or a PDB says not now
            log.info("eviction of %s/%s: %s", meta["namespace"], meta["name"], e)
    deadline = time.monotonic() + timeout
    while True:
        left = _movable(kube.list("/api/v1/pods", params).get("items") or [])
        left = [p for p in left if not (p["metadata"].get("deletionTimestamp"))]
        remaining = deadline - time.monotonic()
        if not left or remaining <= 0 or wait(min(POLL_SECONDS, remaining)):
            return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in left]


def _movable(pods: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        owners = meta.get("ownerReferences") or []
        if MIRROR in (meta.get("annotations") or {}):
            continue
        if any(o.get("kind") == "DaemonSet" for o in owners):
            continue
        out.append(pod)
    return out
