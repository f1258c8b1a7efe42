"""The CA ConfigMaps through the door: kucero's published CAs, and the cluster-level copies.

- ``kucero-ca`` in kucero's namespace: certificates and fingerprints only, never a key
  (``decide.capublished``). Written by the leader, read and watched by name by every node.
- ``cluster-info`` in ``kube-public``: the kubeconfig ``kubeadm join`` discovers the cluster
  with; kube-controller-manager's bootstrap signer re-signs it (``jws-kubeconfig-<token>``).
- ``kubeadm-config`` in ``kube-system``: kubeadm's ClusterConfiguration.
- ``kube-root-ca.crt`` in each namespace: kube-controller-manager's, read only.

Every update is a replace carrying the object's ``resourceVersion``: a concurrent writer (a
second leader during a hand-over, an operator) makes it ``Conflict`` instead of being
overwritten, and the caller reads again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.cluster import configmaps
from reconciler.cluster import kube as kube_
from reconciler.decide import capublished

CLUSTER_INFO = ("kube-public", "cluster-info")
KUBEADM_CONFIG = ("kube-system", "kubeadm-config")
ROOT_CA = "kube-root-ca.crt"


def read(kube: kube_.Kube, namespace: str) -> dict[str, Any] | None:
    """kucero's published CA ConfigMap, or None when there is none."""
    return configmaps.get(kube, namespace, capublished.NAME)


def write(
    kube: kube_.Kube,
    namespace: str,
    current: Mapping[str, Any] | None,
    data: Mapping[str, str],
) -> dict[str, Any]:
    """Make ``kucero-ca`` hold ``data``: create it when ``current`` is None (``Conflict`` if
    someone created it meanwhile), else replace ``current`` (``Conflict`` if it changed)."""
    body = _body(namespace, capublished.NAME, current, data)
    body["metadata"].setdefault("labels", {})["app.kubernetes.io/name"] = "kucero"
    if current is None:
        return kube.create(configmaps.collection(namespace), body)
    return kube.replace(configmaps.path(namespace, capublished.NAME), body)


def get(kube: kube_.Kube, where: tuple[str, str]) -> dict[str, Any] | None:
    return configmaps.get(kube, *where)


def update(kube: kube_.Kube, current: Mapping[str, Any], data: Mapping[str, str]) -> dict[str, Any]:
    """Replace an existing ConfigMap's ``data``, keeping everything else (``Conflict`` if it
    changed since ``current`` was read)."""
    meta = current.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    return kube.replace(configmaps.path(namespace, name), _body(namespace, name, current, data))


def _body(
    namespace: str, name: str, current: Mapping[str, Any] | None, data: Mapping[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if current is not None:
        old = current.get("metadata") or {}
        meta.update({k: old[k] for k in ("resourceVersion", "labels", "annotations") if k in old})
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
    if current is not None and "binaryData" in current:
        body["binaryData"] = current["binaryData"]
    body["data"] = dict(data)
    return body
