"""Every duration field of the schema, with generated Go durations: what validates is exactly
what encodes, and the node gives the verdict the controller and ``validate-policy`` give.

The fields are found by walking the schema (every ``$ref`` to ``#/$defs/duration``), so a
duration field added later is covered without editing this file. For each generated value:

- a policy that sets it is accepted or refused by ``policy.load`` (what ``validate-policy`` and
  the controller call), and a ``kucero.io/desired`` annotation carrying the same value in the
  same place is accepted or refused by ``desired.decode`` (what the node calls) alike;
- when accepted: parse -> encode -> parse gives the same nanoseconds, the encoded text is valid
  again, and the annotation the controller writes decodes on the node to the same spec (no
  ``1h500ns`` that reaches a node as ``1h0m0s``, no ``500ns`` that reaches it as ``0s``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler import cli
from reconciler.decide import desired, duration, policy
from reconciler.decide.duration import HOUR, MINUTE, SECOND

HEAD = {"apiVersion": policy.API_VERSION, "kind": policy.KIND}
DURATION_REF = "#/$defs/duration"


def _walk(node: Any, path: tuple[str | int, ...], root: dict[str, Any]) -> Iterator[Any]:
    if not isinstance(node, dict):
        return
    if node.get("$ref") == DURATION_REF:
        yield path, node
        return
    if "$ref" in node:
        yield from _walk(root["$defs"][node["$ref"].rsplit("/", 1)[-1]], path, root)
    for key, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, (*path, key), root)
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], (*path, 0), root)


FIELDS = {path: sub for path, sub in _walk(policy.schema(), (), policy.schema())}
FIELD_PATHS = sorted(FIELDS, key=str)


def _set(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """``doc`` with ``value`` at ``path``; an override gets an empty selector."""
    node: Any = doc
    for key, nxt in itertools.pairwise(path):
        if isinstance(key, int):
            while len(node) <= key:
                node.append({"nodeSelector": {}, "spec": {}})
            node = node[key]
        else:
            node = node.setdefault(key, [] if isinstance(nxt, int) else {})
    node[path[-1]] = value
    return doc


def _policy(path: tuple[str | int, ...], value: str) -> dict[str, Any]:
    # long validity: a renewBefore or checkInterval near its ceiling stays consistent
    base = {"spec": {"kubeadm": {"certificateValidity": "2000000h"}}}
    if path == ("spec", "kubeadm", "certificateValidity"):
        base = {"spec": {"kubeadm": {"renewBefore": "1h"}, "checkInterval": "1m"}}
    return _set({**HEAD, **json.loads(json.dumps(base))}, path, value)


def _annotation(document: dict[str, Any]) -> str | None:
    """The same spec as a hand-written ``kucero.io/desired`` (no overrides there: a resolved
    spec has none, so an override's field is written at its place in the spec)."""
    spec = json.loads(json.dumps(document["spec"]))
    for override in spec.pop("overrides", []):
        spec = policy._merge(spec, override["spec"])
    return json.dumps({"revision": "r1", "spec": spec})


# Go durations: optional sign, one to three number+unit terms, fractions, every unit.
UNITS = st.sampled_from(["ns", "us", "\u00b5s", "ms", "s", "m", "h"])
NUMBERS = st.one_of(
    st.integers(0, 10**7).map(str),
    st.tuples(st.integers(0, 10**4), st.text("0123456789", min_size=1, max_size=12)).map(
        lambda t: f"{t[0]}.{t[1]}"
    ),
)
GO_DURATIONS = st.tuples(
    st.sampled_from(["", "", "+", "-"]),
    st.lists(st.tuples(NUMBERS, UNITS).map("".join), min_size=1, max_size=3).map("".join),
).map("".join)


def _verdict_of_load(document: dict[str, Any]) -> policy.Policy | None:
    try:
        return policy.from_mapping(document, "p.yaml")
    except policy.PolicyError:
        return None


def _verdict_of_node(text: str | None) -> bool:
    try:
        desired.decode(text)
    except desired.DesiredError:
        return False
    return True


@given(st.sampled_from(FIELD_PATHS), GO_DURATIONS)
def test_a_duration_is_accepted_by_the_node_exactly_when_the_controller_accepts_it(
    path: tuple[str | int, ...], text: str
) -> None:
    document = _policy(path, text)
    loaded = _verdict_of_load(document)
    assert _verdict_of_node(_annotation(document)) is (loaded is not None), (path, text)


@given(st.sampled_from(FIELD_PATHS), GO_DURATIONS)
def test_an_accepted_duration_encodes_to_the_value_it_validated_as(
    path: tuple[str | int, ...], text: str
) -> None:
    loaded = _verdict_of_load(_policy(path, text))
    if loaded is None:
        return
    nanoseconds = duration.parse(text)
    assert nanoseconds > 0 and nanoseconds % SECOND == 0
    encoded: Any = loaded.document
    for key in path:
        encoded = encoded[key]
    assert duration.parse(encoded) == nanoseconds  # parse -> encode -> parse
    assert _verdict_of_load(_policy(path, encoded)) is not None  # still valid
    spec = policy.resolve(loaded, {})
    annotation = desired.encode_for_node(spec, csr_signer_active=False)
    on_node = desired.decode(annotation)
    assert policy.spec_document(on_node)["spec"] == policy.spec_document(spec)["spec"]
    assert desired.encode_for_node(on_node, csr_signer_active=False) == annotation


def test_the_schema_walk_finds_every_duration_field() -> None:
    """Not vacuous: the fields the issue names are there, overrides included."""
    assert {
        ("spec", "checkInterval"),
        ("spec", "kubeadm", "renewBefore"),
        ("spec", "kubeadm", "certificateValidity"),
        ("spec", "kubeadm", "healthTimeout"),
        ("spec", "csrSigner", "certificateValidity"),
        ("spec", "overrides", 0, "spec", "checkInterval"),
        ("spec", "overrides", 0, "spec", "kubeadm", "healthTimeout"),
    } <= set(FIELD_PATHS)


def test_every_duration_field_that_drives_a_loop_or_a_certificate_has_a_floor() -> None:
    """A value of one nanosecond is refused in every duration field of the schema."""
    for path in FIELD_PATHS:
        errors = _errors(_policy(path, "1s"))
        assert any(_field(path) in e and "minimum" in e for e in errors), (path, errors)


def _errors(document: dict[str, Any]) -> list[str]:
    try:
        policy.from_mapping(document, "p.yaml")
    except policy.PolicyError as e:
        return e.errors
    return []


def _field(path: tuple[str | int, ...]) -> str:
    return policy._path(path)


FLOORS = [
    (("spec", "checkInterval"), "59s", "1m"),
    (("spec", "kubeadm", "renewBefore"), "59m59s", "1h"),
    (("spec", "kubeadm", "certificateValidity"), "23h", "25h"),
    (("spec", "kubeadm", "healthTimeout"), "9s", "10s"),
    (("spec", "csrSigner", "certificateValidity"), "599s", "10m"),
]


@pytest.mark.parametrize(
    ("path", "below", "at"), FLOORS, ids=[".".join(map(str, f[0])) for f in FLOORS]
)
def test_a_duration_just_below_its_floor_is_refused_and_the_floor_itself_is_valid(
    path: tuple[str, ...], below: str, at: str
) -> None:
    assert any("below the minimum" in e for e in _errors(_policy(path, below))), path
    assert _errors(_policy(path, at)) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1us", "not a whole number of seconds"),
        ("500ns", "not a whole number of seconds"),
        ("1h500ns", "not a whole number of seconds"),
        ("90.5s", "not a whole number of seconds"),
        ("0s", "must be positive"),
        ("-1h", "must be positive"),
        ("1d", "not a valid duration"),
    ],
    ids=["1us", "500ns", "1h500ns", "90.5s", "zero", "negative", "days-are-not-go"],
)
def test_validate_policy_refuses_a_check_interval_that_would_spin_or_encode_differently(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    """The command line's verdict: the issue's 1 µs busy loop and 500 ns ``0s``."""
    path = tmp_path / "p.yaml"
    path.write_text(
        f"apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\nspec:\n  checkInterval: {text}\n"
    )
    assert cli.main(["validate-policy", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"spec.checkInterval: '{text}'" in out and message in out, out
    annotation = json.dumps({"revision": "r", "spec": {"checkInterval": text}})
    with pytest.raises(desired.DesiredError, match=message):
        desired.decode(annotation)


def test_health_timeout_has_a_ceiling() -> None:
    errors = _errors(_policy(("spec", "kubeadm", "healthTimeout"), "1h0m1s"))
    assert any("above the maximum of 1h" in e for e in errors), errors


def test_a_renewal_gap_under_a_day_is_refused() -> None:
    document = {**HEAD, "spec": {"kubeadm": {"renewBefore": "720h", "certificateValidity": "743h"}}}
    errors = _errors(document)
    assert any("leaves 23h0m0s" in e and "restarts the control plane" in e for e in errors)


def test_the_seed_flag_polling_period_meets_the_same_floor() -> None:
    with pytest.raises(policy.PolicyError, match="below the minimum of 1m"):
        policy.from_mapping(HEAD, "flags", {"checkInterval": "30s"})


def test_a_huge_valid_duration_survives_the_round_trip_to_the_node() -> None:
    """Above 2**53 microseconds a float division would round: the encoding uses integers."""
    text = "2562047h47m16s"  # the largest whole-second Go duration
    spec = policy.resolve(
        policy.from_mapping(_policy(("spec", "kubeadm", "certificateValidity"), text)), {}
    )
    assert spec.kubeadm.certificate_validity == dt.timedelta(hours=2562047, minutes=47, seconds=16)
    on_node = desired.decode(desired.encode_for_node(spec, csr_signer_active=False))
    assert on_node.kubeadm.certificate_validity == spec.kubeadm.certificate_validity
    assert duration.parse(text) == 2562047 * HOUR + 47 * MINUTE + 16 * SECOND
