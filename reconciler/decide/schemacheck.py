"""A small check that a document is certainly valid under kucero's JSON Schema.

Why: importing jsonschema costs about 45 ms (referencing, attrs, and every metaschema loaded
by jsonschema_specifications), a sixth of a whole ``kucero node --once``. ``policy.validate``
asks ``certainly_valid`` first and imports jsonschema only when it answers False, to word the
errors exactly as before: a valid policy never pays for jsonschema, an invalid one is reported
by the same validator as ever.

Sound, not complete: True means JSON Schema 2020-12 (as jsonschema runs it) finds no error;
False means "not sure", never "invalid". It interprets only the keywords the schema uses:
type, properties, additionalProperties, required, items, enum, const, minLength, minimum,
pattern, uniqueItems, format and ``$ref`` to ``#/$defs/<name>``; default, description and
title are annotations, and $schema, $id and $defs are allowed at the root only. Edge cases:

- any other keyword in a subschema it walks answers False, so a schema edit can never
  silently weaken validation (it only sends every document to jsonschema);
- JSON types, not Python's: a bool is neither integer nor number, a tuple is no array, a
  Mapping that is not a dict no object. A float where an integer is expected answers False
  (2020-12 takes 2.0 as an integer; jsonschema decides);
- enum and const compare as JSON values (1 == 1.0, True != 1, [] != {}); uniqueItems is
  decided only for arrays of strings, anything else answers False;
- pattern is ``re.search``, as in jsonschema: unanchored, and ``$`` matches before a final
  newline (the format check then refuses such a duration);
- minLength counts code points; minimum compares ints and floats exactly (NaN answers False);
- format calls the caller's checker for that name (policy passes the very functions it
  registers with jsonschema); an unknown format answers False;
- a ``$ref`` cycle that consumes nothing answers False after ``_MAX_DEPTH`` steps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# Subschemas followed (refs and nesting) before giving up: the policy schema needs about 10.
_MAX_DEPTH = 64
_ANNOTATIONS = frozenset({"default", "description", "title"})
_ROOT_ONLY = frozenset({"$schema", "$id", "$defs"})
# A pointer into the root's $defs with no escapes (~0, ~1, %xx), which would need decoding.
_REF = re.compile(r"#/\$defs/([A-Za-z0-9_.-]+)")

Format = Callable[[object], bool]

# The Python types of each JSON type, as jsonschema's 2020-12 type checker has them, but
# narrower where it is lax: no bools for integer or number (handled apart), no floats for
# integer (2.0 is one in 2020-12: not certain here, jsonschema decides), no Decimal.
_KINDS: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def certainly_valid(schema: Any, document: object, formats: Mapping[str, Format]) -> bool:
    """True only if ``document`` is valid under ``schema`` (2020-12, with ``formats``
    asserted); False when invalid or not certain. Pure."""
    if not isinstance(schema, dict) or schema.get("$schema", DRAFT) != DRAFT:
        return False
    return _Walk(schema, formats).valid(schema, document, 0)


class _Walk:
    def __init__(self, root: dict[str, Any], formats: Mapping[str, Format]) -> None:
        self.root = root
        self.formats = formats

    def valid(self, node: Any, value: Any, depth: int) -> bool:
        if node is True:
            return True
        if not isinstance(node, dict) or depth > _MAX_DEPTH:
            return False  # the false schema, or something we do not interpret
        for keyword, arg in node.items():
            check = _KEYWORDS.get(keyword)
            if check is not None:
                if not check(self, node, arg, value, depth + 1):
                    return False
            elif keyword not in _ANNOTATIONS and not (keyword in _ROOT_ONLY and node is self.root):
                return False
        return True


def _type(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    names = arg if isinstance(arg, list) else [arg]
    return any(_is_type(value, name) for name in names)


def _is_type(value: Any, name: object) -> bool:
    if not isinstance(name, str) or name not in _KINDS:
        return False
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _KINDS[name])


def _properties(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    if not isinstance(arg, dict):
        return False
    if not isinstance(value, dict):
        return True
    return all(w.valid(sub, value[key], depth) for key, sub in arg.items() if key in value)


def _additional(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    known = node.get("properties", {})
    if not isinstance(value, dict) or not isinstance(known, dict):
        return isinstance(known, dict)
    return all(w.valid(arg, value[key], depth) for key in value if key not in known)


def _required(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    if not isinstance(arg, list) or not all(isinstance(name, str) for name in arg):
        return False
    return not isinstance(value, dict) or all(name in value for name in arg)


def _items(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    # prefixItems would change which items this applies to; it is refused as unknown
    return not isinstance(value, list) or all(w.valid(arg, item, depth) for item in value)


def _enum(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    return isinstance(arg, list) and any(_json_equal(value, each) for each in arg)


def _const(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    return _json_equal(value, arg)


def _min_length(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    if not _is_type(arg, "integer"):
        return False
    return not isinstance(value, str) or len(value) >= arg


def _minimum(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    if not _is_type(arg, "number"):
        return False
    if _is_type(value, "number"):
        return bool(value >= arg)
    return value is None or isinstance(value, (bool, str, list, dict))  # not numbers: ignored


def _pattern(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    if not isinstance(arg, str):
        return False
    return not isinstance(value, str) or re.search(arg, value) is not None


def _unique(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    if not isinstance(arg, bool):
        return False
    if not arg or not isinstance(value, list):
        return True
    return all(isinstance(item, str) for item in value) and len(set(value)) == len(value)


def _format(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    check = w.formats.get(arg) if isinstance(arg, str) else None
    return check is not None and bool(check(value))


def _ref(w: _Walk, node: Any, arg: Any, value: Any, depth: int) -> bool:
    match = _REF.fullmatch(arg) if isinstance(arg, str) else None
    defs = w.root.get("$defs")
    if match is None or not isinstance(defs, dict) or match[1] not in defs:
        return False
    return w.valid(defs[match[1]], value, depth)


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values, strict where Python is lax: True != 1, [] != {}; a value of
    any other Python type equals nothing (which only ever makes the answer False)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_json_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return False


_KEYWORDS: dict[str, Callable[[_Walk, Any, Any, Any, int], bool]] = {
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional,
    "required": _required,
    "items": _items,
    "enum": _enum,
    "const": _const,
    "minLength": _min_length,
    "minimum": _minimum,
    "pattern": _pattern,
    "uniqueItems": _unique,
    "format": _format,
    "$ref": _ref,
}
