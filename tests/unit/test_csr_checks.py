"""The pure verdict on kubelet serving CSRs: one row per rule of the issue, and the resolution
of the csrSigner policy per node. The SAN rules themselves (allowlist, refused names and
addresses, the Node's addresses narrowing) have their own table in test_csr_sans.py."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from reconciler.decide import csr, policy, sans
from tests import csrs

NOW = dt.datetime(2026, 6, 1, 12, 5, tzinfo=dt.UTC)
NODE = csrs.node_object(
    "n1",
    [
        ("InternalIP", "10.0.0.1"),
        ("ExternalIP", "203.0.113.7"),
        ("Hostname", "n1"),
        ("InternalDNS", "n1.internal"),
        ("ExternalDNS", "n1.example.com"),
        ("InternalIP", "fd00::1"),
    ],
)
ALLOW = sans.Allowlist(
    dns_suffixes=("internal", "example.com", "nodes.example.org"),
    ip_ranges=tuple(
        ipaddress.ip_network(r)
        for r in ("10.0.0.0/16", "203.0.113.0/24", "fd00::/64", "192.168.100.0/24")
    ),
)
SPEC = csr.SignerSpec(
    enabled=True,
    ca_cert_path="/etc/kubernetes/pki/ca.crt",
    ca_key_path="/etc/kubernetes/pki/ca.key",
    certificate_validity=dt.timedelta(days=365),
    on_reject="deny",
    allow=ALLOW,
    service_cidrs=(ipaddress.ip_network("10.96.0.0/12"),),
)
REFUSED = SPEC.refused()


def _verdict(
    pem_kwargs: dict[str, Any] | None = None,
    node: Any = NODE,
    spec: csr.SignerSpec = SPEC,
    **object_kwargs: Any,
) -> csr.Verdict:
    pem = object_kwargs.pop("pem", None) or csrs.request_pem("n1", **(pem_kwargs or {}))
    obj = csrs.csr_object(pem, "n1", **object_kwargs)
    return csr.check(obj, node, spec, spec.refused(), NOW)


APPROVED = [
    pytest.param({"ips": ["10.0.0.1"]}, {}, id="ecdsa-p256-own-internal-ip"),
    pytest.param(
        {"dns": ["n1", "n1.internal", "n1.example.com"], "ips": ["10.0.0.1", "203.0.113.7"]},
        {},
        id="every-own-address",
    ),
    pytest.param({"ips": ["fd00::1"]}, {}, id="own-ipv6"),
    pytest.param({"dns": ["N1.Example.COM"], "ips": []}, {}, id="dns-only-case-insensitive"),
    pytest.param({"key_kind": "rsa"}, {"usages": csrs.RSA_USAGES}, id="rsa-2048-with-encipherment"),
    pytest.param({"key_kind": "rsa"}, {"usages": csrs.ECDSA_USAGES}, id="rsa-without-encipherment"),
    pytest.param({"key_kind": "ecdsa-p384"}, {}, id="ecdsa-p384"),
]


@pytest.mark.parametrize(("pem_kwargs", "object_kwargs"), APPROVED)
def test_request_the_node_owns_is_approved(
    pem_kwargs: dict[str, Any], object_kwargs: dict[str, Any]
) -> None:
    verdict = _verdict(pem_kwargs, **object_kwargs)
    assert (verdict.decision, verdict.reason) == (csr.Decision.APPROVE, csr.Reason.APPROVED)
    assert verdict.request is not None
    assert "self-signature" in verdict.message


DENIED = [
    pytest.param(
        {"cn": "system:node:n2"}, {}, csr.Reason.SUBJECT_MISMATCH, id="cn-of-another-node"
    ),
    pytest.param(
        {}, {"username": "system:node:n2"}, csr.Reason.SUBJECT_MISMATCH, id="another-requestor"
    ),
    pytest.param({"orgs": ()}, {}, csr.Reason.SUBJECT_MISMATCH, id="no-organization"),
    pytest.param(
        {"orgs": ("system:nodes", "system:masters")},
        {},
        csr.Reason.SUBJECT_MISMATCH,
        id="extra-organization",
    ),
    pytest.param({"ips": ["10.0.0.2"]}, {}, csr.Reason.IP_NOT_OWNED, id="ip-of-another-node"),
    pytest.param(
        {"dns": ["n2.example.com"]}, {}, csr.Reason.DNS_NOT_ALLOWED, id="dns-of-another-node"
    ),
    pytest.param(
        {"dns": ["nodes.example.org"]}, {}, csr.Reason.DNS_NOT_ALLOWED, id="the-suffix-itself"
    ),
    pytest.param(
        {"dns": ["a.nodes.example.org"]},
        {},
        csr.Reason.DNS_NOT_ALLOWED,
        id="a-name-under-the-suffix-that-is-not-the-node",
    ),
    pytest.param(
        {"dns": ["n1.nodes.example.org"]},
        {},
        csr.Reason.DNS_NOT_OWNED,
        id="allowed-name-the-node-does-not-have",
    ),
    pytest.param(
        {"ips": ["192.168.100.9"]},
        {},
        csr.Reason.IP_NOT_OWNED,
        id="allowed-range-address-the-node-does-not-have",
    ),
    pytest.param(
        {"dns": ["*.nodes.example.org"]},
        {},
        csr.Reason.INVALID_DNS_NAME,
        id="wildcard-under-suffix",
    ),
    pytest.param(
        {"dns": ["n1nodes.example.org"]},
        {},
        csr.Reason.DNS_NOT_ALLOWED,
        id="node-name-glued-to-the-suffix",
    ),
    pytest.param(
        {"dns": ["kubernetes.default.svc"]},
        {},
        csr.Reason.API_SERVER_NAME,
        id="the-api-servers-service-name",
    ),
    pytest.param(
        {"ips": ["10.96.0.1"]}, {}, csr.Reason.SERVICE_IP, id="the-api-servers-service-ip"
    ),
    pytest.param({"emails": ["a@b.c"]}, {}, csr.Reason.FORBIDDEN_SAN, id="email-san"),
    pytest.param({"uris": ["spiffe://x/y"]}, {}, csr.Reason.FORBIDDEN_SAN, id="uri-san"),
    pytest.param({"ips": []}, {}, csr.Reason.NO_SANS, id="no-sans"),
    pytest.param(
        {"extensions": [(x509.BasicConstraints(ca=True, path_length=None), True)]},
        {},
        csr.Reason.FORBIDDEN_EXTENSION,
        id="ca-true-request",
    ),
    pytest.param(
        {},
        {"usages": ["digital signature", "server auth", "client auth"]},
        csr.Reason.USAGES,
        id="client-auth-usage",
    ),
    pytest.param(
        {}, {"usages": ["server auth"]}, csr.Reason.USAGES, id="missing-digital-signature"
    ),
    pytest.param(
        {},
        {"usages": ["digital signature", "server auth", "server auth"]},
        csr.Reason.USAGES,
        id="duplicate-usage",
    ),
    pytest.param(
        {"key_kind": "rsa-1024"}, {"usages": csrs.RSA_USAGES}, csr.Reason.WEAK_KEY, id="rsa-1024"
    ),
    pytest.param({"key_kind": "ecdsa-p521"}, {}, csr.Reason.WEAK_KEY, id="ecdsa-p521"),
    pytest.param({"key_kind": "ed25519"}, {}, csr.Reason.WEAK_KEY, id="ed25519"),
    pytest.param(
        {},
        {"groups": ["system:authenticated"]},
        csr.Reason.REQUESTOR_NOT_IN_NODES,
        id="requestor-outside-system-nodes",
    ),
    pytest.param(
        {},
        {"username": "system:serviceaccount:kube-system:default"},
        csr.Reason.REQUESTOR_NOT_NODE,
        id="service-account",
    ),
    pytest.param(
        {}, {"username": "system:node:"}, csr.Reason.REQUESTOR_NOT_NODE, id="empty-node-name"
    ),
    pytest.param(
        {},
        {
            "pem": b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n"
        },
        csr.Reason.UNPARSEABLE,
        id="garbage-pem",
    ),
]


@pytest.mark.parametrize(("pem_kwargs", "object_kwargs", "reason"), DENIED)
def test_request_the_node_does_not_own_is_denied(
    pem_kwargs: dict[str, Any], object_kwargs: dict[str, Any], reason: csr.Reason
) -> None:
    verdict = _verdict(pem_kwargs, **object_kwargs)
    assert (verdict.decision, verdict.reason) == (csr.Decision.DENY, reason), verdict.message


def test_tampered_request_fails_its_self_signature() -> None:
    pem = csrs.request_pem("n1", ips=["10.0.0.1"])
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    tampered = bytearray(der)
    tampered[-5] ^= 0xFF  # inside the signature
    body = base64.encodebytes(bytes(tampered)).decode()
    pem = f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"
    verdict = _verdict(pem=pem.encode())
    assert verdict.decision is csr.Decision.DENY
    assert verdict.reason in (csr.Reason.BAD_SIGNATURE, csr.Reason.UNPARSEABLE)


def test_request_body_that_is_not_base64_is_denied() -> None:
    obj = csrs.csr_object(csrs.request_pem("n1"), "n1")
    obj["spec"]["request"] = "%%%"
    assert csr.check(obj, NODE, SPEC, REFUSED, NOW).reason is csr.Reason.UNPARSEABLE


def test_other_signer_is_left_untouched() -> None:
    verdict = _verdict(signer="kubernetes.io/kube-apiserver-client-kubelet")
    assert (verdict.decision, verdict.reason) == (csr.Decision.LEAVE, csr.Reason.OTHER_SIGNER)


def test_disabled_signer_leaves_requests_pending() -> None:
    spec = csr.SignerSpec(**{**SPEC.__dict__, "enabled": False})
    assert _verdict(spec=spec).decision is csr.Decision.LEAVE


def test_on_reject_ignore_leaves_a_failing_request_pending() -> None:
    spec = csr.SignerSpec(**{**SPEC.__dict__, "on_reject": "ignore"})
    verdict = _verdict({"ips": ["10.0.0.2"]}, spec=spec)
    assert (verdict.decision, verdict.reason) == (csr.Decision.LEAVE, csr.Reason.IP_NOT_OWNED)


def test_request_outside_the_allowlist_is_denied_before_its_node_exists() -> None:
    """No need to wait for a Node to refuse the API server's address: only the narrowing by the
    Node's own addresses waits for it."""
    verdict = _verdict({"ips": ["10.96.0.1"]}, node=None, created=NOW)
    assert (verdict.decision, verdict.reason) == (csr.Decision.DENY, csr.Reason.SERVICE_IP)


