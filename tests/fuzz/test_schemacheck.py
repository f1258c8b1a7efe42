"""schemacheck's quick "certainly valid" is sound: for near-valid policies it never vouches
for a document jsonschema refuses, and ``policy.validate`` reports exactly jsonschema's errors.

Near-valid: a shipped policy (``policies/*.yaml``) or one setting every field, with one to
three mutations at any place: a value replaced by a tricky one (a bool for an integer, 2.0,
NaN, a bad enum value, duration or CIDR, a string with a final newline ...) or by any JSON-ish
value, a key removed, an unknown key added, a list item repeated. The policies that the other
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

TRICKY = st.sampled_from(
    [
        True, False, None, 0, 1, -1, 2, 2.0, 2.5, 1e308, 10**30, float("nan"), float("inf"),
        "", " ", "é", "1", "720h", "720h\n", "+1h", "-3h", "0s", "1.5h", ".5h", "1x", "1µs",
        "1μs", "h", "10.0.0.0/8", "10.0.0.1/8", "10.0.0.0", "::/0", "fd00::/8", "apiserver",
        "APISERVER", "none", "In", "Exists", "systemctl", "deny", ".example.com", "Example.com",
        "example.com.", "kucero.io/v1alpha1", "RotationPolicy", [], {}, ["apiserver"],
        ["apiserver", "apiserver"], [1], {"a": "b"}, {"a": 1}, {"key": "k", "operator": "In"},
    ]
)  # fmt: skip
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


def mutate(doc: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(places(doc)))
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    node = parent[path[-1]] if path else doc
    how = data.draw(st.sampled_from(["replace", "replace-any", "remove", "add-key", "repeat"]))
    if how.startswith("replace") and path:
        # copies: sampled_from hands out the same [] and {} each time
        parent[path[-1]] = copy.deepcopy(
            data.draw(TRICKY if how == "replace" else documents.VALUES)
        )
    elif how == "remove" and path:
        del parent[path[-1]]
    elif how == "add-key" and isinstance(node, dict):
        node[data.draw(FIELD_NAMES | documents.KEYS)] = copy.deepcopy(data.draw(TRICKY))
    elif how == "repeat" and isinstance(node, list) and node:
        node.append(copy.deepcopy(data.draw(st.sampled_from(node))))


@given(st.sampled_from(BASES), st.integers(1, 3), st.data())
def test_quick_check_never_vouches_for_an_invalid_near_valid_policy(
    base: dict[str, Any], mutations: int, data: st.DataObject
) -> None:
    doc = copy.deepcopy(base)
    for _ in range(mutations):
        mutate(doc, data)
    event(f"schemacheck: {documents.schemacheck_agrees(doc)}")


def test_every_shipped_policy_is_certainly_valid() -> None:
    assert set(SHIPPED) >= {"default.yaml", "demo.yaml", "edge-pool.yaml"}
    for doc in BASES:
        assert documents.schemacheck_agrees(doc) == "certain"
