"""The SAN rules of kubelet serving CSRs (decide/sans.py, decide/reserved.py): the policy's
allowlist, what is refused whatever the policy says, the Node's addresses narrowing and never
widening, the optional DNS check with injected answers, and whether kucero vouches for an
approver to a kubelet. Every row goes through ``csr.check``, as the signer does."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from reconciler.decide import csr, policy, reserved, sans
from tests import csrs

NOW = dt.datetime(2026, 6, 1, 12, 5, tzinfo=dt.UTC)
R = csr.Reason
WIDE_OPEN = sans.Allowlist(
    dns_suffixes=("example.com", "lb.example.com", "corp.k8s", "svc", "cluster.local", "default"),
    max_dns_names=10,
    ip_ranges=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")),
    require_node_addresses=False,
)
ALLOW = sans.Allowlist(
    dns_suffixes=("example.com",),
    max_dns_names=2,
    ip_ranges=(ipaddress.ip_network("10.0.0.0/16"), ipaddress.ip_network("fd00::/64")),
)
# The leader's node is cp-1; its apiserver.crt as kubeadm writes it, plus certSANs.
APISERVER = reserved.APIServer(
    node_name="cp-1",
    cert_path="/etc/kubernetes/pki/apiserver.crt",
    dns_names=frozenset(
        {
            "cp-1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.corp.k8s",
            "api.example.com",
            "*.lb.example.com",
        }
    ),
    ips=frozenset({ipaddress.ip_address("10.96.0.1"), ipaddress.ip_address("10.0.0.11")}),
    service_cidrs=(ipaddress.ip_network("10.112.0.0/12"),),
)
OWN = [("Hostname", "n1"), ("InternalDNS", "n1.example.com"), ("InternalIP", "10.0.0.21")]
ATTACK = [
    *OWN,
    ("InternalIP", "10.96.0.1"),
    ("InternalDNS", "kubernetes.default.svc"),
    ("Hostname", "localhost"),
    ("InternalIP", "127.0.0.1"),
    ("InternalIP", "10.0.0.11"),
    ("ExternalDNS", "api.example.com"),
]


def _spec(allow: sans.Allowlist = ALLOW, cluster_domain: str = "cluster.local") -> csr.SignerSpec:
    return csr.SignerSpec(
        enabled=True,
        ca_cert_path="/ca.crt",
        ca_key_path="/ca.key",
        certificate_validity=dt.timedelta(days=365),
        on_reject="deny",
        allow=allow,
        service_cidrs=(ipaddress.ip_network("10.96.0.0/12"),),
        cluster_domain=cluster_domain,
    )


def _verdict(
    node: str,
    addresses: Sequence[tuple[str, str]],
    dns: Sequence[str],
    ips: Sequence[str],
    allow: sans.Allowlist = ALLOW,
    resolved: Mapping[str, Sequence[str]] | None = None,
) -> csr.Verdict:
    spec = _spec(allow)
    obj = csrs.csr_object(csrs.request_pem(node, dns=dns, ips=ips), node)
    refused = spec.refused(APISERVER)
    return csr.check(obj, csrs.node_object(node, addresses), spec, refused, NOW, resolved)


ROWS = [
    # --- the attack of issue 17: the node lists the API server's names as its own addresses
    pytest.param("n1", ATTACK, [], ["10.96.0.1"], WIDE_OPEN, R.SERVICE_IP,
                 id="the-kubernetes-service-ip-is-refused-though-the-node-lists-it"),
    pytest.param("n1", ATTACK, ["kubernetes.default.svc"], [], WIDE_OPEN, R.API_SERVER_NAME,
                 id="kubernetes-default-svc-is-refused-though-the-node-lists-it"),
    pytest.param("n1", ATTACK, ["localhost"], [], WIDE_OPEN, R.RESERVED_NAME,
                 id="localhost-is-refused-though-the-node-lists-it"),
    pytest.param("localhost", [("Hostname", "localhost")], ["localhost"], [], WIDE_OPEN,
                 R.RESERVED_NAME, id="a-node-named-localhost-still-cannot-have-localhost"),
    pytest.param("n1", ATTACK, [], ["127.0.0.1"], WIDE_OPEN, R.RESERVED_IP,
                 id="loopback-is-refused-though-the-policy-allows-every-address"),
    pytest.param("n1", ATTACK, [], ["10.0.0.11"], WIDE_OPEN, R.API_SERVER_IP,
                 id="the-api-servers-advertise-address-is-refused-to-a-worker"),
    pytest.param("api", ATTACK, ["api.example.com"], [], WIDE_OPEN, R.API_SERVER_NAME,
                 id="a-node-named-like-the-api-servers-cert-san-is-refused-it"),
    pytest.param("x", [("Hostname", "x.lb.example.com")], ["x.lb.example.com"], [], WIDE_OPEN,
                 R.API_SERVER_NAME, id="a-name-under-a-wildcard-of-the-api-server-cert-is-refused"),
    pytest.param("kubernetes", [("Hostname", "kubernetes")], ["kubernetes"], [], WIDE_OPEN,
                 R.API_SERVER_NAME, id="a-node-named-kubernetes-cannot-have-its-own-name"),
    pytest.param("kubernetes", [], ["kubernetes.default"], [], WIDE_OPEN, R.API_SERVER_NAME,
                 id="kubernetes-default-is-refused"),
    pytest.param("kubernetes", [], ["kubernetes.default.svc.cluster.local"], [], WIDE_OPEN,
                 R.API_SERVER_NAME, id="kubernetes-default-svc-cluster-local-is-refused"),
    pytest.param("n1", [], ["n1.svc"], [], WIDE_OPEN, R.RESERVED_NAME,
                 id="a-name-in-the-svc-zone-is-refused-whatever-the-suffixes"),
    pytest.param("n1", [], ["n1.cluster.local"], [], WIDE_OPEN, R.RESERVED_NAME,
                 id="a-name-in-the-cluster-domain-is-refused"),
    pytest.param("n1", [], ["n1.corp.k8s"], [], WIDE_OPEN, R.RESERVED_NAME,
                 id="the-cluster-domain-the-api-server-cert-names-is-refused-too"),
    pytest.param("n1", [], [], ["10.112.0.5"], WIDE_OPEN, R.SERVICE_IP,
                 id="the-service-range-of-the-api-server-manifest-is-refused-too"),
    pytest.param("n1", [], [], ["fd00::1", "10.96.255.255"], WIDE_OPEN, R.SERVICE_IP,
                 id="the-last-address-of-the-default-service-range-is-refused"),
    # --- special addresses, v4 and v6, whatever the policy says
    *(
        pytest.param("n1", [("InternalIP", ip)], [], [ip], WIDE_OPEN, R.RESERVED_IP,
                     id=f"special-address-{ip}-is-refused")
        for ip in (
            "127.1.2.3", "0.0.0.0", "0.1.2.3", "169.254.169.254", "224.0.0.1",
            "255.255.255.255", "240.0.0.1", "::1", "::", "fe80::1", "ff02::1", "fec0::1",
            "::ffff:10.96.0.1", "::ffff:10.0.0.21",
        )
    ),
    # --- the owner of the API server's certificate (the leader's own node)
    pytest.param("cp-1", [("Hostname", "cp-1"), ("InternalIP", "10.0.0.11")], ["cp-1"],
                 ["10.0.0.11"], ALLOW, None,
                 id="the-leaders-own-kubelet-may-have-the-name-and-address-kubeadm-put-in-"
                    "its-api-server-cert"),
    pytest.param("cp-1", [("Hostname", "cp-1")], ["kubernetes"], [], WIDE_OPEN,
                 R.API_SERVER_NAME, id="the-leaders-own-kubelet-still-cannot-have-kubernetes"),
    pytest.param("cp-1", [("InternalIP", "10.96.0.1")], [], ["10.96.0.1"], WIDE_OPEN,
                 R.SERVICE_IP, id="the-leaders-own-kubelet-still-cannot-have-the-service-ip"),
    # --- the allowlist, anchored on the node's name
    pytest.param("n1", OWN, ["n1", "n1.example.com"], ["10.0.0.21"], ALLOW, None,
                 id="the-node-name-its-suffixed-name-and-its-address-are-approved"),
    pytest.param("n1", [("InternalIP", "fd00::21")], [], ["fd00::21"], ALLOW, None,
                 id="an-ipv6-address-inside-an-allowed-range-is-approved"),
    pytest.param("n1", [("Hostname", "n1-evil.example.com")], ["n1-evil.example.com"], [],
                 ALLOW, R.DNS_NOT_ALLOWED,
                 id="a-name-that-only-starts-with-the-node-name-is-not-allowed"),
    pytest.param("n1", [("Hostname", "evil.n1.example.com")], ["evil.n1.example.com"], [],
                 ALLOW, R.DNS_NOT_ALLOWED, id="a-label-before-the-node-name-is-not-allowed"),
    pytest.param("n1", [("Hostname", "n1.example.com.evil.org")], ["n1.example.com.evil.org"],
                 [], ALLOW, R.DNS_NOT_ALLOWED, id="the-suffix-followed-by-more-is-not-allowed"),
    pytest.param("n1", OWN, ["n1", "n1.example.com", "n1"], [], ALLOW, R.TOO_MANY_DNS_NAMES,
                 id="more-dns-names-than-max-dns-names-is-denied"),
    pytest.param("n1", [("InternalIP", "10.1.0.1")], [], ["10.1.0.1"], ALLOW, R.IP_NOT_ALLOWED,
                 id="an-address-outside-the-allowed-ranges-is-denied"),
    pytest.param("n1", [("InternalIP", "10.0.0.21")], [], ["10.0.0.21"],
                 dataclasses.replace(ALLOW, ip_ranges=()), R.IP_NOT_ALLOWED,
                 id="with-no-allowed-range-no-address-is-approved"),
    # --- the Node's addresses narrow, never widen
    pytest.param("n1", [*OWN, ("ExternalDNS", "evil.example.org"), ("ExternalIP", "8.8.8.8")],
                 ["evil.example.org"], [], ALLOW, R.DNS_NOT_ALLOWED,
                 id="a-name-the-node-lists-but-the-policy-does-not-allow-is-denied"),
    pytest.param("n1", [*OWN, ("ExternalIP", "8.8.8.8")], [], ["8.8.8.8"], ALLOW,
                 R.IP_NOT_ALLOWED,
                 id="an-address-the-node-lists-but-the-policy-does-not-allow-is-denied"),
    pytest.param("n1", [("InternalIP", "10.0.0.21")], ["n1"], [], ALLOW, R.DNS_NOT_OWNED,
                 id="an-allowed-name-the-node-does-not-list-is-denied"),
    pytest.param("n1", [("Hostname", "n1")], [], ["10.0.0.22"], ALLOW, R.IP_NOT_OWNED,
                 id="an-allowed-address-the-node-does-not-list-is-denied"),
    pytest.param("n1", [], ["n1"], ["10.0.0.22"],
                 dataclasses.replace(ALLOW, require_node_addresses=False), None,
                 id="without-require-node-addresses-the-allowlist-alone-decides"),
    # --- names that are not host names
    *(
        pytest.param("n1", [("Hostname", n)], [n], [], WIDE_OPEN, R.INVALID_DNS_NAME,
                     id=f"{n!r}-is-not-a-host-name")
        for n in ("n1.", "n1..example.com", "-n1.example.com", "*.example.com", "10.96.0.1",
                  "n1_x.example.com", "a" * 64 + ".example.com")
    ),
]  # fmt: skip


@pytest.mark.parametrize(("node", "addresses", "dns", "ips", "allow", "reason"), ROWS)
def test_san_rules(
    node: str,
    addresses: Sequence[tuple[str, str]],
    dns: Sequence[str],
    ips: Sequence[str],
    allow: sans.Allowlist,
    reason: csr.Reason | None,
) -> None:
    verdict = _verdict(node, addresses, dns, ips, allow)
    if reason is None:
        assert verdict.decision is csr.Decision.APPROVE, verdict.message
    else:
        assert (verdict.decision, verdict.reason) == (csr.Decision.DENY, reason), verdict.message


RESOLVING = dataclasses.replace(ALLOW, resolve_dns_names=True)


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        pytest.param({"n1.example.com": ["10.0.0.21"]}, None, id="resolves-to-its-own-address"),
        pytest.param({}, R.DNS_NOT_RESOLVED, id="no-answer-is-denied"),
        pytest.param({"n1.example.com": []}, R.DNS_NOT_RESOLVED, id="an-empty-answer-is-denied"),
        pytest.param(
            {"n1.example.com": ["10.0.0.21", "10.0.0.99"]},
            R.DNS_RESOLVES_ELSEWHERE,
            id="one-answer-the-node-does-not-have-is-denied",
        ),
        pytest.param(
            {"n1.example.com": ["127.0.0.1"]},
            R.DNS_RESOLVES_ELSEWHERE,
            id="resolving-to-loopback-is-denied",
        ),
        pytest.param(
            {"n1.example.com": ["not an address"]},
            R.DNS_RESOLVES_ELSEWHERE,
            id="an-unparseable-answer-is-denied",
        ),
    ],
)
def test_dns_check_judges_the_injected_answers(
    answers: Mapping[str, Sequence[str]], reason: csr.Reason | None
) -> None:
    first = _verdict("n1", OWN, ["n1.example.com"], ["10.0.0.21"], RESOLVING)
    assert first.decision is csr.Decision.RESOLVE and first.request is not None
    assert first.request.dns_names == ("n1.example.com",)
    verdict = _verdict("n1", OWN, ["n1.example.com"], ["10.0.0.21"], RESOLVING, answers)
    expected = (csr.Decision.APPROVE, R.APPROVED) if reason is None else (csr.Decision.DENY, reason)
    assert (verdict.decision, verdict.reason) == expected, verdict.message


def test_dns_check_never_asks_to_resolve_a_name_that_fails_another_rule() -> None:
    verdict = _verdict("n1", ATTACK, ["kubernetes.default.svc"], [], RESOLVING)
    assert (verdict.decision, verdict.reason) == (csr.Decision.DENY, R.API_SERVER_NAME)


def test_dns_check_is_off_by_default_and_skipped_without_dns_names() -> None:
    assert not sans.Allowlist().resolve_dns_names
    verdict = _verdict("n1", OWN, [], ["10.0.0.21"], RESOLVING)
    assert verdict.decision is csr.Decision.APPROVE


KUBEADM_NODE = [
    {"type": "InternalIP", "address": "10.0.0.21"},
    {"type": "Hostname", "address": "n1"},
]


@pytest.mark.parametrize(
    ("allow", "addresses", "enabled", "covered"),
    [
        pytest.param(sans.Allowlist(), KUBEADM_NODE, True, False,
                     id="the-default-policy-does-not-vouch-for-a-kubelet-that-asks-for-an-ip"),
        pytest.param(ALLOW, KUBEADM_NODE, True, True,
                     id="a-range-that-covers-the-kubelets-address-vouches"),
        pytest.param(ALLOW, KUBEADM_NODE, False, False, id="a-disabled-signer-never-vouches"),
        pytest.param(ALLOW, [], True, False, id="no-addresses-yet-no-promise"),
        pytest.param(ALLOW, [*KUBEADM_NODE, {"type": "ExternalDNS", "address": "ec2.aws.com"}],
                     True, False, id="one-address-outside-the-allowlist-is-enough-to-not-vouch"),
        pytest.param(ALLOW, [{"type": "InternalIP", "address": "10.96.0.1"}], True, False,
                     id="a-service-address-is-never-covered"),
    ],
)  # fmt: skip
def test_approver_is_vouched_for_only_when_the_kubelets_request_would_pass(
    allow: sans.Allowlist, addresses: list[dict[str, str]], enabled: bool, covered: bool
) -> None:
    spec = dataclasses.replace(_spec(allow), enabled=enabled)
    assert csr.approves_kubelet(spec, "n1", addresses) is covered


def test_refused_set_only_grows_with_the_hosts_facts() -> None:
    refused = reserved.refused((ipaddress.ip_network("10.96.0.0/12"),), "cluster.local", APISERVER)
    assert refused.service_ranges == (
        ipaddress.ip_network("10.96.0.0/12"),
        ipaddress.ip_network("10.112.0.0/12"),
    )
    assert {"svc", "localhost", "cluster.local", "corp.k8s"} <= refused.zones


MANIFEST = """\
apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  containers:
  - name: kube-apiserver
    command:
    - kube-apiserver
    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt
    - --service-cluster-ip-range=10.96.0.0/12,fd00:10:96::/112
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            MANIFEST,
            (
                "/etc/kubernetes/pki/apiserver.crt",
                ("10.96.0.0/12", "fd00:10:96::/112"),
                0,
            ),
            id="dual-stack-service-ranges-and-the-certificate",
        ),
        pytest.param(
            MANIFEST.replace("10.96.0.0/12,", "bogus,"),
            ("/etc/kubernetes/pki/apiserver.crt", ("fd00:10:96::/112",), 1),
            id="a-bad-range-is-a-problem-the-good-one-still-counts",
        ),
        pytest.param("- a list\n", (None, (), 1), id="not-a-manifest"),
        pytest.param("a: [unclosed\n", (None, (), 1), id="not-yaml"),
    ],
)
def test_apiserver_manifest_is_read_for_its_certificate_and_service_range(
    text: str, expected: tuple[str | None, tuple[str, ...], int]
) -> None:
    cert, ranges, problems = reserved.apiserver_manifest(text)
    assert (cert, tuple(map(str, ranges)), len(problems)) == expected