def test_missing_node_waits_then_is_denied() -> None:
    young = _verdict(node=None, created=NOW - dt.timedelta(minutes=1))
    assert (young.decision, young.reason) == (csr.Decision.WAIT, csr.Reason.NODE_NOT_FOUND)
    old = _verdict(node=None, created=NOW - csr.NODE_WAIT - dt.timedelta(seconds=1))
    assert (old.decision, old.reason) == (csr.Decision.DENY, csr.Reason.NODE_NOT_FOUND)


def test_missing_node_never_hides_a_hostile_request() -> None:
    verdict = _verdict({"cn": "system:node:n2"}, node=None, created=NOW)
    assert verdict.decision is csr.Decision.DENY


@pytest.mark.parametrize(
    ("expiration", "expected"),
    [
        (None, dt.timedelta(days=365)),
        (3600, dt.timedelta(hours=1)),
        (600, dt.timedelta(minutes=10)),
        (60, dt.timedelta(minutes=10)),
        (10 * 365 * 86400, dt.timedelta(days=365)),
    ],
    ids=["unset-uses-policy", "one-hour", "ten-minutes", "below-minimum", "above-policy"],
)
def test_expiration_seconds_is_honoured_within_bounds(
    expiration: int | None, expected: dt.timedelta
) -> None:
    assert _verdict(expiration_seconds=expiration).validity == expected


