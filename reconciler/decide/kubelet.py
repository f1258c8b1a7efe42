"""The kubelet's certificate configuration: what to repair, decided from values.

Two repairs, both from the original kucero:

* ``kubelet.conf`` made by kubeadm < 1.17 embeds the kubelet's first client certificate, which
  the kubelet never rotates in place. Pointing ``client-certificate``/``client-key`` at
  ``kubelet-client-current.pem`` (the rotated pair) fixes it, but only when that file holds a
  valid certificate for this very node: otherwise the repair would lock the kubelet out.
* ``config.yaml`` gets ``rotateCertificates`` and ``serverTLSBootstrap`` as the policy says. The
  edit is textual (one line replaced or appended) so comments and formatting survive, and then
  checked by parsing: if the result does not mean "the old document plus our two fields", we
  fall back to a full YAML dump of exactly that.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml
from cryptography import x509

from reconciler.decide import pki

NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"


def desired_config(rotate_client: bool, rotate_server: bool) -> dict[str, bool]:
    return {"rotateCertificates": rotate_client, "serverTLSBootstrap": rotate_server}


def config_changes(config: Mapping[str, Any], desired: Mapping[str, bool]) -> dict[str, bool]:
    """The fields of ``desired`` that ``config`` does not already have (unset counts as
    different: the kubelet's defaults are false for both)."""
    return {k: v for k, v in desired.items() if config.get(k) is not v}


def client_cert_problem(
    cert: x509.Certificate | None,
    key_matches: bool,
    node_name: str | None,
    now: dt.datetime,
    issued_by_ca: bool = True,
) -> str | None:
    """Why ``kubelet-client-current.pem`` must not be used, or None when it can be."""
    if cert is None:
        return "holds no certificate"
    if not key_matches:
        return "its certificate does not match its key"
    if not issued_by_ca:
        return "its certificate is not signed by the cluster CA (/etc/kubernetes/pki/ca.crt)"
    if now < cert.not_valid_before_utc:
        return f"its certificate is not valid before {cert.not_valid_before_utc.isoformat()}"
    if now >= cert.not_valid_after_utc:
        return f"its certificate expired at {cert.not_valid_after_utc.isoformat()}"
    cn = pki.common_name(cert)
    if node_name is None:
        return "the node name is unknown (set --node-name or NODE_NAME)"
    if cn != NODE_PREFIX + node_name:
        return f"its certificate is for {cn!r}, not {NODE_PREFIX + node_name!r}"
    if NODES_GROUP not in pki.organizations(cert):
        return f"its certificate is not in group {NODES_GROUP!r}"
    return None


def node_name_from(cert: x509.Certificate | None) -> str | None:
    cn = pki.common_name(cert) if cert is not None else None
    if cn and cn.startswith(NODE_PREFIX):
        return cn[len(NODE_PREFIX) :]
    return None


def set_fields(text: str, changes: Mapping[str, bool]) -> str:
    """``text`` with top-level boolean ``changes`` applied, keeping every other byte."""
    original = _load_mapping(text)
    edited = text
    for key, value in changes.items():
        line = f"{key}: {'true' if value else 'false'}"
        pattern = re.compile(rf"^{re.escape(key)}[ \t]*:[^\n#]*?(?P<comment>[ \t]+#[^\n]*)?$", re.M)
        if pattern.search(edited):
            edited = pattern.sub(_keep_comment(line), edited, count=1)
        else:
            edited = edited + ("" if edited.endswith("\n") or not edited else "\n") + line + "\n"
    wanted = {**original, **changes}
    try:
        if _load_mapping(edited) == wanted:
            return edited
    except ValueError:
        pass
    return yaml.safe_dump(wanted, sort_keys=False, default_flow_style=False)


def _keep_comment(line: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return line + (match.group("comment") or "")

    return replace


def parse_config(text: str | bytes) -> dict[str, Any]:
    return _load_mapping(text)


def _load_mapping(text: str | bytes) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"invalid YAML: {' '.join(str(e).split())}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError("not a KubeletConfiguration (expected a YAML mapping)")
    return doc