def test_renamed_fields_are_refused_with_their_new_name() -> None:
    head = {"apiVersion": policy.API_VERSION, "kind": policy.KIND}
    for old, new in (
        ("extraDNSSuffixes", "allowedDNSSuffixes"),
        ("extraIPRanges", "allowedIPRanges"),
    ):
        with pytest.raises(policy.PolicyError) as raised:
            policy.from_mapping({**head, "spec": {"csrSigner": {old: []}}}, "p.yaml")
        assert raised.value.errors == [f"p.yaml: spec.csrSigner.{old}: renamed {new}: " + _why(old)]


def _why(old: str) -> str:
    props: dict[str, Any] = policy.schema()["$defs"]["csrSigner"]["properties"]
    return str(props[old]["description"])


@pytest.mark.parametrize(
    ("signer", "message"),
    [
        pytest.param(
            {"allowedDNSSuffixes": ["default.svc"]},
            "spec.csrSigner.allowedDNSSuffixes[0]: 'default.svc' is inside 'svc'",
            id="a-suffix-in-the-svc-zone",
        ),
        pytest.param(
            {"allowedDNSSuffixes": [".corp.k8s"], "clusterDomain": "corp.k8s"},
            "spec.csrSigner.allowedDNSSuffixes[0]: '.corp.k8s' is inside 'corp.k8s'",
            id="the-cluster-domain-itself",
        ),
        pytest.param(
            {"maxDNSNames": 11},
            "spec.csrSigner.maxDNSNames: 11 is greater than the maximum of 10",
            id="too-many-dns-names",
        ),
        pytest.param(
            {"maxDNSNames": 0},
            "spec.csrSigner.maxDNSNames: 0 is less than the minimum of 1",
            id="no-dns-name-at-all",
        ),
        pytest.param(
            {"allowedIPRanges": ["10.0.0.1/8"]},
            "spec.csrSigner.allowedIPRanges[0]: '10.0.0.1/8' is not a CIDR",
            id="a-range-with-host-bits",
        ),
        pytest.param(
            {"serviceCIDRs": ["10.96.0.0"]},
            "spec.csrSigner.serviceCIDRs[0]: '10.96.0.0' is not a CIDR",
            id="a-service-range-without-a-length",
        ),
        pytest.param(
            {"clusterDomain": "Cluster.Local."},
            "spec.csrSigner.clusterDomain: 'Cluster.Local.' does not match",
            id="a-cluster-domain-that-is-not-a-lowercase-name",
        ),
    ],
)
def test_invalid_csr_signer_fields_are_named(signer: dict[str, Any], message: str) -> None:
    head = {"apiVersion": policy.API_VERSION, "kind": policy.KIND}
    with pytest.raises(policy.PolicyError) as raised:
        policy.from_mapping({**head, "spec": {"csrSigner": signer}}, "p.yaml")
    assert any(message in e for e in raised.value.errors), raised.value.errors
