"""Reading and rewriting the client credentials of a node's kubeconfig files.

kubeadm's kubeconfigs (``admin.conf``, ``controller-manager.conf``, ...) embed the client
certificate and key as base64 (``client-certificate-data``/``client-key-data``); the
kubelet's, once fixed, references ``/var/lib/kubelet/pki/kubelet-client-current.pem``. We parse
them as plain YAML (the Kubernetes client's loader writes temp files for embedded data, see
docs/pitfalls.md) and rewrite only the user entry in use, keeping every other key and its order.

The user in use is the one of ``current-context``; with no current context, the only user.
Relative file references are relative to the kubeconfig's directory, as in client-go.
"""

from __future__ import annotations

import base64
import binascii
import copy
import posixpath
from typing import Any

from reconciler.decide import yamldoc
from reconciler.model import hoststate


class KubeconfigError(ValueError):
    """A kubeconfig we cannot read credentials from; the message says why."""


def parse(text: bytes | str) -> dict[str, Any]:
    try:
        doc = yamldoc.load(text)
    except yamldoc.YAMLDocError as e:
        raise KubeconfigError(f"invalid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise KubeconfigError("not a kubeconfig (expected a YAML mapping)")
    return doc


def credentials(doc: dict[str, Any], path: str) -> hoststate.Credentials:
    """The client credentials of the user in use; ``path`` is the kubeconfig's host path."""
    name, user = _user_in_use(doc)
    cert_data = _decode(user, "client-certificate-data", name)
    key_data = _decode(user, "client-key-data", name)
    base = posixpath.dirname(path)
    cert_file = _file(user, "client-certificate", base)
    key_file = _file(user, "client-key", base)
    if cert_data is None and cert_file is None:
        raise KubeconfigError(f"user {name!r} has no client certificate")
    if key_data is None and key_file is None:
        raise KubeconfigError(f"user {name!r} has no client key")
    return hoststate.Credentials(name, cert_data, key_data, cert_file, key_file)


def with_embedded(
    doc: dict[str, Any], user: str, cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None = None
) -> bytes:
    """``embedded``, dumped."""
    return dump(embedded(doc, user, cert_pem, key_pem, ca_pem))


def embedded(
    doc: dict[str, Any], user: str, cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None = None
) -> dict[str, Any]:
    """The kubeconfig with ``user``'s certificate and key embedded as new data (a copy).

    With ``ca_pem``, the current context's cluster gets it as ``certificate-authority-data``,
    as ``kubeadm certs renew`` refreshes it from the CA on disk (a kubeconfig made before a CA
    change would otherwise keep trusting the old one). A cluster that names a
    ``certificate-authority`` file is left alone: setting both is invalid for client-go.
    """

    def edit(entry: dict[str, Any]) -> None:
        entry["client-certificate-data"] = base64.b64encode(cert_pem).decode()
        entry["client-key-data"] = base64.b64encode(key_pem).decode()

    out = _edited_user(doc, user, edit)
    if ca_pem is not None:
        cluster = _cluster_in_use(out)
        if cluster is not None and not cluster.get("certificate-authority"):
            cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return out


def with_file_references(doc: dict[str, Any], user: str, cert_file: str, key_file: str) -> bytes:
    """The kubeconfig with ``user`` pointing at files instead of embedded data."""

    def edit(entry: dict[str, Any]) -> None:
        entry.pop("client-certificate-data", None)
        entry.pop("client-key-data", None)
        entry["client-certificate"] = cert_file
        entry["client-key"] = key_file

    return dump(_edited_user(doc, user, edit))


def dump(doc: dict[str, Any]) -> bytes:
    return yamldoc.dump(doc).encode()


def _edited_user(doc: dict[str, Any], user: str, edit: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for entry in _list(out, "users"):
        if isinstance(entry, dict) and entry.get("name") == user:
            if not isinstance(entry.get("user"), dict):
                entry["user"] = {}
            edit(entry["user"])
            return out
    raise KubeconfigError(f"user {user!r} not found")


def _cluster_in_use(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The ``cluster`` mapping of the current context (kubeadm's rule), or the only cluster
    when there is no current context; None when there is none to update."""
    clusters = [c for c in _list_or_none(doc, "clusters") if isinstance(c, dict)]
    current = doc.get("current-context")
    if current:
        contexts = [c for c in _list_or_none(doc, "contexts") if isinstance(c, dict)]
        context = next((c.get("context") for c in contexts if c.get("name") == current), None)
        wanted = context.get("cluster") if isinstance(context, dict) else None
        clusters = [c for c in clusters if c.get("name") == wanted]
    if len(clusters) != 1 or not isinstance(clusters[0].get("cluster"), dict):
        return None
    return clusters[0]["cluster"]  # type: ignore[no-any-return]


def _user_in_use(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    users = [u for u in _list(doc, "users") if isinstance(u, dict) and "name" in u]
    if not users:
        raise KubeconfigError("no users")
    current = doc.get("current-context")
    if current:
        if not isinstance(current, str):
            raise KubeconfigError("current-context is not a string")
        # a list, not a dict by name: a name may be anything YAML allows, a list included
        named = [
            c for c in _list(doc, "contexts") if isinstance(c, dict) and c.get("name") == current
        ]
        if not named:
            raise KubeconfigError(f"current-context {current!r} is not among the contexts")
        context = named[0].get("context")
        if not isinstance(context, dict):
            raise KubeconfigError(f"context {current!r} is not a mapping")
        wanted = context.get("user")
        matches = [u for u in users if u["name"] == wanted]
        if not matches:
            raise KubeconfigError(f"context {current!r} names user {wanted!r}, which is absent")
        chosen = matches[0]
    elif len(users) == 1:
        chosen = users[0]
    else:
        raise KubeconfigError("no current-context and several users")
    entry = chosen.get("user")
    if not isinstance(entry, dict):
        raise KubeconfigError(f"user {chosen['name']!r} has no credentials")
    return str(chosen["name"]), entry


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key) or []
    if not isinstance(value, list):
        raise KubeconfigError(f"{key} is not a list")
    return value


def _list_or_none(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    return value if isinstance(value, list) else []


def _decode(user: dict[str, Any], field: str, name: str) -> bytes | None:
    value = user.get(field)
    if value is None:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as e:
        raise KubeconfigError(f"user {name!r}: {field} is not valid base64") from e


def _file(user: dict[str, Any], field: str, base: str) -> str | None:
    value = user.get(field)
    if not value:
        return None
    return posixpath.normpath(posixpath.join(base, str(value)))
