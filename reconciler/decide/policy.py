"""The rotation policy: load, validate, default, resolve per node, and hash.

A policy is one YAML document (``kucero.io/v1alpha1``, ``RotationPolicy``) kept in Git and
shipped in a ConfigMap. This module is pure: it takes text and returns values or a
``PolicyError`` whose lines each name the file and the field (``spec.kubeadm.renewBefore: '-3h'
is not a valid duration``), so an operator can fix a GitOps commit without reading our code.

Layers, lowest first: the schema's defaults, the seed flags of the original kucero
(``--renew-before`` and friends, given as ``defaults``), the document, and for a node the first
override whose ``nodeSelector`` matches its labels (merged over ``spec``; lists replace).
The revision is a hash of the normalised, defaulted document: two spellings of the same
policy (``720h`` and ``720h0m0s``, reordered keys) have the same revision.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import functools
import hashlib
import ipaddress
import json
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from reconciler.decide import duration, yamldoc
from reconciler.model import nodespec

if TYPE_CHECKING:
    import jsonschema

API_VERSION = "kucero.io/v1alpha1"
KIND = "RotationPolicy"
SUPPORTED_API_VERSIONS = (API_VERSION,)

# Fields whose value is a Go duration, by their path below ``spec``.
_DURATION_FIELDS = (
    ("checkInterval",),
    ("kubeadm", "renewBefore"),
    ("kubeadm", "certificateValidity"),
    ("kubeadm", "healthTimeout"),
    ("csrSigner", "certificateValidity"),
    ("ca", "renewBefore"),
    ("ca", "certificateValidity"),
)


class PolicyError(ValueError):
    """A policy that must not be acted on; ``errors`` has one line per problem."""

    def __init__(self, source: str, errors: Iterable[str]) -> None:
        self.source = source
        self.errors = [f"{source}: {e}" for e in errors]
        super().__init__("\n".join(self.errors))


@dataclasses.dataclass(frozen=True)
class Policy:
    """A validated policy with every default filled in."""

    document: Mapping[str, Any]  # normalised: defaults applied, durations canonical
    revision: str
    # The document as written (no defaults): which fields the policy itself sets. Not part of
    # the revision, which is about meaning.
    given: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.document["spec"]  # type: ignore[no-any-return]


@functools.cache
def schema() -> dict[str, Any]:
    """The JSON Schema of ``kucero.io/v1alpha1`` (shipped from the top-level ``schema/``).

    Read through the package's loader (``pkgutil``, not ``importlib.resources``, whose import
    costs every ``node --once`` about 6 ms, pathlib and tempfile with it)."""
    data = pkgutil.get_data("reconciler.schema", "kucero.io_v1alpha1.json")
    if data is None:  # a loader that cannot read package data: a broken installation
        raise RuntimeError("reconciler.schema: kucero.io_v1alpha1.json cannot be read")
    return json.loads(data.decode("utf-8"))  # type: ignore[no-any-return]


def load(
    text: str | bytes, source: str = "policy", defaults: Mapping[str, Any] | None = None
) -> Policy:
    """Parse, validate and default a policy document; raise ``PolicyError`` naming each field."""
    try:
        data = yamldoc.load(text, unique_keys=True, string_keys=True)
    except yamldoc.YAMLDocError as e:
        raise PolicyError(source, [f"invalid YAML: {e}"]) from e
    if not isinstance(data, dict):
        kind = "empty document" if data is None else type(data).__name__
        raise PolicyError(source, [f"the policy must be a YAML mapping, got {kind}"])
    return from_mapping(data, source, defaults)


def from_mapping(
    data: Mapping[str, Any], source: str = "policy", defaults: Mapping[str, Any] | None = None
) -> Policy:
    errors = validate(data)
    if errors:
        raise PolicyError(source, errors)
    document = _apply_defaults(data, defaults or {})
    # The seed flags' values are defaults, not the document: they meet the same schema (a
    # --polling-period of 1us is as much a busy loop as a checkInterval of 1us).
    errors = validate(document) if defaults else []
    errors = errors or _cross_field_errors(document)
    if errors:
        raise PolicyError(source, errors)
    normalised = _normalise(document)
    given = copy.deepcopy({k: v for k, v in data.items() if k != "metadata"})
    return Policy(document=normalised, revision=revision_of(normalised), given=given)


def validate(data: Mapping[str, Any]) -> list[str]:
    """Schema errors as ``field: message`` lines, sorted by field; empty when valid."""
    api_version = data.get("apiVersion")
    if isinstance(api_version, str) and api_version not in SUPPORTED_API_VERSIONS:
        return [
            f"apiVersion: unsupported apiVersion {api_version!r} "
            f"(supported: {', '.join(SUPPORTED_API_VERSIONS)})"
        ]
    return _schema_errors(data)


def resolve(
    policy: Policy, labels: Mapping[str, str], serving_csr_approver: bool = False
) -> nodespec.NodeSpec:
    """The node's spec: the first override whose selector matches ``labels``, over ``spec``.

    ``serving_csr_approver``: kucero's CSR signer approves this node's serving CSRs (cluster
    mode knows; offline it is False)."""
    spec = policy.spec
    merged: Mapping[str, Any] = spec
    matched: int | None = None
    for i, override in enumerate(spec["overrides"]):
        if selector_matches(override["nodeSelector"], labels):
            merged = _merge(spec, override["spec"])
            matched = i
            break
    given = [policy.given.get("spec") or {}]
    if matched is not None:
        given.append(policy.given["spec"]["overrides"][matched]["spec"])
    server_set = any("rotateServerCertificates" in (g.get("kubelet") or {}) for g in given)
    return dataclasses.replace(
        _node_spec(merged, policy.revision, matched, server_set),
        serving_csr_approver=serving_csr_approver,
    )


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics; an empty selector matches every node."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def revision_of(document: Mapping[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def default_document() -> dict[str, Any]:
    return _apply_defaults({"apiVersion": API_VERSION, "kind": KIND}, {})


# --- internals -------------------------------------------------------------------------


# A renewal restarts the control plane: a policy may not ask for one more often than this.
MIN_RENEWAL_GAP = 24 * duration.HOUR


def _check_duration(value: object) -> bool:
    """Positive and whole seconds: what validates is exactly what encodes. X.509 validity and
    Lease times count whole seconds, and ``NodeSpec`` keeps a ``timedelta`` (microseconds), so
    ``1h500ns`` would validate here and reach the node as ``1h0m0s``, another revision (and
    ``500ns`` as ``0s``, which every node refuses)."""
    if not isinstance(value, str):
        return True  # the type keyword reports it
    try:
        nanoseconds = duration.parse(value)
    except duration.DurationError:
        return False
    return nanoseconds > 0 and nanoseconds % duration.SECOND == 0


def _check_cidr(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return False
    return "/" in value


# The formats the schema uses (jsonschema's own format checks are not used).
_FORMATS: dict[str, Callable[[object], bool]] = {
    "go-duration": _check_duration,
    "cidr": _check_cidr,
}


def _duration_bound(below: bool) -> Callable[..., Iterator[Any]]:
    """The schema's ``minDuration``/``maxDuration`` keywords: a floor (or ceiling) on a Go
    duration, written as one (``"minDuration": "1m"``). JSON Schema compares numbers only; these
    keep each field's bound beside its description in the one schema file. A value that is not
    a duration is left to ``format``."""

    def check(validator: Any, bound: str, instance: object, subschema: Any) -> Iterator[Any]:
        import jsonschema

        if not isinstance(instance, str):
            return
        try:
            value = duration.parse(instance)
        except duration.DurationError:
            return
        limit = duration.parse(bound)
        if (value < limit) if below else (value > limit):
            word = "below the minimum" if below else "above the maximum"
            yield jsonschema.ValidationError(f"{instance!r} is {word} of {bound}")

    return check


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    """Built on first use: importing jsonschema costs about 45 ms (docs/pitfalls.md), paid by the
    commands that validate a policy (the daemons once). The format checker knows only the
    formats the schema uses, none of jsonschema's own; the validator knows the schema's two
    duration keywords."""
    import jsonschema

    formats = jsonschema.FormatChecker(formats=())
    for name, check in _FORMATS.items():
        formats.checks(name)(check)
    keywords = {"minDuration": _duration_bound(True), "maxDuration": _duration_bound(False)}
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, keywords)
    return cls(schema(), format_checker=formats)


def _schema_errors(data: Mapping[str, Any]) -> list[str]:
    """Every error jsonschema finds, worded by ``_describe``: all ``validate`` ever reports."""
    messages: dict[str, str] = {}
    for error in _validator().iter_errors(data):
        path, message = _describe(error)
        # A bad duration fails both its pattern and its format; report it once.
        messages.setdefault(path, message)
    return [f"{path}: {msg}" if path else msg for path, msg in sorted(messages.items())]


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    path = _path(error.absolute_path)
    value = error.instance
    schema_ = error.schema if isinstance(error.schema, dict) else {}
    is_duration = schema_.get("format") == "go-duration"
    if error.validator == "additionalProperties":
        # keys are strings in a loaded policy; from_mapping may be given anything
        extra = sorted(set(value) - set(schema_.get("properties", {})), key=repr)
        if "ca" in extra and _is_override_spec(error.absolute_path):
            others = [e for e in extra if e != "ca"]
            also = f"; unknown field{'s' if len(others) > 1 else ''} {', '.join(map(repr, others))}"
            return f"{path}.ca", _CA_IN_OVERRIDE + (also if others else "")
        return path, f"unknown field{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}"
    if error.validator == "not" and "renamedTo" in schema_:  # a csrSigner field renamed
        return path, f"renamed {schema_['renamedTo']}: {schema_['description']}"
    if error.validator in ("pattern", "format") and is_duration:
        if isinstance(value, str) and value.startswith("-"):
            return path, f"{value!r} is not a valid duration (must be positive)"
        try:
            parsed = duration.parse(value) if isinstance(value, str) else None
        except duration.DurationError:
            parsed = None
        if parsed == 0:
            return path, f"{value!r} is not a valid duration (must be positive)"
        if parsed is not None:
            return path, f"{value!r} is not a whole number of seconds (e.g. 90s, not 90.5s)"
        return path, f"{value!r} is not a valid duration (use Go syntax, e.g. 720h, 1h30m, 90s)"
    if error.validator in ("minDuration", "maxDuration"):
        return path, error.message
    if error.validator == "type" and is_duration:
        return (
            path,
            f"{value!r} is not a valid duration (write it as a string with a unit, e.g. 720h)",
        )
    if error.validator == "type":
        return path, f"{value!r} is not of type {error.validator_value}"
    if error.validator == "format" and schema_.get("format") == "cidr":
        return path, f"{value!r} is not a CIDR (e.g. 10.0.0.0/8)"
    if error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        return path, f"{value!r} is not one of: {allowed}"
    if error.validator == "const":
        return path, f"{value!r} must be {error.validator_value!r}"
    if error.validator == "required":
        return path, error.message
    return path, error.message


# One cluster, one CA: a per-node CA setting would have nodes disagree on what they trust.
_CA_IN_OVERRIDE = (
    "the CA settings apply to the whole cluster (one cluster, one CA) and cannot be "
    "overridden per node: move them to spec.ca"
)


def _is_override_spec(parts: Iterable[str | int]) -> bool:
    """Whether a schema path is ``spec.overrides[i].spec``."""
    p = list(parts)
    return len(p) == 4 and p[0] == "spec" and p[1] == "overrides" and p[3] == "spec"


def _path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _apply_defaults(data: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Schema defaults, then seed-flag ``defaults`` (shaped like ``spec``), then ``data``."""
    root = schema()
    base = {"spec": _schema_defaults(root["$defs"]["spec"], root)}
    base["spec"] = _merge(base["spec"], defaults)
    doc = _merge(base, {k: v for k, v in data.items() if k != "metadata"})
    return doc


