"""Renewing a CA certificate from its own key, and accepting or refusing a published one.

Every case is a real certificate: renewed ones must keep verifying the leaves the old CA
signed (checked with cryptography's verifier, which builds the chain as Go and OpenSSL do), and
a published certificate is accepted only when it is this node's CA (subject, key, extensions,
self-signature), valid now.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from reconciler import fabricate
from reconciler.decide import carenewal, pki

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
TEN_YEARS = dt.timedelta(days=3650)


@pytest.fixture(scope="module", params=["rsa", "ecdsa"])
def ca(request: pytest.FixtureRequest) -> tuple[x509.Certificate, pki.PrivateKey]:
    """A kubeadm-like CA ending in 30 days."""
    return fabricate.make_ca("kubernetes", NOW - TEN_YEARS, request.param, TEN_YEARS + 30 * DAY)


@pytest.fixture(scope="module")
def other_key() -> pki.PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType:
    return cert.extensions.get_extension_for_class(kind).value  # type: ignore[arg-type]


def _verifies(leaf: x509.Certificate, root: x509.Certificate, at: dt.datetime) -> bool:
    builder = verification.PolicyBuilder().store(verification.Store([root])).time(at)
    verifier = builder.build_server_verifier(x509.DNSName("kubernetes.default.svc"))
    try:
        verifier.verify(leaf, [])
    except verification.VerificationError:
        return False
    return True


def test_renewed_ca_has_same_subject_key_and_identifiers_and_a_new_validity(
    ca: tuple[x509.Certificate, pki.PrivateKey],
) -> None:
    cert, key = ca
    renewed = carenewal.renew(cert, key, 1234, NOW, TEN_YEARS)
    assert carenewal.raw_subject(renewed) == carenewal.raw_subject(cert)
    assert renewed.issuer == renewed.subject
    assert carenewal.public_key_der(renewed) == carenewal.public_key_der(cert)
    assert _ext(renewed, x509.SubjectKeyIdentifier) == _ext(cert, x509.SubjectKeyIdentifier)
    assert _ext(renewed, x509.BasicConstraints) == _ext(cert, x509.BasicConstraints)
    assert _ext(renewed, x509.KeyUsage) == _ext(cert, x509.KeyUsage)
    assert renewed.serial_number == 1234
    assert renewed.not_valid_before_utc == NOW - pki.BACKDATE
    assert renewed.not_valid_after_utc == NOW + TEN_YEARS
    assert carenewal.self_signed(renewed)


def test_leaves_of_the_old_ca_verify_against_the_renewed_one_past_the_old_end(
    ca: tuple[x509.Certificate, pki.PrivateKey],
) -> None:
    cert, key = ca
    sans = ("kubernetes.default.svc",)
    leaf, _ = fabricate.make_leaf(
        ca, "kube-apiserver", (), fabricate.SERVER, sans, NOW, 400 * DAY, "ecdsa"
    )
    renewed = carenewal.renew(cert, key, 99, NOW, TEN_YEARS)
    after_old_end = cert.not_valid_after_utc + DAY
    assert _verifies(leaf, cert, NOW)
    assert not _verifies(leaf, cert, after_old_end)  # the old anchor no longer does
    assert _verifies(leaf, renewed, after_old_end)


def test_aki_of_a_renewed_ca_stays_consistent_with_its_ski() -> None:
    cert, key = fabricate.make_ca("etcd-ca", NOW, "ecdsa", 30 * DAY)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())  # type: ignore[arg-type]
    with_aki = (
        x509.CertificateBuilder(extensions=list(cert.extensions))
        .subject_name(cert.subject)
        .issuer_name(cert.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(aki, critical=False)
        .sign(key, pki.signature_hash_for(key))
    )
    renewed = carenewal.renew(with_aki, key, 8, NOW, TEN_YEARS)
    ski = _ext(renewed, x509.SubjectKeyIdentifier)
    assert _ext(renewed, x509.AuthorityKeyIdentifier).key_identifier == ski.digest  # type: ignore[attr-defined]


def test_an_expired_ca_still_renews_because_the_key_is_what_matters() -> None:
    cert, key = fabricate.make_ca("kubernetes", NOW, "ecdsa", -3 * DAY)
    assert cert.not_valid_after_utc < NOW
    renewed = carenewal.renew(cert, key, 5, NOW, TEN_YEARS)
    assert carenewal.check_published(renewed, cert, NOW).accepted


def test_renewal_with_a_key_that_is_not_the_cas_is_refused(
    ca: tuple[x509.Certificate, pki.PrivateKey], other_key: pki.PrivateKey
) -> None:
    with pytest.raises(carenewal.CARenewalError, match="does not match"):
        carenewal.renew(ca[0], other_key, 1, NOW, TEN_YEARS)


def test_an_intermediate_ca_is_not_renewed_from_its_own_key() -> None:
    root = fabricate.make_ca("root", NOW, "ecdsa")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root[0].subject)
        .public_key(key.public_key())
        .serial_number(3)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root[1], pki.signature_hash_for(root[1]))
    )
    with pytest.raises(carenewal.CARenewalError, match="not self-signed"):
        carenewal.renew(intermediate, key, 1, NOW, TEN_YEARS)


def _made(
    like: x509.Certificate,
    key: pki.PrivateKey,
    signer: pki.PrivateKey,
    subject: x509.Name | None = None,
    issuer: x509.Name | None = None,
    extra: x509.ExtensionType | None = None,
    ca: bool = True,
    start: dt.datetime = NOW - DAY,
    end: dt.datetime = NOW + TEN_YEARS,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject or like.subject)
        .issuer_name(issuer or subject or like.subject)
        .public_key(key.public_key())
        .serial_number(42)
        .not_valid_before(start)
        .not_valid_after(end)
    )
    for ext in like.extensions:
        value = (
            x509.BasicConstraints(ca=False, path_length=None)
            if (isinstance(ext.value, x509.BasicConstraints) and not ca)
            else ext.value
        )
        builder = builder.add_extension(value, ext.critical)
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    return builder.sign(signer, pki.signature_hash_for(signer))


NAME_CONSTRAINTS = x509.NameConstraints(
    permitted_subtrees=[x509.DNSName("evil.example")], excluded_subtrees=None
)
OTHER_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetez")])
# Same text, another ASN.1 string type: chain building compares the encoded bytes.
PRINTABLE_NAME = x509.Name(
    [x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes", x509.name._ASN1Type.PrintableString)]
)


@pytest.mark.parametrize(
    ("case", "refusal"),
    [
        pytest.param("same", None, id="same-key-same-subject-accepted"),
        pytest.param("other-key", carenewal.Refusal.KEY_MISMATCH, id="another-key"),
        pytest.param("other-subject", carenewal.Refusal.SUBJECT_MISMATCH, id="another-subject"),
        pytest.param(
            "other-encoding", carenewal.Refusal.SUBJECT_MISMATCH, id="same-text-other-encoding"
        ),
        pytest.param(
            "foreign-signer", carenewal.Refusal.NOT_SELF_SIGNED, id="our-key-signed-by-another"
        ),
        pytest.param(
            "name-constraints", carenewal.Refusal.EXTENSIONS_DIFFER, id="added-name-constraints"
        ),
        pytest.param("not-ca", carenewal.Refusal.NOT_A_CA, id="ca-false"),
        pytest.param("expired", carenewal.Refusal.EXPIRED, id="expired"),
        pytest.param("future", carenewal.Refusal.NOT_YET_VALID, id="not-yet-valid"),
    ],
)
def test_published_ca_certificate_is_accepted_only_if_it_is_this_nodes_ca(
    ca: tuple[x509.Certificate, pki.PrivateKey],
    other_key: pki.PrivateKey,
    case: str,
    refusal: carenewal.Refusal | None,
) -> None:
    local, key = ca
    published = {
        "same": lambda: _made(local, key, key),
        "other-key": lambda: _made(local, other_key, other_key),
        "other-subject": lambda: _made(local, key, key, subject=OTHER_NAME),
        "other-encoding": lambda: _made(local, key, key, subject=PRINTABLE_NAME),
        "foreign-signer": lambda: _made(local, key, other_key, issuer=OTHER_NAME),
        "name-constraints": lambda: _made(local, key, key, extra=NAME_CONSTRAINTS),
        "not-ca": lambda: _made(local, key, key, ca=False),
        "expired": lambda: _made(local, key, key, start=NOW - 2 * DAY, end=NOW - DAY),
        "future": lambda: _made(local, key, key, start=NOW + DAY),
    }[case]()
    verdict = carenewal.check_published(published, local, NOW)
    assert verdict.refusal == refusal, verdict.detail
    assert verdict.accepted == (refusal is None)


_CHOICES = st.fixed_dictionaries(
    {
        "key": st.sampled_from(["ca", "other"]),
        "signer": st.sampled_from(["ca", "other"]),
        "subject": st.sampled_from(["same", "other"]),
        "extra": st.booleans(),
        "ca": st.booleans(),
        "end_days": st.integers(-400, 4000),
    }
)


@given(choice=_CHOICES)
def test_only_a_self_signed_certificate_of_the_same_subject_key_and_extensions_is_accepted(
    choice: dict[str, object],
) -> None:
    local, key = _PROPERTY_CA
    keys = {"ca": key, "other": _PROPERTY_OTHER}
    end = NOW + dt.timedelta(days=int(choice["end_days"]))  # type: ignore[call-overload]
    published = _made(
        local,
        keys[str(choice["key"])],
        keys[str(choice["signer"])],
        subject=local.subject if choice["subject"] == "same" else OTHER_NAME,
        extra=NAME_CONSTRAINTS if choice["extra"] else None,
        ca=bool(choice["ca"]),
        start=min(NOW - DAY, end - DAY),
        end=end,
    )
    verdict = carenewal.check_published(published, local, NOW)
    honest = (
        choice["key"] == choice["signer"] == "ca"
        and choice["subject"] == "same"
        and not choice["extra"]
        and choice["ca"]
        and end > NOW
    )
    assert verdict.accepted == honest, (choice, verdict)


_PROPERTY_CA = fabricate.make_ca("kubernetes", NOW, "ecdsa")
_PROPERTY_OTHER = ec.generate_private_key(ec.SECP256R1())


_HONEST = carenewal.renew(_PROPERTY_CA[0], _PROPERTY_CA[1], 77, NOW, TEN_YEARS)
_HONEST_DER = _HONEST.public_bytes(serialization.Encoding.DER)


@given(at=st.integers(0, len(_HONEST_DER) - 1), xor=st.integers(1, 255))
def test_a_tampered_published_certificate_is_never_accepted(at: int, xor: int) -> None:
    """Any byte of an honest renewal changed: it no longer parses, or it is refused (the
    self-signature covers everything the rule does not compare itself)."""
    assert carenewal.check_published(_HONEST, _PROPERTY_CA[0], NOW).accepted
    mutated = bytearray(_HONEST_DER)
    mutated[at] ^= xor
    try:
        cert = x509.load_der_x509_certificate(bytes(mutated))
        cert.public_key()
        _ = cert.extensions, cert.subject
    except Exception:  # any parse failure is a refusal (docs/pitfalls.md: not always a ValueError)
        return
    assert not carenewal.check_published(cert, _PROPERTY_CA[0], NOW).accepted


def test_raw_subject_is_the_encoded_subject_not_a_re_encoding() -> None:
    local = _PROPERTY_CA[0]
    printable = _made(local, _PROPERTY_CA[1], _PROPERTY_CA[1], subject=PRINTABLE_NAME)
    assert printable.subject.rfc4514_string() == local.subject.rfc4514_string()
    assert carenewal.raw_subject(printable) != carenewal.raw_subject(local)
    assert carenewal.raw_subject(local) == local.subject.public_bytes()


def test_due_compares_the_remaining_life_with_renew_before() -> None:
    cert = _PROPERTY_CA[0]  # ten years from NOW
    assert not carenewal.due(cert, NOW, dt.timedelta(days=365))
    assert carenewal.due(cert, NOW + dt.timedelta(days=3650 - 364), dt.timedelta(days=365))
