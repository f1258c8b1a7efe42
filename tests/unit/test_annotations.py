"""``kucero.io/desired`` decoding and ``kucero.io/status`` encoding, as tables."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from reconciler.decide import desired, policy, status

HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def _spec(text: str = "") -> object:
    return policy.resolve(policy.load(HEAD + text), {"pool": "edge"})


EDGE = (
    "spec:\n"
    "  rollout: {maxConcurrentNodes: 3, cordon: true}\n"
    "  kubeadm: {restart: none}\n"
    "  overrides:\n"
    "  - nodeSelector: {matchLabels: {pool: edge}}\n"
    "    spec: {paused: true, kubeadm: {renewBefore: 1440h}}\n"
)


def test_desired_round_trips_with_revision_override_and_rollout() -> None:
    spec = _spec(EDGE)
    again = desired.decode(desired.encode(spec))  # type: ignore[arg-type]
    assert again == spec


def test_desired_is_compact_json() -> None:
    text = desired.encode(_spec())  # type: ignore[arg-type]
    assert " " not in text and json.loads(text)["revision"]


def _good() -> dict[str, object]:
    return json.loads(desired.encode(_spec()))  # type: ignore[arg-type,no-any-return]


def _with(**changes: object) -> str:
    doc = _good()
    doc.update(changes)
    return json.dumps(doc)


def _with_spec(path: str, value: object) -> str:
    doc = _good()
    node = doc["spec"]
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]  # type: ignore[index]
    node[keys[-1]] = value  # type: ignore[index]
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(None, "is not set", id="missing"),
        pytest.param("", "is not set", id="empty"),
        pytest.param("{not json", "is not JSON", id="not-json"),
        pytest.param('["a"]', "must be a JSON object", id="a-list"),
        pytest.param(_with(revision=""), "revision", id="empty-revision"),
        pytest.param(_with(revision=7), "revision", id="numeric-revision"),
        pytest.param(_with(override="x"), "override", id="override-not-an-index"),
        pytest.param(_with(extra=1), "unknown field", id="unknown-top-level-field"),
        pytest.param(_with(spec=[]), "spec: must be an object", id="spec-not-an-object"),
        pytest.param(
            _with_spec("kubeadm.renewBefore", "-3h"),
            "spec.kubeadm.renewBefore",
            id="negative-duration-names-the-field",
        ),
        pytest.param(
            _with_spec("kubeadm.restart", "reboot"),
            "spec.kubeadm.restart",
            id="unknown-restart-strategy",
        ),
        pytest.param(
            _with_spec("kubeadm.renewBefore", "9000h"),
            "must be shorter than",
            id="renew-before-beyond-validity",
        ),
        pytest.param(_with_spec("bogus", True), "unknown field", id="unknown-spec-field"),
        pytest.param(_with_spec("overrides", []), "overrides", id="resolved-spec-has-no-overrides"),
    ],
)
def test_desired_garbage_is_refused_with_a_reason(text: str | None, fragment: str) -> None:
    with pytest.raises(desired.DesiredError) as e:
        desired.decode(text)
    assert fragment in str(e.value)


def test_desired_defaults_fields_an_older_controller_left_out() -> None:
    doc = _good()
    del doc["spec"]["rollout"]  # type: ignore[attr-defined]
    spec = desired.decode(json.dumps(doc))
    assert spec.rollout.max_concurrent_nodes == 1 and not spec.rollout.drain


CERTS = {"apiserver": "2027-06-01T12:00:00Z", "ca": "2036-06-01T12:00:00Z"}


@pytest.mark.parametrize(
    ("value",),
    [
        pytest.param(status.Status("r1", status.Phase.CONVERGED, "ok", NOW, CERTS), id="full"),
        pytest.param(status.Status(None, status.Phase.FAILED, "boom"), id="no-revision-yet"),
        pytest.param(status.Status("r2", status.Phase.PAUSED, "held", None, {}), id="paused"),
    ],
)
def test_status_round_trips(value: status.Status) -> None:
    assert status.decode(status.encode(value)) == value


def test_status_encoding_is_stable_and_compact() -> None:
    a = status.Status("r1", status.Phase.CONVERGED, "ok", NOW, dict(reversed(CERTS.items())))
    b = status.Status("r1", status.Phase.CONVERGED, "ok", NOW, CERTS)
    assert status.encode(a) == status.encode(b)
    assert json.loads(status.encode(a)) == {
        "revision": "r1",
        "phase": "Converged",
        "message": "ok",
        "lastRotation": "2026-06-01T12:00:00Z",
        "certificates": CERTS,
    }


BASE = status.Status("r1", status.Phase.CONVERGED, "ok", NOW, CERTS)


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        pytest.param(None, BASE, True, id="no-annotation-yet"),
        pytest.param(status.encode(BASE), BASE, False, id="same-value-is-not-rewritten"),
        pytest.param(
            json.dumps(json.loads(status.encode(BASE)), indent=2),
            BASE,
            False,
            id="same-value-other-formatting",
        ),
        pytest.param(
            status.encode(BASE),
            dataclasses.replace(BASE, revision="r2"),
            True,
            id="new-revision",
        ),
        pytest.param(
            status.encode(BASE),
            dataclasses.replace(BASE, phase=status.Phase.ROTATING),
            True,
            id="new-phase",
        ),
        pytest.param(
            status.encode(BASE),
            dataclasses.replace(BASE, certificates={**CERTS, "apiserver": "2028-01-01T00:00:00Z"}),
            True,
            id="renewed-certificate",
        ),
        pytest.param("garbage{", BASE, True, id="garbage-is-overwritten"),
        pytest.param('{"phase": "Sleeping"}', BASE, True, id="unknown-phase-is-overwritten"),
    ],
)
def test_status_changed(current: str | None, new: status.Status, expected: bool) -> None:
    assert status.changed(current, new) is expected


def test_status_message_is_one_bounded_line() -> None:
    text = status.message("a\nb  c" + "x" * 5000)
    assert text.startswith("a b c") and len(text) == status.MAX_MESSAGE and "\n" not in text
