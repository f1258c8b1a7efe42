"""Should kucero approve this kubelet serving CSR? A pure verdict with a reason.

``check(csr, node, spec, refused, now)`` takes the CertificateSigningRequest as the API's JSON,
the requesting Node as JSON (``None`` when it does not exist), the ``csrSigner`` policy resolved
for that node, what no certificate may name (``decide.reserved.Refused``: built from the policy
and the leader's host), and the time, and returns a ``Verdict``: approve, deny, wait (the Node
may not be registered yet), leave (not ours, or ``onReject: ignore``) or resolve (the policy
wants the DNS names resolved: ask again with the answers), with a ``Reason`` that reads well in
a condition, an Event, a log line and a metric label. No I/O, clock or randomness.

Edge cases it exists for: the request is attacker-controlled bytes (every access to the parsed
request is guarded, ``cryptography`` raises ``InvalidVersion``, ``UnsupportedAlgorithm`` or
``ValueError`` lazily, see docs/pitfalls.md); the requestor is authenticated by the API server
but the subject and SANs are whatever the client wrote, and the Node's addresses are whatever
the node wrote (``decide.sans``: they narrow the policy's allowlist, never widen it); a missing
Node is a reason to wait, for a bounded time.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from reconciler.decide import csrreason, duration, policy, reserved, sans

SIGNER = "kubernetes.io/kubelet-serving"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
APPROVED_REASON = "KuceroApproved"
# The API server refuses expirationSeconds below 600; we never issue shorter either.
MIN_VALIDITY = dt.timedelta(minutes=10)
# A kubelet asks for its serving certificate once its Node is registered; a CSR whose Node is
# still missing after this long (since the CSR's creation) is denied rather than kept forever.
NODE_WAIT = dt.timedelta(minutes=10)
MIN_RSA_BITS = 2048
CURVES = ("secp256r1", "secp384r1")
USAGES = frozenset({"server auth", "digital signature"})
USAGES_RSA = USAGES | {"key encipherment"}

Decision = csrreason.Decision
Reason = csrreason.Reason


# What each passed check is called in the Approved condition's message.
PASSED = (
    "requestor is the node",
    "self-signature",
    "subject",
    "SANs in the policy's allowlist and none reserved",
    "no other extensions",
    "usages",
    "key",
)


@dataclasses.dataclass(frozen=True)
class SignerSpec:
    """``csrSigner`` of the policy, resolved for one node."""

    enabled: bool
    ca_cert_path: str
    ca_key_path: str
    certificate_validity: dt.timedelta
    on_reject: str  # deny | ignore
    allow: sans.Allowlist = dataclasses.field(default_factory=sans.Allowlist)
    service_cidrs: tuple[reserved.Network, ...] = ()
    cluster_domain: str = reserved.DEFAULT_CLUSTER_DOMAIN

    def refused(self, apiserver: reserved.APIServer | None = None) -> reserved.Refused:
        """What no certificate may name under this policy, plus the leader host's facts."""
        return reserved.refused(self.service_cidrs, self.cluster_domain, apiserver)


@dataclasses.dataclass(frozen=True)
class Request:
    """The parts of a parsed, self-signature-verified request that signing needs."""

    csr: x509.CertificateSigningRequest
    dns_names: tuple[str, ...]
    ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]


@dataclasses.dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: Reason
    message: str
    request: Request | None = None
    validity: dt.timedelta | None = None
    usages: frozenset[str] = frozenset()


def signer_spec(resolved: policy.Policy, labels: Mapping[str, str]) -> SignerSpec:
    """``csrSigner`` for a node with ``labels``: the first matching override over ``spec``."""
    fields = dict(resolved.spec["csrSigner"])
    for override in resolved.spec["overrides"]:
        if policy.selector_matches(override["nodeSelector"], labels):
            fields.update(override["spec"].get("csrSigner") or {})
            break
    return SignerSpec(
        enabled=fields["enabled"],
        ca_cert_path=fields["caCertPath"],
        ca_key_path=fields["caKeyPath"],
        certificate_validity=duration.parse_timedelta(fields["certificateValidity"]),
        on_reject=fields["onReject"],
        allow=sans.Allowlist(
            dns_suffixes=tuple(s.lstrip(".").lower() for s in fields["allowedDNSSuffixes"]),
            max_dns_names=fields["maxDNSNames"],
            ip_ranges=tuple(ipaddress.ip_network(r) for r in fields["allowedIPRanges"]),
            require_node_addresses=fields["requireNodeAddresses"],
            resolve_dns_names=fields["resolveDNSNames"],
        ),
        service_cidrs=tuple(ipaddress.ip_network(r) for r in fields["serviceCIDRs"]),
        cluster_domain=fields["clusterDomain"].lower().strip("."),
    )


