"""schemacheck's quick "certainly valid" is sound: for near-valid policies it never vouches
for a document jsonschema refuses, and ``policy.validate`` reports exactly jsonschema's errors.

Near-valid: a shipped policy (``policies/*.yaml``) or one setting every field, with one to
three mutations at any place: a value replaced by a tricky one (a bool for an integer, 2.0,
NaN, a bad enum value, duration or CIDR, a string with a final newline, a list item
repeated ...) or by any JSON-ish value, a key removed, an unknown key added. The policies that the other
fuzz tests generate are checked the same way (``test_documents.use_policy``). Profiles:
tests/conftest.py (``quick`` in ``make test``, ``long`` in ``make fuzz``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from reconciler.decide import yamldoc
from tests.fuzz import test_documents as documents

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SHIPPED = {
    path.name: doc
    for path in sorted(POLICIES.glob("*.yaml"))
    if isinstance(doc := yamldoc.load(path.read_text(), unique_keys=True), dict)
    and doc.get("kind") == documents.HEAD["kind"]
}
BASES = [*SHIPPED.values(), documents.FULL_POLICY]

TRICKY_VALUES = [
        True, False, None, 0, 1, -1, 2, 2.0, 2.5, 1e308, 10**30, float("nan"), float("inf"),
        "", " ", "é", "1", "720h", "720h\n", "+1h", "-3h", "0s", "1.5h", ".5h", "1x", "1µs",
        "1μs", "h", "10.0.0.0/8", "10.0.0.1/8", "10.0.0.0", "::/0", "fd00::/8", "apiserver",
        "APISERVER", "none", "In", "Exists", "systemctl", "deny", ".example.com", "Example.com",
        "example.com.", "kucero.io/v1alpha1", "RotationPolicy", [], {}, ["apiserver"],
        ["apiserver", "apiserver"], [1], {"a": "b"}, {"a": 1}, {"key": "k", "operator": "In"},
]  # fmt: skip
TRICKY = st.sampled_from(TRICKY_VALUES)
FIELD_NAMES = st.sampled_from(
    ["spec", "kubeadm", "kubelet", "paused", "restart", "backup", "retain", "values", "x"]
)


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path in ``value``, its root included."""
    out = [path]
    if isinstance(value, (dict, list)):
        for key, sub in value.items() if isinstance(value, dict) else enumerate(value):
            out += places(sub, (*path, key))
    return out


def near(value: Any) -> list[Any]:
    """What a careless edit of ``value`` writes instead: the neighbouring JSON types and
    values (a bool for an integer, 2.0, NaN, a final newline, a different case ...)."""
    if isinstance(value, bool):
        return [not value, 0, 1, 1.0, "true", None, [value]]
    if isinstance(value, int):
        return [True, False, value + 0.0, value + 0.5, -value, 0, float("nan"), 10**30, str(value)]
    if isinstance(value, str):
        return [value + "\n", value.upper(), f" {value}", value[:-1], value + "x", "", 1, [value]]
    if isinstance(value, list):
        return [[], [*value, *value[:1]], value[:1] * 2, {}, "", value[1:]]
    return [[], {}, None, "", {"x": 1}]


def mutate(doc: dict[str, Any], data: st.DataObject) -> None:
    every = places(doc)
    leaves = [p for p in every if p and not isinstance(at(doc, p), (dict, list))]
    path = data.draw(st.sampled_from(leaves) | st.sampled_from(every))
    node = at(doc, path)
    parent = at(doc, path[:-1])
    how = data.draw(st.sampled_from(["near", "near", "tricky", "any", "remove", "add-key"]))
    # copies: sampled_from hands out the same [] and {} each time
    if how in ("near", "tricky", "any") and path:
        values = {"near": st.sampled_from(near(node)), "tricky": TRICKY, "any": documents.VALUES}
        parent[path[-1]] = copy.deepcopy(data.draw(values[how]))
    elif how == "remove" and path:
        del parent[path[-1]]
    elif how == "add-key" and isinstance(node, dict):
        node[data.draw(FIELD_NAMES | documents.KEYS)] = copy.deepcopy(data.draw(TRICKY))


def at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@given(st.sampled_from(BASES), st.integers(1, 3), st.data())
def test_quick_check_never_vouches_for_an_invalid_near_valid_policy(
    base: dict[str, Any], mutations: int, data: st.DataObject
) -> None:
    doc = copy.deepcopy(base)
    for _ in range(mutations):
        mutate(doc, data)
    event(f"schemacheck: {documents.schemacheck_agrees(doc)}")


def test_no_single_edit_of_a_base_policy_fools_the_quick_check() -> None:
    """Every one-place edit, exhaustively: each value ``near`` a node or (in the policy that
    sets every field) from TRICKY_VALUES in its place, each removal, an unknown key in each
    mapping. Deterministic, so the rare
    cases (a bool for ``maxConcurrentNodes``) are checked on every run, not by chance."""
    outcomes: dict[str, int] = {}
    for base in BASES:
        for path in places(base)[1:]:
            node = at(base, path)
            leaf = not isinstance(node, (dict, list))
            # TRICKY_VALUES only where every field is: about 2,500 documents, 3 s
            others = TRICKY_VALUES if leaf and base is documents.FULL_POLICY else []
            edits = [("set", v) for v in [*near(node), *others]] + [("remove", None)]
            if isinstance(node, dict):
                edits.append(("add", "x"))
            for how, value in edits:
                doc = copy.deepcopy(base)
                parent = at(doc, path[:-1])
                if how == "set":
                    parent[path[-1]] = copy.deepcopy(value)
                elif how == "remove":
                    del parent[path[-1]]
                else:
                    at(doc, path)["x"] = 1
                outcome = documents.schemacheck_agrees(doc)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("certain", 0) > 100 and outcomes["invalid"] > 1000, outcomes


def test_every_shipped_policy_is_certainly_valid() -> None:
    assert set(SHIPPED) >= {"default.yaml", "demo.yaml", "edge-pool.yaml"}
    for doc in BASES:
        assert documents.schemacheck_agrees(doc) == "certain"
