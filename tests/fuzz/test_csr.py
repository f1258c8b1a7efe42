"""Property-based tests of the CSR checks and the request parser (hypothesis).

Generated requests mix what a kubelet sends with what an attacker would: names of other nodes,
subjects that differ from the requestor, SANs inside and outside the node's addresses and the
policy's extra suffixes and ranges, wildcards, email/URI SANs, extra extensions, odd usages,
weak keys, and byte-level damage to the request itself. For every one, ``check`` must return a
verdict (no exception), and an approval must satisfy an independent oracle:

- never approved when any SAN is outside the node's addresses and the extra ranges/suffixes;
- never approved when the requestor and the CN differ (or the requestor is not in system:nodes).

Profiles: ``quick`` runs in ``make test``; ``long`` in ``make fuzz`` (selected by
``KUCERO_FUZZ_PROFILE=long`` or by a loaded hypothesis profile of 10,000 examples or more, i.e.
``pytest --hypothesis-profile=long``). The module prints how many requests it generated and how
long it took (``pytest -s``).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.decide import csr
from tests import csrs
from tests.unit.test_csr_checks import NOW, SPEC

# Examples per test: quick takes seconds in `make test`; long makes the >= 100,000 requests
# of the issue across the three tests (make fuzz).
QUICK = {"requests": 400, "damaged": 200, "raw": 200}
LONG = {"requests": 50_000, "damaged": 40_000, "raw": 20_000}
PROFILE = (
    "long"
    if os.environ.get("KUCERO_FUZZ_PROFILE") == "long" or settings().max_examples >= 10_000
    else "quick"
)
EXAMPLES = LONG if PROFILE == "long" else QUICK


def _fuzz(test: str) -> settings:
    return settings(
        max_examples=EXAMPLES[test],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,  # no writes into the checkout; a failure prints its example anyway
    )


OWN_DNS = ["n1", "n1.internal", "n1.example.com"]
OWN_IPS = ["10.0.0.1", "203.0.113.7", "fd00::1"]
NODE = csrs.node_object(
    "n1",
    [
        *(("Hostname", "n1"), ("InternalDNS", "n1.internal"), ("ExternalDNS", "n1.example.com")),
        *(("InternalIP", "10.0.0.1"), ("ExternalIP", "203.0.113.7"), ("InternalIP", "fd00::1")),
    ],
)
FOREIGN_DNS = ["n2", "n2.internal", "nodes.example.org", "evilnodes.example.org", "localhost"]
FOREIGN_IPS = ["10.0.0.2", "127.0.0.1", "0.0.0.0", "192.168.101.1", "::1", "fd00::2"]
LABEL = st.from_regex(r"\A[a-z0-9*_-]{1,12}\Z")

_dns = st.one_of(
    st.sampled_from(OWN_DNS + FOREIGN_DNS + [d.upper() for d in OWN_DNS]),
    st.builds(lambda a: f"{a}.nodes.example.org", LABEL),
    st.builds(lambda a, b: f"{a}.{b}", LABEL, LABEL),
)
_ip = st.one_of(
    st.sampled_from(OWN_IPS + FOREIGN_IPS),
    st.builds(lambda n: f"192.168.100.{n}", st.integers(0, 255)),
    st.ip_addresses().map(str),
)
_node = st.sampled_from(["n1", "n2", "n1 ", "N1", "n1.internal", ""])
_usage = st.sampled_from(
    ["server auth", "digital signature", "key encipherment", "client auth", "cert sign", "x"]
)
_extension = st.sampled_from(
    [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        (x509.KeyUsage(True, False, False, False, False, True, False, False, False), True),
    ]
)
COUNTS: dict[str, int] = {}


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """(CSR object, the requestor's node name or '') with every field drawn."""
    requestor = draw(_node)
    cn = draw(st.one_of(st.just(f"system:node:{requestor}"), _node.map("system:node:{}".format)))
    pem = csrs.request_pem(
        requestor,
        cn=cn,
        orgs=draw(st.sampled_from([("system:nodes",), (), ("system:nodes", "system:masters")])),
        dns=draw(st.lists(_dns, max_size=3)),
        ips=draw(st.lists(_ip, max_size=3)),
        emails=draw(st.lists(st.just("root@n1"), max_size=1)),
        uris=draw(st.lists(st.just("spiffe://cluster/n1"), max_size=1)),
        extensions=draw(st.lists(_extension, max_size=1)),
        key_kind=draw(
            st.sampled_from(["ecdsa", "ecdsa", "rsa", "ecdsa-p384", "rsa-1024", "ed25519"])
        ),
    )
    username = draw(
        st.sampled_from(
            [f"system:node:{requestor}", "system:node:n1", "system:serviceaccount:kube-system:x"]
        )
    )
    groups = draw(
        st.sampled_from([["system:nodes"], ["system:authenticated"], ["system:nodes", "x"], []])
    )
    usages = draw(st.lists(_usage, min_size=0, max_size=4))
    obj = csrs.csr_object(
        pem,
        requestor,
        username=username,
        groups=groups,
        usages=usages,
        expiration_seconds=draw(st.none() | st.integers(-10, 10**9)),
        created=NOW - dt.timedelta(seconds=draw(st.integers(0, 3600))),
    )
    return obj, username


@st.composite
def damaged(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request with bytes flipped, cut or inserted in its DER or its base64."""
    obj, _ = draw(requests())
    parsed = x509.load_pem_x509_csr(base64.b64decode(obj["spec"]["request"]))
    der = bytearray(parsed.public_bytes(serialization.Encoding.DER))
    for _ in range(draw(st.integers(1, 4))):
        # ECDSA signatures vary in length: positions are drawn independently of it, so that
        # hypothesis replays the same draws (else FlakyStrategyDefinition)
        where = draw(st.integers(0, 4096)) % max(len(der), 1)
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            der[where] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del der[where:]
            if not der:
                der = bytearray(b"\x30")
        else:
            der[where:where] = draw(st.binary(min_size=1, max_size=8))
    body = base64.encodebytes(bytes(der)).decode()
    pem = f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"
    obj["spec"]["request"] = base64.b64encode(pem.encode()).decode()
    return obj


def _owned(verdict: csr.Verdict) -> bool:
    """The oracle, written independently of decide/csr.py's helpers."""
    assert verdict.request is not None
    dns_ok = {d.lower() for d in OWN_DNS}
    ips_ok = {ipaddress.ip_address(i) for i in OWN_IPS}
    label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    for name in verdict.request.dns_names:
        lowered = name.lower()
        under = lowered.endswith(".nodes.example.org") and all(
            label.match(part) for part in lowered.split(".")
        )
        if lowered not in dns_ok and not under:
            return False
    extra = ipaddress.ip_network("192.168.100.0/24")
    return all(ip in ips_ok or ip in extra for ip in verdict.request.ips)


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    start = time.perf_counter()
    yield
    total = sum(COUNTS.values())
    print(
        f"\nfuzz ({PROFILE}): {total} generated requests "
        f"{dict(COUNTS)} in {time.perf_counter() - start:.1f}s, 0 unhandled exceptions"
    )


@_fuzz("requests")
@given(requests())
def test_approval_implies_ownership_and_matching_requestor(
    drawn: tuple[dict[str, Any], str],
) -> None:
    obj, username = drawn
    COUNTS["requests"] = COUNTS.get("requests", 0) + 1
    verdict = csr.check(obj, NODE if username == "system:node:n1" else None, SPEC, NOW)
    assert isinstance(verdict.reason, csr.Reason)
    if verdict.decision is csr.Decision.APPROVE:
        request = verdict.request
        assert request is not None
        names = request.csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert [a.value for a in names] == [username], "approved though requestor and CN differ"
        assert "system:nodes" in obj["spec"]["groups"]
        assert _owned(verdict), "approved a SAN outside the node's addresses and extra ranges"
        assert request.dns_names or request.ips
        assert verdict.validity is not None
        assert csr.MIN_VALIDITY <= verdict.validity <= SPEC.certificate_validity


@_fuzz("damaged")
@given(damaged())
def test_damaged_requests_never_raise_and_never_approve_foreign_names(obj: dict[str, Any]) -> None:
    COUNTS["damaged"] = COUNTS.get("damaged", 0) + 1
    verdict = csr.check(obj, NODE, SPEC, NOW)
    if verdict.decision is csr.Decision.APPROVE:
        assert _owned(verdict)


@_fuzz("raw")
@given(
    st.one_of(
        st.binary(max_size=600).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=200)
    )
)
def test_parser_returns_a_request_or_a_denial(encoded: str) -> None:
    COUNTS["raw"] = COUNTS.get("raw", 0) + 1
    parsed = csr.parse(encoded)
    assert isinstance(parsed, x509.CertificateSigningRequest | csr.Verdict)
    if isinstance(parsed, csr.Verdict):
        assert parsed.decision is csr.Decision.DENY