def test_pending_and_resumable_states() -> None:
    obj = csrs.csr_object(csrs.request_pem("n1"), "n1")
    assert csr.is_pending(obj) and not csr.approved_by_us_unsigned(obj)
    obj["status"] = {
        "conditions": [{"type": "Approved", "status": "True", "reason": "KuceroApproved"}]
    }
    assert not csr.is_pending(obj) and csr.approved_by_us_unsigned(obj)
    obj["status"]["conditions"][0]["reason"] = "AutoApproved"
    assert not csr.approved_by_us_unsigned(obj)
    obj["status"] = {"certificate": "eA=="}
    assert not csr.is_pending(obj)


def test_override_for_the_node_is_used() -> None:
    loaded = policy.from_mapping(
        {
            "apiVersion": policy.API_VERSION,
            "kind": policy.KIND,
            "spec": {
                "csrSigner": {"allowedIPRanges": ["10.1.0.0/16"], "maxDNSNames": 2},
                "overrides": [
                    {
                        "nodeSelector": {"matchLabels": {"pool": "edge"}},
                        "spec": {
                            "csrSigner": {
                                "onReject": "ignore",
                                "allowedDNSSuffixes": [".edge.example"],
                                "requireNodeAddresses": False,
                            }
                        },
                    }
                ],
            },
        }
    )
    edge = csr.signer_spec(loaded, {"pool": "edge"})
    plain = csr.signer_spec(loaded, {})
    assert (edge.on_reject, edge.allow.dns_suffixes) == ("ignore", ("edge.example",))
    assert edge.allow.ip_ranges == (ipaddress.ip_network("10.1.0.0/16"),)
    assert (edge.allow.max_dns_names, edge.allow.require_node_addresses) == (2, False)
    assert (plain.on_reject, plain.allow.dns_suffixes) == ("deny", ())
    assert plain.allow.require_node_addresses and not plain.allow.resolve_dns_names
    assert plain.certificate_validity == dt.timedelta(hours=8760)
    assert plain.service_cidrs == (ipaddress.ip_network("10.96.0.0/12"),)
    assert plain.cluster_domain == "cluster.local"


def test_default_policy_allows_the_node_name_and_no_ip_address() -> None:
    """The defaults approve nothing a kubelet's IP SAN could make dangerous: no IP range."""
    spec = csr.signer_spec(
        policy.from_mapping({"apiVersion": policy.API_VERSION, "kind": policy.KIND}), {}
    )
    node = csrs.node_object("n1", [("Hostname", "n1"), ("InternalIP", "10.0.0.1")])
    named = csrs.csr_object(csrs.request_pem("n1", dns=["n1"], ips=[]), "n1")
    addressed = csrs.csr_object(csrs.request_pem("n1", dns=["n1"], ips=["10.0.0.1"]), "n1")
    assert csr.check(named, node, spec, spec.refused(), NOW).decision is csr.Decision.APPROVE
    denied = csr.check(addressed, node, spec, spec.refused(), NOW)
    assert (denied.decision, denied.reason) == (csr.Decision.DENY, csr.Reason.IP_NOT_ALLOWED)
