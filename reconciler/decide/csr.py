"""Should kucero approve this kubelet serving CSR? A pure verdict with a reason.

``check(csr, node, spec, now)`` takes the CertificateSigningRequest as the API's JSON, the
requesting Node as JSON (``None`` when it does not exist), the ``csrSigner`` policy resolved for
that node, and the time, and returns a ``Verdict``: approve, deny, wait (the Node may not be
registered yet) or leave (not ours, or ``onReject: ignore``), with a ``Reason`` that reads well
in a condition, an Event, a log line and a metric label. No I/O, clock or randomness.

Edge cases it exists for: the request is attacker-controlled bytes (every access to the parsed
request is guarded, ``cryptography`` raises ``InvalidVersion``, ``UnsupportedAlgorithm`` or
``ValueError`` lazily, see PITFALLS.md); the requestor is authenticated by the API server but the
subject and SANs are whatever the client wrote; wildcard and malformed DNS names must not slip
under an ``extraDNSSuffixes`` entry; a missing Node is a reason to wait, for a bounded time.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from reconciler.decide import duration, policy

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
DNS_ADDRESS_TYPES = ("Hostname", "InternalDNS", "ExternalDNS")
IP_ADDRESS_TYPES = ("InternalIP", "ExternalIP")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class Decision(enum.StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    WAIT = "wait"  # requeue: the Node may appear
    LEAVE = "leave"  # no condition at all: another signer's, or onReject: ignore


class Reason(enum.StrEnum):
    APPROVED = APPROVED_REASON
    OTHER_SIGNER = "OtherSigner"
    SIGNER_DISABLED = "SignerDisabled"
    REQUESTOR_NOT_NODE = "RequestorNotANode"
    REQUESTOR_NOT_IN_NODES = "RequestorNotInSystemNodes"
    UNPARSEABLE = "UnparseableRequest"
    BAD_SIGNATURE = "InvalidSelfSignature"
    SUBJECT_MISMATCH = "SubjectNotRequestor"
    NO_SANS = "NoSubjectAltNames"
    FORBIDDEN_SAN = "ForbiddenSubjectAltName"
    INVALID_DNS_NAME = "InvalidDNSName"
    DNS_NOT_OWNED = "DNSNameNotOwned"
    IP_NOT_OWNED = "IPAddressNotOwned"
    FORBIDDEN_EXTENSION = "ForbiddenExtension"
    USAGES = "UsagesNotAllowed"
    WEAK_KEY = "KeyNotAllowed"
    NODE_NOT_FOUND = "NodeNotFound"
    # signing outcomes (decide/csrsign.py), here so that one enum names every outcome
    CA_EXPIRED = "CAExpired"
    CA_NOT_YET_VALID = "CANotYetValid"
    CA_KEY_MISMATCH = "CAKeyMismatch"
    CA_UNAVAILABLE = "CAUnavailable"
    SIGNING_FAILED = "SigningFailed"
    SIGNED_ELSEWHERE = "SignedElsewhere"


# What each passed check is called in the Approved condition's message.
PASSED = (
    "requestor is the node",
    "self-signature",
    "subject",
    "SANs owned by the node",
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
    extra_dns_suffixes: tuple[str, ...]
    extra_ip_ranges: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    on_reject: str  # deny | ignore


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
        extra_dns_suffixes=tuple(s.lstrip(".").lower() for s in fields["extraDNSSuffixes"]),
        extra_ip_ranges=tuple(ipaddress.ip_network(r) for r in fields["extraIPRanges"]),
        on_reject=fields["onReject"],
    )


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
    now: dt.datetime,
) -> Verdict:
    """The verdict on ``csr``; see the module docstring. Never raises on any input."""
    verdict = _check(csr, node, spec, now)
    if verdict.decision is Decision.DENY and spec.on_reject == "ignore":
        return dataclasses.replace(verdict, decision=Decision.LEAVE)
    return verdict


def _check(
    csr: Mapping[str, Any], node: Mapping[str, Any] | None, spec: SignerSpec, now: dt.datetime
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
    if node is None:
        if _age(csr, now) < NODE_WAIT:
            return Verdict(Decision.WAIT, Reason.NODE_NOT_FOUND, f"Node {name!r} not found yet")
        return _deny(Reason.NODE_NOT_FOUND, f"Node {name!r} not found within {NODE_WAIT}")
    owned = _ownership_problem(request, node, spec)
    if owned:
        return owned
    usages = frozenset(body["usages"])
    return Verdict(
        Decision.APPROVE,
        Reason.APPROVED,
        f"kucero checked: {', '.join(PASSED)}",
        request=request,
        validity=validity(body.get("expirationSeconds"), spec),
        usages=usages,
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


def _ownership_problem(
    request: Request, node: Mapping[str, Any], spec: SignerSpec
) -> Verdict | None:
    addresses = (node.get("status") or {}).get("addresses") or []
    names = {a.get("address", "").lower() for a in addresses if a.get("type") in DNS_ADDRESS_TYPES}
    ips = set()
    for a in addresses:
        if a.get("type") in IP_ADDRESS_TYPES:
            try:
                ips.add(ipaddress.ip_address(a.get("address", "")))
            except ValueError:
                continue  # a garbage address owns nothing
    for name in request.dns_names:
        lowered = name.lower()
        if not _valid_dns_name(lowered):
            return _deny(Reason.INVALID_DNS_NAME, f"DNS SAN {name!r} is not a host name")
        if lowered not in names and not _under_suffix(lowered, spec.extra_dns_suffixes):
            return _deny(Reason.DNS_NOT_OWNED, f"DNS SAN {name!r} is not an address of the node")
    for ip in request.ips:
        if ip not in ips and not any(ip in r for r in spec.extra_ip_ranges):
            return _deny(Reason.IP_NOT_OWNED, f"IP SAN {ip} is not an address of the node")
    return None


def _valid_dns_name(name: str) -> bool:
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def _under_suffix(name: str, suffixes: tuple[str, ...]) -> bool:
    return any(s and name.endswith("." + s) for s in suffixes)


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
