"""Policy loading: schema errors name the field, defaults, cross-field rules, overrides, revision."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from reconciler.decide import policy

REPO = Path(__file__).resolve().parents[2]
HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"


def load(body: str = "", **kwargs: object) -> policy.Policy:
    return policy.load(HEAD + body, "p.yaml", **kwargs)  # type: ignore[arg-type]


# policies/kustomization.yaml turns default.yaml into the ConfigMap; it is not a policy.
POLICIES = sorted(p for p in (REPO / "policies").glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_every_shipped_policy_is_valid(path: Path) -> None:
    loaded = policy.load(path.read_bytes(), str(path))
    assert len(loaded.revision) == 16


def test_default_yaml_spells_out_exactly_the_defaults() -> None:
    shipped = policy.load((REPO / "policies" / "default.yaml").read_bytes(), "default.yaml")
    assert shipped.document == load().document
    assert shipped.revision == load().revision


def test_schema_is_valid_json_schema_and_lists_every_kubeadm_name() -> None:
    import jsonschema

    from reconciler.model import kubeadm

    schema = json.loads((REPO / "schema" / "kucero.io_v1alpha1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    names = schema["$defs"]["kubeadm"]["properties"]["certificates"]["items"]["enum"]
    assert sorted(names) == sorted(kubeadm.NAMES)


def test_empty_policy_gets_every_default() -> None:
    spec = policy.resolve(load(), {})
    assert spec.paused is False
    assert spec.check_interval == dt.timedelta(hours=1)
    assert spec.kubeadm.renew_before == dt.timedelta(days=30)
    assert spec.kubeadm.certificate_validity == dt.timedelta(days=365)
    assert spec.kubeadm.restart == "manifest-move"
    assert spec.kubeadm.health_timeout == dt.timedelta(minutes=5)
    assert spec.kubeadm.backup_retain == 5
    assert spec.kubelet.rotate_client_certificates and spec.kubelet.rotate_server_certificates
    assert spec.kubelet.restart == "systemctl"


def test_seed_flag_defaults_apply_only_where_the_policy_is_silent() -> None:
    flags = {"kubeadm": {"renewBefore": "48h"}, "checkInterval": "10m"}
    spec = policy.resolve(load("spec:\n  checkInterval: 2h\n", defaults=flags), {})
    assert spec.kubeadm.renew_before == dt.timedelta(hours=48)
    assert spec.check_interval == dt.timedelta(hours=2)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            "spec:\n  kubeadm:\n    renewBefore: -3h\n",
            "spec.kubeadm.renewBefore: '-3h' is not a valid duration",
            id="negative-duration",
        ),
        pytest.param(
            "spec:\n  kubeadm:\n    healthTimeout: 0s\n",
            "spec.kubeadm.healthTimeout: '0s' is not a valid duration (must be positive)",
            id="zero-duration",
        ),
        pytest.param(
            "spec:\n  checkInterval: 1d\n",
            "spec.checkInterval: '1d' is not a valid duration",
            id="day-unit",
        ),
        pytest.param(
            "spec:\n  kubeadm:\n    renewBefore: 720\n",
            "spec.kubeadm.renewBefore: 720 is not a valid duration",
            id="number-duration",
        ),
        pytest.param(
            "spec:\n  paused: maybe\n",
            "spec.paused: 'maybe' is not of type boolean",
            id="wrong-type",
        ),
        pytest.param(
            "spec:\n  kubeadm:\n    renewbefore: 1h\n",
            "spec.kubeadm: unknown field 'renewbefore'",
            id="unknown-field",
        ),
        pytest.param("extra: 1\n", "unknown field 'extra'", id="unknown-top-level-field"),
        pytest.param(
            "spec:\n  kubeadm:\n    certificates: [apiserver, ca]\n",
            "spec.kubeadm.certificates[1]: 'ca' is not one of",
            id="ca-is-not-a-kubeadm-leaf",
        ),
        pytest.param(
            "spec:\n  kubeadm:\n    restart: reboot\n",
            "spec.kubeadm.restart: 'reboot' is not one of: manifest-move, crictl, none",
            id="unknown-restart",
        ),
        pytest.param(
            "spec:\n  csrSigner:\n    allowedIPRanges: [10.0.0.1/8]\n",
            "spec.csrSigner.allowedIPRanges[0]: '10.0.0.1/8' is not a CIDR",
            id="cidr-with-host-bits",
        ),
        pytest.param(
            "spec:\n  csrSigner:\n    allowedIPRanges: [10.0.0.0]\n",
            "spec.csrSigner.allowedIPRanges[0]: '10.0.0.0' is not a CIDR",
            id="address-not-cidr",
        ),
        pytest.param(
            "spec:\n  rollout:\n    maxConcurrentNodes: 0\n",
            "spec.rollout.maxConcurrentNodes: 0 is less than the minimum of 1",
            id="zero-nodes",
        ),
        pytest.param(
            "spec:\n  overrides:\n  - spec: {paused: true}\n",
            "spec.overrides[0]: 'nodeSelector' is a required property",
            id="override-without-selector",
        ),
        pytest.param(
            "spec:\n  overrides:\n  - nodeSelector: {}\n    spec: {rollout: {maxConcurrentNodes: 2}}\n",
            "spec.overrides[0].spec: unknown field 'rollout'",
            id="cluster-wide-field-in-override",
        ),
        pytest.param(
            "spec:\n  kubeadm:\n    renewBefore: 8760h\n",
            "spec.kubeadm.renewBefore: 8760h must be shorter than kubeadm.certificateValidity",
            id="renew-before-equals-validity",
        ),
        pytest.param(
            "spec:\n  overrides:\n  - nodeSelector: {}\n    spec: {kubeadm: {certificateValidity: 100h}}\n",
            "spec.overrides[0].spec.kubeadm.renewBefore: 720h must be shorter",
            id="override-breaks-cross-field-rule",
        ),
    ],
)
def test_invalid_policy_error_names_file_and_field(body: str, message: str) -> None:
    with pytest.raises(policy.PolicyError) as caught:
        load(body)
    assert any(line.startswith("p.yaml: ") and message in line for line in caught.value.errors), (
        caught.value.errors
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "apiVersion: kucero.io/v2\nkind: RotationPolicy\n",
            "p.yaml: apiVersion: unsupported apiVersion 'kucero.io/v2' (supported: kucero.io/v1alpha1)",
            id="unknown-api-version",
        ),
        pytest.param(
            "kind: RotationPolicy\n",
            "p.yaml: 'apiVersion' is a required property",
            id="missing-api-version",
        ),
        pytest.param(
            HEAD.replace("RotationPolicy", "Policy"),
            "p.yaml: kind: 'Policy' must be 'RotationPolicy'",
            id="wrong-kind",
        ),
        pytest.param(
            "- a\n- b\n", "p.yaml: the policy must be a YAML mapping, got list", id="yaml-list"
        ),
        pytest.param(
            "just a string\n",
            "p.yaml: the policy must be a YAML mapping, got str",
            id="yaml-scalar",
        ),
        pytest.param(
            "", "p.yaml: the policy must be a YAML mapping, got empty document", id="empty-file"
        ),
        pytest.param("a: [\n", "p.yaml: invalid YAML", id="broken-yaml"),
    ],
)
def test_document_level_errors(text: str, message: str) -> None:
    with pytest.raises(policy.PolicyError) as caught:
        policy.load(text, "p.yaml")
    assert any(line.startswith(message) for line in caught.value.errors), caught.value.errors


def test_duplicate_keys_are_refused_naming_the_key() -> None:
    with pytest.raises(
        policy.PolicyError, match=r"p\.yaml: invalid YAML: .*duplicate key 'kubeadm'"
    ):
        load("spec:\n  kubeadm: {restart: none}\n  kubeadm: {renewBefore: 1h}\n")


def test_durations_accept_a_plus_sign_as_go_does() -> None:
    spec = policy.resolve(load("spec: {kubeadm: {renewBefore: +48h}}\n"), {})
    assert spec.kubeadm.renew_before == dt.timedelta(hours=48)


def test_override_specs_carry_no_schema_defaults() -> None:
    override = policy.schema()["$defs"]["spec"]["properties"]["overrides"]["items"]["properties"][
        "spec"
    ]
    assert "default" not in json.dumps(override)


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(policy.PolicyError) as caught:
        load("spec:\n  paused: 1\n  kubeadm: {restart: x, renewBefore: soon}\n")
    assert len(caught.value.errors) == 3


EDGE = """\
spec:
  overrides:
  - nodeSelector: {matchLabels: {pool: edge}}
    spec: {kubeadm: {renewBefore: 1440h}, kubelet: {rotateServerCertificates: false}}
  - nodeSelector:
      matchExpressions:
      - {key: node-role.kubernetes.io/control-plane, operator: Exists}
      - {key: zone, operator: NotIn, values: [z9]}
    spec: {checkInterval: 15m}
