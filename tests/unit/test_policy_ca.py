"""The policy's ``ca`` section: defaults, validation naming the field, refused in overrides,
and carried to nodes through ``kucero.io/desired``."""

from __future__ import annotations

import datetime as dt

import pytest

from reconciler.decide import desired, policy

HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"


def load(body: str = "") -> policy.Policy:
    return policy.load(HEAD + body, "p.yaml")


def test_ca_defaults_are_report_a_year_ahead_and_ten_years() -> None:
    spec = policy.resolve(load(), {})
    assert spec.ca.mode == "report"
    assert spec.ca.renew_before == dt.timedelta(days=365)
    assert spec.ca.certificate_validity == dt.timedelta(days=3650)


def test_ca_fields_reach_the_node_spec() -> None:
    spec = policy.resolve(
        load("spec: {ca: {mode: renew, renewBefore: 2h, certificateValidity: 48h}}\n"), {}
    )
    assert (spec.ca.mode, spec.ca.renew_before, spec.ca.certificate_validity) == (
        "renew",
        dt.timedelta(hours=2),
        dt.timedelta(hours=48),
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            "spec: {ca: {mode: rotate}}\n",
            "p.yaml: spec.ca.mode: 'rotate' is not one of: report, renew",
            id="unknown-mode",
        ),
        pytest.param(
            "spec: {ca: {renewBefore: -1h}}\n",
            "p.yaml: spec.ca.renewBefore: '-1h' is not a valid duration (must be positive)",
            id="negative-renew-before",
        ),
        pytest.param(
            "spec: {ca: {certificateValidity: 10y}}\n",
            "p.yaml: spec.ca.certificateValidity: '10y' is not a valid duration",
            id="validity-not-a-go-duration",
        ),
        pytest.param(
            "spec: {ca: {keyAlgorithm: rsa}}\n",
            "p.yaml: spec.ca: unknown field 'keyAlgorithm'",
            id="unknown-field",
        ),
        pytest.param(
            "spec: {ca: {renewBefore: 30m}}\n",
            "p.yaml: spec.ca.renewBefore: '30m' is below the minimum of 1h",
            id="renew-before-below-its-floor",
        ),
        pytest.param(
            "spec: {ca: {renewBefore: 87600h}}\n",
            "p.yaml: spec.ca.renewBefore: 87600h must be shorter than ca.certificateValidity",
            id="renew-before-not-shorter-than-validity",
        ),
        pytest.param(
            "spec: {checkInterval: 2h, ca: {renewBefore: 8000h, certificateValidity: 8001h}}\n",
            "p.yaml: spec.ca.certificateValidity: 8001h leaves 1h0m0s before a renewed CA is due again",
            id="due-again-before-the-next-check",
        ),
    ],
)
def test_invalid_ca_section_names_the_field(body: str, message: str) -> None:
    with pytest.raises(policy.PolicyError) as e:
        load(body)
    assert any(line.startswith(message) for line in e.value.errors), e.value.errors


def test_ca_in_an_override_is_refused_saying_one_cluster_one_ca() -> None:
    body = (
        "spec:\n  overrides:\n  - nodeSelector: {matchLabels: {pool: edge}}\n"
        "    spec: {ca: {mode: renew}}\n"
    )
    with pytest.raises(policy.PolicyError) as e:
        load(body)
    assert e.value.errors == [
        "p.yaml: spec.overrides[0].spec.ca: the CA settings apply to the whole cluster "
        "(one cluster, one CA) and cannot be overridden per node: move them to spec.ca"
    ]


def test_ca_in_an_override_with_other_unknown_fields_reports_both() -> None:
    body = "spec:\n  overrides:\n  - nodeSelector: {}\n    spec: {ca: {mode: renew}, bogus: 1}\n"
    with pytest.raises(policy.PolicyError) as e:
        load(body)
    (line,) = e.value.errors
    assert "spec.overrides[0].spec.ca: the CA settings apply to the whole cluster" in line
    assert "unknown field 'bogus'" in line


def test_overrides_never_change_the_ca_a_node_resolves() -> None:
    loaded = load(
        "spec:\n  ca: {mode: renew}\n  overrides:\n  - nodeSelector: {matchLabels: {pool: edge}}\n"
        "    spec: {kubeadm: {renewBefore: 1440h}}\n"
    )
    edge = policy.resolve(loaded, {"pool": "edge"})
    assert edge.override == 0
    assert edge.ca == policy.resolve(loaded, {}).ca


def test_ca_section_round_trips_through_the_desired_annotation() -> None:
    spec = policy.resolve(load("spec: {ca: {mode: renew, renewBefore: 4380h}}\n"), {})
    back = desired.decode(desired.encode(spec))
    assert back.ca == spec.ca


def test_ca_mode_changes_the_revision() -> None:
    assert load().revision != load("spec: {ca: {mode: renew}}\n").revision
