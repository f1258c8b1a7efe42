"""What the CSR signer reads besides the CSR: the leader host's API server certificate and
Service range (node/apiserver.py, under a ``tmp_path`` host root), and DNS answers
(node/resolver.py, with an injected lookup: no DNS in tests)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from reconciler import fabricate
from reconciler.decide import pki
from reconciler.node import apiserver, resolver
from reconciler.node import host as host_

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _apiserver_cert(names: list[str], ips: list[str]) -> bytes:
    ca = fabricate.make_ca("ca", NOW, "ecdsa")
    usages = (ExtendedKeyUsageOID.SERVER_AUTH,)
    lifetime = dt.timedelta(days=365)
    sans = (*names, *ips)
    cert, _ = fabricate.make_leaf(ca, "kube-apiserver", (), usages, sans, NOW, lifetime, "ecdsa")
    return pki.cert_pem(cert)


def _write(root: Path, host_path: str, data: bytes | str) -> None:
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


MANIFEST = """\
apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver}
spec:
  containers:
  - name: kube-apiserver
    command: [kube-apiserver, --tls-cert-file=/etc/kubernetes/pki/serving.crt,
              --service-cluster-ip-range=10.100.0.0/16]
"""


def test_manifest_names_the_certificate_and_the_service_range(tmp_path: Path) -> None:
    _write(tmp_path, apiserver.MANIFEST, MANIFEST)
    _write(tmp_path, "/etc/kubernetes/pki/serving.crt", _apiserver_cert(["Cp-1."], ["10.0.0.11"]))
    facts = apiserver.read(host_.Host(tmp_path), "cp-1")
    assert facts.cert_path == "/etc/kubernetes/pki/serving.crt"
    assert facts.dns_names == frozenset({"cp-1"})
    assert facts.ips == frozenset({ipaddress.ip_address("10.0.0.11")})
    assert [str(r) for r in facts.service_cidrs] == ["10.100.0.0/16"]
    assert (facts.node_name, facts.problems) == ("cp-1", ())


def test_without_a_manifest_kubeadms_apiserver_crt_is_read(tmp_path: Path) -> None:
    _write(tmp_path, apiserver.DEFAULT_CERT, _apiserver_cert(["kubernetes"], ["10.96.0.1"]))
    facts = apiserver.read(host_.Host(tmp_path), None)
    assert facts.cert_path == apiserver.DEFAULT_CERT and facts.dns_names == {"kubernetes"}
    assert facts.service_cidrs == () and facts.problems == ()


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        pytest.param(
            {}, "apiserver.crt: not found", id="nothing-on-a-host-without-a-control-plane"
        ),
        pytest.param(
            {apiserver.DEFAULT_CERT: b"-----BEGIN CERTIFICATE-----\ngarbage\n"},
            "apiserver.crt: not a certificate",
            id="a-certificate-that-does-not-parse",
        ),
        pytest.param(
            {apiserver.MANIFEST: "spec: [", apiserver.DEFAULT_CERT: b""},
            "not a static pod manifest",
            id="a-manifest-that-is-not-yaml",
        ),
    ],
)
def test_what_cannot_be_read_is_a_problem_never_an_exception(
    tmp_path: Path, files: dict[str, bytes | str], problem: str
) -> None:
    for path, data in files.items():
        _write(tmp_path, path, data)
    facts = apiserver.read(host_.Host(tmp_path), "cp-1")
    assert facts.dns_names == frozenset() and facts.ips == frozenset()
    assert any(problem in p for p in facts.problems), facts.problems


def test_a_directory_where_the_certificate_should_be_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / apiserver.DEFAULT_CERT.lstrip("/")).mkdir(parents=True)
    facts = apiserver.read(host_.Host(tmp_path), "cp-1")
    assert facts.problems and "apiserver.crt" in facts.problems[0]


def test_facts_are_cached_for_a_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, apiserver.DEFAULT_CERT, _apiserver_cert(["a"], []))
    clock = [1000.0]
    monkeypatch.setattr(apiserver.time, "monotonic", lambda: clock[0])
    facts = apiserver.APIServerFacts(host_.Host(tmp_path), "cp-1")
    assert facts.get().dns_names == {"a"}
    _write(tmp_path, apiserver.DEFAULT_CERT, _apiserver_cert(["b"], []))
    assert facts.get().dns_names == {"a"}
    clock[0] += apiserver.MAX_AGE_SECONDS
    assert facts.get().dns_names == {"b"}


def _answers(*addresses: str) -> list[tuple[Any, ...]]:
    return [
        (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0))
        for a in addresses
    ]


def test_resolver_returns_each_names_addresses_once() -> None:
    table = {"n1.example.com": _answers("10.0.0.21", "10.0.0.21", "fd00::21")}

    def lookup(name: str, *_: Any) -> list[tuple[Any, ...]]:
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[name]

    got = resolver.resolve(["N1.example.com", "missing.example.com"], lookup=lookup)
    assert got == {"n1.example.com": ("10.0.0.21", "fd00::21")}


def test_resolver_gives_up_on_a_slow_lookup_and_leaves_the_name_out() -> None:
    release = threading.Event()

    def lookup(name: str, *_: Any) -> list[tuple[Any, ...]]:
        if name == "slow.example.com":
            release.wait(5)
        return _answers("10.0.0.21")

    started = time.monotonic()
    got = resolver.resolve(["slow.example.com", "fast.example.com"], 0.2, lookup)
    release.set()
    assert got == {"fast.example.com": ("10.0.0.21",)}
    assert time.monotonic() - started < 2