"""


@pytest.mark.parametrize(
    ("labels", "override", "renew_days", "check"),
    [
        pytest.param({}, None, 30, dt.timedelta(hours=1), id="no-labels-gets-spec"),
        pytest.param({"pool": "edge"}, 0, 60, dt.timedelta(hours=1), id="edge-pool"),
        pytest.param(
            {"pool": "edge", "node-role.kubernetes.io/control-plane": ""},
            0,
            60,
            dt.timedelta(hours=1),
            id="first-match-wins",
        ),
        pytest.param(
            {"node-role.kubernetes.io/control-plane": ""},
            1,
            30,
            dt.timedelta(minutes=15),
            id="exists-expression",
        ),
        pytest.param(
            {"node-role.kubernetes.io/control-plane": "", "zone": "z9"},
            None,
            30,
            dt.timedelta(hours=1),
            id="notin-excludes",
        ),
        pytest.param({"pool": "core"}, None, 30, dt.timedelta(hours=1), id="label-value-differs"),
    ],
)
def test_overrides_resolve_by_node_labels(
    labels: dict[str, str], override: int | None, renew_days: int, check: dt.timedelta
) -> None:
    spec = policy.resolve(load(EDGE), labels)
    assert spec.override == override
    assert spec.kubeadm.renew_before == dt.timedelta(days=renew_days)
    assert spec.check_interval == check
    assert spec.kubelet.rotate_server_certificates is (override != 0)
    assert spec.kubeadm.certificate_validity == dt.timedelta(days=365)  # merged, not replaced


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    ],
)
def test_label_selector_semantics(
    selector: dict[str, object], labels: dict[str, str], matches: bool
) -> None:
    assert policy.selector_matches(selector, labels) is matches


def test_revision_ignores_spelling_order_and_metadata() -> None:
    a = load("metadata: {name: a}\nspec:\n  kubeadm: {renewBefore: 720h, restart: none}\n")
    b = load("spec:\n  kubeadm: {restart: none, renewBefore: 720h0m0s}\n")
    c = load("spec:\n  kubeadm: {restart: none, renewBefore: 43200m}\n")
    assert a.revision == b.revision == c.revision


def test_revision_changes_with_meaning() -> None:
    assert load().revision != load("spec: {paused: true}\n").revision


def test_resolved_spec_round_trips_as_a_policy() -> None:
    spec = policy.resolve(load(EDGE), {"pool": "edge"})
    doc = {
        "apiVersion": policy.API_VERSION,
        "kind": policy.KIND,
        "spec": policy.spec_document(spec)["spec"],
    }
    again = policy.resolve(policy.load(yaml.safe_dump(doc), "desired"), {})
    assert again.kubeadm == spec.kubeadm and again.kubelet == spec.kubelet


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", (1, False, False), id="defaults-neither-cordon-nor-drain"),
        pytest.param(
            "spec: {rollout: {cordon: true, maxConcurrentNodes: 2}}\n",
            (2, True, False),
            id="cordon-only",
        ),
        pytest.param("spec: {rollout: {drain: true}}\n", (1, False, True), id="drain"),
    ],
)
def test_rollout_fields_reach_the_node_spec(text: str, expected: tuple[int, bool, bool]) -> None:
    r = policy.resolve(load(text), {}).rollout
    assert (r.max_concurrent_nodes, r.cordon, r.drain) == expected


def test_rollout_cordon_must_be_a_boolean() -> None:
    with pytest.raises(policy.PolicyError, match=r"spec\.rollout\.cordon"):
        load("spec: {rollout: {cordon: 'yes'}}\n")


def test_only_the_policy_itself_vouches_for_a_serving_csr_approver() -> None:
    silent = policy.resolve(load(), {})
    assert silent.kubelet.rotate_server_certificates
    assert not silent.kubelet.rotate_server_certificates_set and not silent.serving_csr_approver
    flags = {"kubelet": {"rotateServerCertificates": True}}
    assert not policy.resolve(load(defaults=flags), {}).kubelet.rotate_server_certificates_set
    said = policy.resolve(load("spec: {kubelet: {rotateServerCertificates: true}}\n"), {})
    assert said.kubelet.rotate_server_certificates_set
    assert policy.resolve(load(), {}, serving_csr_approver=True).serving_csr_approver


def test_spec_document_round_trip_keeps_whether_server_rotation_was_said() -> None:
    for body in ("", "spec: {kubelet: {rotateServerCertificates: true}}\n", EDGE):
        spec = policy.resolve(load(body), {"pool": "edge"})
        doc = {"apiVersion": policy.API_VERSION, "kind": policy.KIND}
        doc["spec"] = policy.spec_document(spec)["spec"]
        again = policy.resolve(policy.load(yaml.safe_dump(doc), "desired"), {})
        assert again.kubelet == spec.kubelet


def test_integer_valued_float_retain_is_an_integer() -> None:
    spec = policy.resolve(load("spec: {kubeadm: {backup: {retain: 2.0}}}\n"), {})
    assert spec.kubeadm.backup_retain == 2 and isinstance(spec.kubeadm.backup_retain, int)


def test_unknown_fields_of_mixed_key_types_are_reported_not_sorted_into_a_crash() -> None:
    errors = policy.validate({"apiVersion": policy.API_VERSION, "kind": policy.KIND, 1: 2, "x": 3})
    assert errors == ["unknown fields 'x', 1"]
