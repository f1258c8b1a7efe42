"""The certificate kucero issues for an approved serving CSR, and the CA it refuses to use."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from reconciler import fabricate
from reconciler.decide import csr, csrsign, pki
from tests import csrs
from tests.unit.test_csr_checks import NODE, NOW, REFUSED, SPEC


@pytest.fixture(scope="module")
def ca() -> tuple[x509.Certificate, pki.PrivateKey]:
    return fabricate.make_ca("kubernetes", NOW - dt.timedelta(days=1), "ecdsa")


def _approved(**pem_kwargs: object) -> csr.Verdict:
    usages = csrs.RSA_USAGES if pem_kwargs.get("key_kind") == "rsa" else csrs.ECDSA_USAGES
    pem = csrs.request_pem("n1", **pem_kwargs)  # type: ignore[arg-type]
    verdict = csr.check(csrs.csr_object(pem, "n1", usages=usages), NODE, SPEC, REFUSED, NOW)
    assert verdict.decision is csr.Decision.APPROVE, verdict.message
    return verdict


@pytest.mark.parametrize("key_kind", ["ecdsa", "rsa"])
def test_issued_certificate_has_only_what_was_checked(ca: tuple, key_kind: str) -> None:
    verdict = _approved(key_kind=key_kind, dns=["n1.internal"], ips=["10.0.0.1", "fd00::1"])
    assert verdict.request and verdict.validity
    cert = csrsign.build(verdict.request, verdict.usages, ca[0], ca[1], 99, NOW, verdict.validity)
    assert pki.issued_by(cert, ca[0])
    assert cert.subject == verdict.request.csr.subject
    assert cert.serial_number == 99
    assert cert.not_valid_before_utc == NOW - csrsign.BACKDATE
    assert cert.not_valid_after_utc == NOW + SPEC.certificate_validity
    ext = {e.oid: e for e in cert.extensions}
    constraints = ext[x509.BasicConstraints.oid]
    assert constraints.critical and constraints.value.ca is False
    usage = ext[x509.KeyUsage.oid].value
    assert usage.digital_signature and usage.key_encipherment == (key_kind == "rsa")
    assert not usage.key_cert_sign
    assert list(ext[x509.ExtendedKeyUsage.oid].value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    sans = ext[x509.SubjectAlternativeName.oid].value
    assert sans.get_values_for_type(x509.DNSName) == ["n1.internal"]
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.1", "fd00::1"]
    ca_ski = ca[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ext[x509.AuthorityKeyIdentifier.oid].value.key_identifier == ca_ski.digest
    assert x509.SubjectKeyIdentifier.oid in ext
    assert len(ext) == 6


def test_validity_is_capped_at_the_ca_end() -> None:
    short_ca = fabricate.make_ca("k", NOW - dt.timedelta(days=1), "ecdsa", dt.timedelta(days=30))
    verdict = _approved()
    assert verdict.request and verdict.validity
    cert = csrsign.build(verdict.request, verdict.usages, *short_ca, 1, NOW, verdict.validity)
    assert cert.not_valid_after_utc == short_ca[0].not_valid_after_utc


def test_usable_ca_has_no_problem(ca: tuple) -> None:
    assert csrsign.ca_problem(ca[0], ca[1], NOW) is None


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        (NOW + dt.timedelta(days=3651), csr.Reason.CA_EXPIRED),
        (NOW - dt.timedelta(days=2), csr.Reason.CA_NOT_YET_VALID),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_ca_outside_its_validity_must_not_sign(
    ca: tuple, when: dt.datetime, reason: csr.Reason
) -> None:
    problem = csrsign.ca_problem(ca[0], ca[1], when)
    assert problem and problem[0] is reason


def test_ca_with_a_foreign_key_must_not_sign(ca: tuple) -> None:
    other = fabricate.new_key("ecdsa")
    problem = csrsign.ca_problem(ca[0], other, NOW)
    assert problem and problem[0] is csr.Reason.CA_KEY_MISMATCH
    assert "PRIVATE" not in problem[1]
