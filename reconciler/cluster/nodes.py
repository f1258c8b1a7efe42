"""Nodes through the door: get, list, and annotations written with a merge patch.

A merge patch of ``metadata.annotations`` touches only the keys it names (``None`` removes one)
and needs no resourceVersion, so the controller's ``kucero.io/desired`` and the node's
``kucero.io/status`` never overwrite each other or anything else on the Node. Writing the value
already there is a no-op for the caller: compare first (``annotation``), patch only on change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.cluster import kube as kube_

PATH = "/api/v1/nodes"


def path(name: str) -> str:
    return f"{PATH}/{name}"


def get(kube: kube_.Kube, name: str) -> dict[str, Any]:
    """The Node; ``kube.NotFound`` if it does not exist."""
    return kube.get(path(name))


def list_all(kube: kube_.Kube, label_selector: str | None = None) -> list[dict[str, Any]]:
    params = {"labelSelector": label_selector} if label_selector else None
    return list(kube.list(PATH, params).get("items") or [])


def name(node: Mapping[str, Any]) -> str:
    return str(node["metadata"]["name"])


def labels(node: Mapping[str, Any]) -> dict[str, str]:
    return dict(node.get("metadata", {}).get("labels") or {})


def annotation(node: Mapping[str, Any], key: str) -> str | None:
    value = (node.get("metadata", {}).get("annotations") or {}).get(key)
    return None if value is None else str(value)


def patch_annotations(
    kube: kube_.Kube, node_name: str, annotations: Mapping[str, str | None]
) -> dict[str, Any]:
    """Set (or, for ``None``, remove) these annotations only; returns the patched Node."""
    body = {"metadata": {"annotations": dict(annotations)}}
    return kube.patch(path(node_name), body, "merge")


def patch_labels(
    kube: kube_.Kube, node_name: str, new_labels: Mapping[str, str | None]
) -> dict[str, Any]:
    return kube.patch(path(node_name), {"metadata": {"labels": dict(new_labels)}}, "merge")


def is_control_plane(node: Mapping[str, Any]) -> bool:
    return "node-role.kubernetes.io/control-plane" in labels(node)
