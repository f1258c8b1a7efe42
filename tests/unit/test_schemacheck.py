"""schemacheck answers True only when it is certain, and refuses what it does not interpret.

Each case states what jsonschema says too: a True here is checked against it, so the table
cannot drift from JSON Schema 2020-12 as jsonschema runs it. The differential fuzz tests are in
tests/fuzz/test_schemacheck.py.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from reconciler.decide import policy, schemacheck
from tests.fuzz import test_documents as documents

DRAFT = {"$schema": schemacheck.DRAFT}


def quick(schema: dict[str, Any], value: object) -> bool:
    return schemacheck.certainly_valid(schema, value, policy._FORMATS)


def jsonschema_valid(schema: dict[str, Any], value: object) -> bool:
    formats = jsonschema.FormatChecker(formats=())
    for name, check in policy._FORMATS.items():
        formats.checks(name)(check)
    return jsonschema.Draft202012Validator(schema, format_checker=formats).is_valid(value)


@pytest.mark.parametrize(
    ("schema", "value", "certain", "valid"),
    [
        pytest.param({"type": "integer"}, 3, True, True, id="int-is-integer"),
        pytest.param({"type": "integer"}, True, False, False, id="bool-is-no-integer"),
        pytest.param({"type": "number"}, False, False, False, id="bool-is-no-number"),
        pytest.param({"type": "integer"}, 2.0, False, True, id="float-integer-left-to-jsonschema"),
        pytest.param({"type": "boolean"}, 1, False, False, id="one-is-no-boolean"),
        pytest.param({"type": "array"}, ("a",), False, False, id="tuple-is-no-array"),
        pytest.param({"type": ["string", "null"]}, None, True, True, id="type-list"),
        pytest.param({"type": "decimal"}, 1, False, None, id="unknown-type-name"),
        pytest.param({"const": 1}, 1.0, True, True, id="const-one-equals-one-point-zero"),
        pytest.param({"const": 1}, True, False, False, id="const-true-is-not-one"),
        pytest.param({"const": []}, {}, False, False, id="const-list-is-not-object"),
        pytest.param({"enum": [{"a": [1]}]}, {"a": [1.0]}, True, True, id="enum-deep-json-equal"),
        pytest.param({"enum": [0]}, False, False, False, id="enum-false-is-not-zero"),
        pytest.param({"uniqueItems": True}, ["a", "b"], True, True, id="unique-strings"),
        pytest.param({"uniqueItems": True}, ["a", "a"], False, False, id="repeated-strings"),
        pytest.param({"uniqueItems": True}, [1, True], False, True, id="unique-non-strings-unsure"),
        pytest.param({"minLength": 1}, "é", True, True, id="min-length-counts-code-points"),
        pytest.param({"minLength": 1}, "", False, False, id="empty-string-too-short"),
        pytest.param({"minLength": 1}, 5, True, True, id="min-length-ignores-non-strings"),
        pytest.param({"minimum": 1}, 1, True, True, id="minimum-inclusive"),
        pytest.param({"minimum": 1}, 0.5, False, False, id="below-minimum"),
        pytest.param({"minimum": 1}, float("nan"), False, True, id="nan-minimum-unsure"),
        pytest.param({"minimum": 1}, "0", True, True, id="minimum-ignores-strings"),
        pytest.param({"pattern": "b"}, "abc", True, True, id="pattern-is-unanchored-search"),
        pytest.param({"pattern": "^a$"}, "a\n", True, True, id="dollar-before-final-newline"),
        pytest.param({"format": "go-duration"}, "720h\n", False, False, id="newline-duration"),
        pytest.param({"format": "go-duration"}, "0s", False, False, id="zero-duration"),
        pytest.param({"format": "go-duration"}, 5, True, True, id="format-ignores-non-strings"),
        pytest.param({"format": "cidr"}, "10.0.0.1/8", False, False, id="host-bits-set"),
        pytest.param({"format": "cidr"}, "fd00::/8", True, True, id="ipv6-cidr"),
        pytest.param({"format": "email"}, "a@b", False, True, id="unknown-format-unsure"),
        pytest.param(
            {"properties": {"a": {"type": "string"}}, "additionalProperties": False},
            {"a": "x", "b": 1},
            False,
            False,
            id="additional-property-refused",
        ),
        pytest.param(
            {"additionalProperties": {"type": "string"}},
            {"a": "x", "b": "y"},
            True,
            True,
            id="additional-properties-schema",
        ),
        pytest.param({"required": ["a"]}, {}, False, False, id="missing-required"),
        pytest.param({"items": {"type": "string"}}, ["a", 1], False, False, id="bad-item"),
        pytest.param(
            {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"}, "a", True, True, id="ref"
        ),
        pytest.param({"$ref": "#/$defs/none"}, "a", False, None, id="unresolvable-ref"),
        pytest.param(
            {"$defs": {"a~b": True}, "$ref": "#/$defs/a~0b"}, "a", False, True, id="escaped-ref"
        ),
        pytest.param(
            {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
            1,
            False,
            None,
            id="ref-cycle-gives-up",
        ),
        pytest.param(
            {"properties": {"a": {"$id": "other.json", "type": "string"}}},
            {"a": "x"},
            False,
            True,
            id="id-below-the-root",
        ),
        pytest.param({"not": {"type": "string"}}, 1, False, True, id="unknown-keyword"),
    ],
)
def test_quick_answer(schema: dict[str, Any], value: object, certain: bool, valid: object) -> None:
    schema = {**DRAFT, **schema}
    assert quick(schema, value) is certain
    if valid is not None:  # None: jsonschema itself refuses the schema
        assert jsonschema_valid(schema, value) is valid


def test_other_draft_is_refused() -> None:
    assert not quick({"$schema": "http://json-schema.org/draft-07/schema#"}, 1)
    assert quick({}, 1)  # no $schema: the caller's draft, 2020-12


def test_every_shipped_policy_and_every_field_is_certainly_valid() -> None:
    for doc in (
        documents.FULL_POLICY,
        policy.default_document(),
        policy.spec_document(policy.resolve(policy.from_mapping(documents.FULL_POLICY), {})),
    ):
        doc = {**documents.HEAD, "spec": doc["spec"]}
        assert quick(policy.schema(), doc), doc


def subschemas(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every subschema of ``node`` that is a JSON object."""
    yield path
    for key in ("properties", "$defs"):
        for name, sub in node.get(key, {}).items():
            yield from subschemas(sub, (*path, key, name))
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from subschemas(node[key], (*path, key))


SUBSCHEMAS = list(subschemas(policy.schema()))
# Real 2020-12 keywords schemacheck does not interpret, and a made-up one.
UNKNOWN = ["not", "maxLength", "patternProperties", "prefixItems", "$anchor", "x-kucero"]


@pytest.mark.parametrize("path", SUBSCHEMAS, ids=lambda p: "/".join(p) or "root")
def test_an_unknown_keyword_anywhere_in_the_schema_turns_the_quick_answer_off(
    path: tuple[str, ...],
) -> None:
    assert quick(policy.schema(), documents.FULL_POLICY)
    for keyword in UNKNOWN:
        edited = copy.deepcopy(policy.schema())
        node = edited
        for part in path:
            node = node[part]
        node[keyword] = {}
        assert not quick(edited, documents.FULL_POLICY), keyword


def test_the_schema_has_many_subschemas_to_edit() -> None:
    assert len(SUBSCHEMAS) > 50  # the walk above reached the whole schema


def test_both_paths_use_the_same_format_checkers() -> None:
    checkers = policy._validator().format_checker.checkers
    assert {name: func for name, (func, _) in checkers.items()} == policy._FORMATS