def approves_kubelet(spec: SignerSpec, node: str, addresses: Sequence[Mapping[str, Any]]) -> bool:
    """Whether this policy would approve the serving CSR a kubelet with these Node addresses
    makes (the policy's own refusals only: the leader host's facts exempt the leader's node).
    The controller vouches for an approver only then, so ``serverTLSBootstrap`` is never
    switched on for a kubelet whose request would be denied."""
    return spec.enabled and sans.kubelet_covered(node, addresses, spec.allow, spec.refused())


def is_pending(csr: Mapping[str, Any]) -> bool:
    """No Approved, Denied or Failed condition and no certificate yet."""
    status = csr.get("status") or {}
    return not status.get("certificate") and not _condition_types(csr)


def approved_by_us_unsigned(csr: Mapping[str, Any]) -> bool:
    """Approved by kucero but not signed (a crash between the two): ours to finish."""
    status = csr.get("status") or {}
    if status.get("certificate"):
        return False
    conditions = status.get("conditions") or []
    types = _condition_types(csr)
    return types == {"Approved"} and any(
        c.get("type") == "Approved" and c.get("reason") == APPROVED_REASON for c in conditions
    )


def node_name(csr: Mapping[str, Any]) -> str | None:
    """``<n>`` of a ``system:node:<n>`` requestor, else None."""
    user = (csr.get("spec") or {}).get("username")
    if isinstance(user, str) and user.startswith(NODE_USER_PREFIX):
        name = user.removeprefix(NODE_USER_PREFIX)
        return name or None
    return None


def check(
    csr: Mapping[str, Any],
    node: Mapping[str, Any] | None,
    spec: SignerSpec,
    refused: reserved.Refused,
    now: dt.datetime,
    resolved: Mapping[str, Sequence[str]] | None = None,
) -> Verdict:
    """The verdict on ``csr``; see the module docstring. Never raises on any input.

    ``resolved``: with ``resolveDNSNames``, the addresses each requested DNS name (lowercased)
    resolved to; without it the verdict of a request that passes every other check is
    ``RESOLVE``, never ``APPROVE``."""
    verdict = _check(csr, node, spec, refused, now, resolved)
    if verdict.decision is Decision.DENY and spec.on_reject == "ignore":
        return dataclasses.replace(verdict, decision=Decision.LEAVE)
    return verdict


def _check(
    csr: Mapping[str, Any],
    node: Mapping[str, Any] | None,
    spec: SignerSpec,
    refused: reserved.Refused,
    now: dt.datetime,
    resolved: Mapping[str, Sequence[str]] | None,
) -> Verdict:
    body = csr.get("spec") if isinstance(csr.get("spec"), Mapping) else {}
    assert isinstance(body, Mapping)
    if body.get("signerName") != SIGNER:
        return Verdict(Decision.LEAVE, Reason.OTHER_SIGNER, f"signer {body.get('signerName')!r}")
    if not spec.enabled:
        return Verdict(Decision.LEAVE, Reason.SIGNER_DISABLED, "csrSigner.enabled is false")
    name = node_name(csr)
    if name is None:
        return _deny(Reason.REQUESTOR_NOT_NODE, f"requestor {body.get('username')!r}")
    groups = body.get("groups")
    if not isinstance(groups, list) or NODES_GROUP not in groups:
        return _deny(Reason.REQUESTOR_NOT_IN_NODES, f"requestor {name!r} not in {NODES_GROUP}")
    parsed = parse(body.get("request"))
    if isinstance(parsed, Verdict):
        return parsed
    problem = _subject_problem(parsed, name) or _usage_problem(body.get("usages"))
    problem = problem or _key_problem(parsed)
    if problem:
        return problem
    request = _sans(parsed)
    if isinstance(request, Verdict):
        return request
    # The allowlist and the refused names need no Node: a hostile request is denied at once,
    # even before its Node exists; only the narrowing by the Node's addresses waits for it.
    owned = sans.NodeAddresses.of(node)
    allow = (
        spec.allow
        if node is not None
        else dataclasses.replace(spec.allow, require_node_addresses=False)
    )
    found = sans.problem(request.dns_names, request.ips, name, owned, allow, refused)
    if found:
        return _deny(*found)
    if node is None:
        if _age(csr, now) < NODE_WAIT:
            return Verdict(Decision.WAIT, Reason.NODE_NOT_FOUND, f"Node {name!r} not found yet")
        return _deny(Reason.NODE_NOT_FOUND, f"Node {name!r} not found within {NODE_WAIT}")
    if spec.allow.resolve_dns_names and request.dns_names:
        if resolved is None:
            names = ", ".join(request.dns_names)
            return Verdict(Decision.RESOLVE, Reason.DNS_NOT_RESOLVED, names, request=request)
        args = (request.dns_names, resolved, name, owned, spec.allow, refused)
        found = sans.resolution_problem(*args)
        if found:
            return _deny(*found)
    return Verdict(
        Decision.APPROVE,
        Reason.APPROVED,
        f"kucero checked: {', '.join(PASSED)}",
        request=request,
        validity=validity(body.get("expirationSeconds"), spec),
        usages=frozenset(body["usages"]),
    )