def _schema_defaults(node: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = dict(root["$defs"][name])
        target.update({k: v for k, v in node.items() if k != "$ref"})
        node = target
    if "default" in node:
        return copy.deepcopy(node["default"])
    if node.get("type") == "object" and "properties" in node:
        out = {}
        for key, sub in node["properties"].items():
            value = _schema_defaults(sub, root)
            if value is not None:
                out[key] = value
        return out
    return None


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else (lists included) replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _cross_field_errors(document: Mapping[str, Any]) -> list[str]:
    spec = document["spec"]
    errors = _spec_errors(spec, "spec")
    for i, override in enumerate(spec["overrides"]):
        merged = _merge(spec, override["spec"])
        where = f"spec.overrides[{i}].spec"
        errors += [e for e in _spec_errors(merged, where) if e not in errors]
    return errors


def _spec_errors(spec: Mapping[str, Any], where: str) -> list[str]:
    errors = _validity_errors(spec, where) + _kubelet_errors(spec, where) + _ca_errors(spec, where)
    return errors + _csr_signer_errors(spec["csrSigner"], f"{where}.csrSigner")


def _ca_errors(spec: Mapping[str, Any], where: str) -> list[str]:
    """A renewed CA certificate must not be due again at once, nor before the next check."""
    ca = spec["ca"]
    before = duration.parse(ca["renewBefore"])
    validity = duration.parse(ca["certificateValidity"])
    if before >= validity:
        return [
            f"{where}.ca.renewBefore: {ca['renewBefore']} must be shorter than "
            f"ca.certificateValidity ({ca['certificateValidity']}), or every renewed CA "
            "certificate would be renewed again at once"
        ]
    if validity - before < duration.parse(spec["checkInterval"]):
        return [
            f"{where}.ca.certificateValidity: {ca['certificateValidity']} leaves "
            f"{duration.format(validity - before)} before a renewed CA is due again, less than "
            f"checkInterval ({spec['checkInterval']})"
        ]
    return []


def _validity_errors(spec: Mapping[str, Any], where: str) -> list[str]:
    kubeadm = spec["kubeadm"]
    before = duration.parse(kubeadm["renewBefore"])
    validity = duration.parse(kubeadm["certificateValidity"])
    interval = duration.parse(spec["checkInterval"])
    if before >= validity:
        return [
            f"{where}.kubeadm.renewBefore: {kubeadm['renewBefore']} must be shorter than "
            f"kubeadm.certificateValidity ({kubeadm['certificateValidity']}), or every "
            "renewed certificate would be renewed again at once"
        ]
    if validity - before < MIN_RENEWAL_GAP:
        return [
            f"{where}.kubeadm.certificateValidity: {kubeadm['certificateValidity']} leaves "
            f"{duration.format(validity - before)} before a renewed certificate is due again "
            f"(renewBefore {kubeadm['renewBefore']}); at least "
            f"{duration.format(MIN_RENEWAL_GAP)}: every renewal restarts the control plane"
        ]
    if validity - before < interval:
        # A renewed certificate would be due again before the next check: the node would
        # renew (and restart its control plane) on every pass, forever.
        return [
            f"{where}.kubeadm.certificateValidity: {kubeadm['certificateValidity']} leaves "
            f"{duration.format(validity - before)} before a renewed certificate is due again "
            f"(renewBefore {kubeadm['renewBefore']}), less than checkInterval "
            f"({spec['checkInterval']}): it would be renewed again on every pass"
        ]
    return []


def _kubelet_errors(spec: Mapping[str, Any], where: str) -> list[str]:
    kubelet = spec["kubelet"]
    if kubelet["fixKubeletConf"] and not kubelet["rotateClientCertificates"]:
        # fixKubeletConf points kubelet.conf at kubelet-client-current.pem, which only the
        # kubelet's own rotation renews: with rotation off the kubelet is locked out a year on.
        return [
            f"{where}.kubelet.rotateClientCertificates: false with kubelet.fixKubeletConf: "
            "true would point kubelet.conf at kubelet-client-current.pem and stop the kubelet "
            "renewing it (locked out when it expires); set fixKubeletConf: false or keep "
            "rotation on"
        ]
    return []


def _csr_signer_errors(signer: Mapping[str, Any], where: str) -> list[str]:
    """An allowed DNS suffix inside a zone no serving certificate may name (decide.reserved
    refuses it anyway): say so now rather than deny every request under it."""
    zones = {"svc", "localhost", signer["clusterDomain"].strip(".")}
    errors = []
    for i, suffix in enumerate(signer["allowedDNSSuffixes"]):
        name = suffix.lstrip(".")
        zone = next((z for z in sorted(zones) if name == z or name.endswith("." + z)), None)
        if zone:
            errors.append(
                f"{where}.allowedDNSSuffixes[{i}]: {suffix!r} is inside {zone!r}, a zone no "
                "serving certificate may name (the cluster's DNS, localhost)"
            )
    return errors


def _normalise(document: Mapping[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(dict(document))
    specs = [doc["spec"], *(o["spec"] for o in doc["spec"]["overrides"])]
    for spec in specs:
        for field_path in _DURATION_FIELDS:
            parent = spec
            for key in field_path[:-1]:
                parent = parent.get(key, {})
            if field_path[-1] in parent:
                parent[field_path[-1]] = duration.format(duration.parse(parent[field_path[-1]]))
    return doc


def _node_spec(
    spec: Mapping[str, Any], revision: str, override: int | None, server_set: bool = False
) -> nodespec.NodeSpec:
    k, kl = spec["kubeadm"], spec["kubelet"]
    return nodespec.NodeSpec(
        revision=revision,
        paused=spec["paused"],
        check_interval=duration.parse_timedelta(spec["checkInterval"]),
        kubeadm=nodespec.KubeadmSpec(
            enabled=k["enabled"],
            renew_before=duration.parse_timedelta(k["renewBefore"]),
            certificate_validity=duration.parse_timedelta(k["certificateValidity"]),
            certificates=tuple(k["certificates"]),
            restart=k["restart"],
            health_timeout=duration.parse_timedelta(k["healthTimeout"]),
            backup_retain=int(k["backup"]["retain"]),  # JSON Schema takes 2.0 as an integer
        ),
        kubelet=nodespec.KubeletSpec(
            fix_kubelet_conf=kl["fixKubeletConf"],
            rotate_client_certificates=kl["rotateClientCertificates"],
            rotate_server_certificates=kl["rotateServerCertificates"],
            restart=kl["restart"],
            rotate_server_certificates_set=server_set,
        ),
        override=override,
        rollout=nodespec.RolloutSpec(
            max_concurrent_nodes=spec["rollout"]["maxConcurrentNodes"],
            cordon=spec["rollout"]["cordon"],
            drain=spec["rollout"]["drain"],
        ),
        ca=nodespec.CASpec(
            mode=spec["ca"]["mode"],
            renew_before=duration.parse_timedelta(spec["ca"]["renewBefore"]),
            certificate_validity=duration.parse_timedelta(spec["ca"]["certificateValidity"]),
        ),
    )


def spec_document(node_spec: nodespec.NodeSpec) -> dict[str, Any]:
    """The resolved spec as a policy-shaped mapping (for the ``kucero.io/desired``
    annotation and ``--policy`` round trips)."""
    k, kl = node_spec.kubeadm, node_spec.kubelet
    kubelet: dict[str, Any] = {
        "fixKubeletConf": kl.fix_kubelet_conf,
        "rotateClientCertificates": kl.rotate_client_certificates,
        "rotateServerCertificates": kl.rotate_server_certificates,
        "restart": kl.restart,
    }
    if kl.rotate_server_certificates and not kl.rotate_server_certificates_set:
        # true by default only: written out it would read as the policy vouching for an
        # approver on the round trip
        del kubelet["rotateServerCertificates"]
    return {
        "revision": node_spec.revision,
        "override": node_spec.override,
        "servingCSRApprover": node_spec.serving_csr_approver,
        "spec": {
            "paused": node_spec.paused,
            "checkInterval": _fmt(node_spec.check_interval),
            "kubeadm": {
                "enabled": k.enabled,
                "renewBefore": _fmt(k.renew_before),
                "certificateValidity": _fmt(k.certificate_validity),
                "certificates": list(k.certificates),
                "restart": k.restart,
                "healthTimeout": _fmt(k.health_timeout),
                "backup": {"retain": k.backup_retain},
            },
            "kubelet": kubelet,
            "rollout": {
                "maxConcurrentNodes": node_spec.rollout.max_concurrent_nodes,
                "cordon": node_spec.rollout.cordon,
                "drain": node_spec.rollout.drain,
            },
            "ca": {
                "mode": node_spec.ca.mode,
                "renewBefore": _fmt(node_spec.ca.renew_before),
                "certificateValidity": _fmt(node_spec.ca.certificate_validity),
            },
        },
    }


def _fmt(delta: dt.timedelta) -> str:
    # integer division: ``delta / timedelta`` is a float, inexact above 2**53 microseconds
    return duration.format(delta // dt.timedelta(microseconds=1) * duration.MICROSECOND)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
