"""ConfigMaps through the door: the policy ConfigMap is read by name and watched by a field
selector on its name (one object, not the namespace's every ConfigMap)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.cluster import kube as kube_


def collection(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


def path(namespace: str, name: str) -> str:
    return f"{collection(namespace)}/{name}"


def parse_ref(ref: str, default_namespace: str = "kube-system") -> tuple[str, str]:
    """``namespace/name`` (or a bare ``name`` in ``default_namespace``) -> (namespace, name)."""
    namespace, sep, name = ref.partition("/")
    if not sep:
        return default_namespace, namespace
    if not namespace or not name or "/" in name:
        raise ValueError(f"{ref!r} is not namespace/name")
    return namespace, name


def get(kube: kube_.Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The ConfigMap, or None when it does not exist."""
    try:
        return kube.get(path(namespace, name))
    except kube_.NotFound:
        return None


def watch_params(name: str) -> dict[str, str]:
    return {"fieldSelector": f"metadata.name={name}"}


def create_or_replace(
    kube: kube_.Kube, namespace: str, name: str, data: Mapping[str, str]
) -> dict[str, Any]:
    """Make the ConfigMap hold exactly ``data`` (idempotent)."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }
    try:
        return kube.create(collection(namespace), body)
    except kube_.Conflict:
        return kube.replace(path(namespace, name), body)