def validity(expiration_seconds: object, spec: SignerSpec) -> dt.timedelta:
    """``expirationSeconds`` honoured within [10 minutes, certificateValidity]."""
    cap = spec.certificate_validity
    if isinstance(expiration_seconds, int) and not isinstance(expiration_seconds, bool):
        wanted = dt.timedelta(seconds=expiration_seconds)
        return min(max(wanted, MIN_VALIDITY), cap)
    return cap


def parse(encoded: object) -> x509.CertificateSigningRequest | Verdict:
    """The request (base64 of a PEM CSR, as the API serves it), verified, or a deny verdict."""
    try:
        pem = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
        if not pem:
            return _deny(Reason.UNPARSEABLE, "spec.request is not base64")
        request = x509.load_pem_x509_csr(pem)
        if not request.is_signature_valid:
            return _deny(Reason.BAD_SIGNATURE, "the request's self-signature does not verify")
        request.public_key()
        _ = request.subject, request.extensions
    except Exception as e:  # x509.InvalidVersion, UnsupportedAlgorithm, ValueError, ...
        return _deny(Reason.UNPARSEABLE, f"{type(e).__name__}: {e}"[:200])
    return request


def _subject_problem(request: x509.CertificateSigningRequest, name: str) -> Verdict | None:
    wanted = {
        (x509.NameOID.COMMON_NAME, NODE_USER_PREFIX + name),
        (x509.NameOID.ORGANIZATION_NAME, NODES_GROUP),
    }
    attributes = [(a.oid, a.value) for a in request.subject]
    if len(attributes) != 2 or set(attributes) != wanted:
        subject = _safe(request.subject.rfc4514_string)
        return _deny(Reason.SUBJECT_MISMATCH, f"subject {subject!r} is not the requestor {name!r}")
    return None


def _sans(request: x509.CertificateSigningRequest) -> Request | Verdict:
    sans = None
    for ext in request.extensions:
        if not isinstance(ext.value, x509.SubjectAlternativeName):
            return _deny(Reason.FORBIDDEN_EXTENSION, f"requested extension {ext.oid.dotted_string}")
        sans = ext.value
    if sans is None or len(sans) == 0:
        return _deny(Reason.NO_SANS, "no DNS or IP subject alternative name")
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for general in sans:
        if isinstance(general, x509.DNSName):
            dns.append(general.value)
        elif isinstance(general, x509.IPAddress) and not isinstance(
            general.value, ipaddress.IPv4Network | ipaddress.IPv6Network
        ):
            ips.append(general.value)
        else:
            return _deny(Reason.FORBIDDEN_SAN, f"{type(general).__name__} SAN")
    return Request(request, tuple(dns), tuple(ips))


def _usage_problem(usages: object) -> Verdict | None:
    if not isinstance(usages, list) or not all(isinstance(u, str) for u in usages):
        return _deny(Reason.USAGES, f"usages {usages!r}")
    wanted = frozenset(usages)
    if len(wanted) != len(usages) or wanted not in (USAGES, USAGES_RSA):
        return _deny(Reason.USAGES, f"usages {sorted(usages)!r}")
    return None


def _key_problem(request: x509.CertificateSigningRequest) -> Verdict | None:
    key = request.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in CURVES:
        return None
    described = f"RSA-{key.key_size}" if isinstance(key, rsa.RSAPublicKey) else type(key).__name__
    if isinstance(key, ec.EllipticCurvePublicKey):
        described = f"ECDSA-{key.curve.name}"
    return _deny(Reason.WEAK_KEY, f"key {described}")


def _age(csr: Mapping[str, Any], now: dt.datetime) -> dt.timedelta:
    created = (csr.get("metadata") or {}).get("creationTimestamp")
    try:
        return now - dt.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    except (ValueError, TypeError):
        return NODE_WAIT  # unknown age: no reason to keep waiting


def _condition_types(csr: Mapping[str, Any]) -> set[str]:
    conditions = (csr.get("status") or {}).get("conditions") or []
    return {
        c.get("type")
        for c in conditions
        if c.get("type") in ("Approved", "Denied", "Failed") and c.get("status", "True") == "True"
    }


def _deny(reason: Reason, message: str) -> Verdict:
    return Verdict(Decision.DENY, reason, message)


def _safe(call: Any) -> str:
    try:
        return str(call())
    except Exception:  # a hostile subject may not even print
        return "<unprintable>"
