"""The pure verdict on kubelet serving CSRs: one row per rule of the issue, and the resolution
of the csrSigner policy per node."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from reconciler.decide import csr, policy
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
SPEC = csr.SignerSpec(
    enabled=True,
    ca_cert_path="/etc/kubernetes/pki/ca.crt",
    ca_key_path="/etc/kubernetes/pki/ca.key",
    certificate_validity=dt.timedelta(days=365),
    extra_dns_suffixes=("nodes.example.org",),
    extra_ip_ranges=(ipaddress.ip_network("192.168.100.0/24"),),
    on_reject="deny",
)


def _verdict(
    pem_kwargs: dict[str, Any] | None = None,
    node: Any = NODE,
    spec: csr.SignerSpec = SPEC,
    **object_kwargs: Any,
) -> csr.Verdict:
    pem = object_kwargs.pop("pem", None) or csrs.request_pem("n1", **(pem_kwargs or {}))
    return csr.check(csrs.csr_object(pem, "n1", **object_kwargs), node, spec, NOW)


APPROVED = [
    pytest.param({"ips": ["10.0.0.1"]}, {}, id="ecdsa-p256-own-internal-ip"),
    pytest.param(
        {"dns": ["n1", "n1.internal", "n1.example.com"], "ips": ["10.0.0.1", "203.0.113.7"]},
        {},
        id="every-own-address",
    ),
    pytest.param({"ips": ["fd00::1"]}, {}, id="own-ipv6"),
    pytest.param({"dns": ["N1.Example.COM"], "ips": []}, {}, id="dns-only-case-insensitive"),
    pytest.param({"dns": ["a.nodes.example.org"]}, {}, id="dns-under-extra-suffix"),
    pytest.param({"ips": ["192.168.100.9"]}, {}, id="ip-in-extra-range"),
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
        {"dns": ["n2.example.com"]}, {}, csr.Reason.DNS_NOT_OWNED, id="dns-not-an-address"
    ),
    pytest.param(
        {"dns": ["nodes.example.org"]}, {}, csr.Reason.DNS_NOT_OWNED, id="the-suffix-itself"
    ),
    pytest.param(
        {"dns": ["*.nodes.example.org"]},
        {},
        csr.Reason.INVALID_DNS_NAME,
        id="wildcard-under-suffix",
    ),
    pytest.param(
        {"dns": ["evilnodes.example.org"]}, {}, csr.Reason.DNS_NOT_OWNED, id="suffix-without-dot"
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
    assert csr.check(obj, NODE, SPEC, NOW).reason is csr.Reason.UNPARSEABLE


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
                "csrSigner": {"extraIPRanges": ["10.1.0.0/16"]},
                "overrides": [
                    {
                        "nodeSelector": {"matchLabels": {"pool": "edge"}},
                        "spec": {
                            "csrSigner": {
                                "onReject": "ignore",
                                "extraDNSSuffixes": [".edge.example"],
                            }
                        },
                    }
                ],
            },
        }
    )
    edge = csr.signer_spec(loaded, {"pool": "edge"})
    plain = csr.signer_spec(loaded, {})
    assert (edge.on_reject, edge.extra_dns_suffixes) == ("ignore", ("edge.example",))
    assert edge.extra_ip_ranges == (ipaddress.ip_network("10.1.0.0/16"),)
    assert (plain.on_reject, plain.extra_dns_suffixes) == ("deny", ())
    assert plain.certificate_validity == dt.timedelta(hours=8760)
