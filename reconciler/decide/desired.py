"""The ``kucero.io/desired`` annotation: encoding (controller) and decoding (node).

The value is compact JSON ``{"revision": ..., "override": ..., "spec": {...}}`` where ``spec``
is policy-shaped (``policy.spec_document``). Decoding validates the spec with the same schema as
a policy, so a hand-edited or truncated annotation is refused with a message naming the field,
never half-applied: the node keeps its last good desired state and reports ``Failed`` with this
message. Pure.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from reconciler.decide import policy
from reconciler.model import nodespec

ANNOTATION = "kucero.io/desired"
_MAX_REVISION = 128


class DesiredError(ValueError):
    """The annotation cannot be used; the message says why in one line."""


def encode(spec: nodespec.NodeSpec) -> str:
    return json.dumps(policy.spec_document(spec), sort_keys=True, separators=(",", ":"))


def decode(text: str | None) -> nodespec.NodeSpec:
    """The node spec in an annotation value; ``DesiredError`` names what is wrong."""
    if text is None or not text.strip():
        raise DesiredError(f"{ANNOTATION} is not set (is `kucero controller` running?)")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise DesiredError(f"{ANNOTATION} is not JSON: {e}") from e
    if not isinstance(data, Mapping):
        raise DesiredError(f"{ANNOTATION} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {"revision", "override", "spec", "servingCSRApprover"}, key=repr)
    if unknown:
        raise DesiredError(f"{ANNOTATION}: unknown field(s) {', '.join(map(repr, unknown))}")
    revision = data.get("revision")
    if not isinstance(revision, str) or not 0 < len(revision) <= _MAX_REVISION:
        raise DesiredError(f"{ANNOTATION}.revision: must be a non-empty string, got {revision!r}")
    override = data.get("override")
    if override is not None and (
        not isinstance(override, int) or isinstance(override, bool) or override < 0
    ):
        raise DesiredError(f"{ANNOTATION}.override: must be null or an index, got {override!r}")
    spec = data.get("spec")
    if not isinstance(spec, Mapping):
        raise DesiredError(f"{ANNOTATION}.spec: must be an object, got {type(spec).__name__}")
    if "overrides" in spec:
        raise DesiredError(f"{ANNOTATION}.spec.overrides: a resolved spec has no overrides")
    document: dict[str, Any] = {"apiVersion": policy.API_VERSION, "kind": policy.KIND}
    document["spec"] = dict(spec)
    try:
        loaded = policy.from_mapping(document, ANNOTATION)
    except policy.PolicyError as e:
        raise DesiredError("; ".join(e.errors)) from e
    approver = data.get("servingCSRApprover", False)
    if not isinstance(approver, bool):
        raise DesiredError(f"{ANNOTATION}.servingCSRApprover: must be a boolean, got {approver!r}")
    # encode_for_node carries it as spec.csrSigner.enabled; spec_document as servingCSRApprover
    signer = spec.get("csrSigner")
    approver = approver or (isinstance(signer, Mapping) and signer.get("enabled") is True)
    resolved = policy.resolve(loaded, {}, serving_csr_approver=approver)
    return dataclasses.replace(resolved, revision=revision, override=override)


def encode_for_node(spec: nodespec.NodeSpec, csr_signer_active: bool) -> str:
    """``encode`` plus whether kucero's CSR signer approves this node's serving CSRs, carried
    as ``spec.csrSigner.enabled`` (a field the schema knows, so ``decode`` accepts it): the
    node switches ``serverTLSBootstrap`` on only when something will approve its CSRs."""
    document = policy.spec_document(spec)
    document["spec"]["csrSigner"] = {"enabled": csr_signer_active}
    return json.dumps(document, sort_keys=True, separators=(",", ":"))
