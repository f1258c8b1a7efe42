"""The one YAML door: limits checked before anything is built, JSON-shaped values, strict keys
for policies, libyaml when present and the same answers without it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from reconciler.decide import yamldoc


def bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(bomb(), "more than 100000 nodes once aliases are expanded", id="alias-bomb"),
        pytest.param("a: &a [1, *a]\n", "nested deeper than 64 levels", id="recursive-alias"),
        pytest.param("[" * 5000 + "]" * 5000, "nesting depth", id="nested-5000-deep"),
        pytest.param("- " * 65 + "x\n", "nested deeper than 64 levels", id="block-nesting"),
        pytest.param("x: !!binary aGk=\n", "is not allowed here", id="binary-tag"),
        pytest.param("x: !!set {a}\n", "is not allowed here", id="set-tag"),
        pytest.param("x: !foo 1\n", "could not determine a constructor", id="unknown-tag"),
        pytest.param("? [a]\n: 1\n", "unhashable key", id="unhashable-key"),
        pytest.param("a: 1\n---\nb: 2\n", "expected a single document", id="two-documents"),
        pytest.param("a: [\n", "expected", id="broken"),
    ],
)
def test_refused_with_a_one_line_error(text: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(yamldoc.YAMLDocError) as caught:
        yamldoc.load(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert time.monotonic() - started < 2


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(yamldoc.YAMLDocError, match="larger than"):
        yamldoc.load("a" * (yamldoc.MAX_BYTES + 1))


def test_a_bomb_just_inside_the_limit_is_accepted() -> None:
    assert len(yamldoc.load(bomb(5))["a4"]) == 9  # 9**5 = 59,049 nodes expanded


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{a: 1, a: 2}\n", "duplicate key 'a'"),
        ("{1: a, b: c}\n", "key 1 is not a string"),
        ("? {a: 1}\n: 2\n", "found a mapping or list as a key"),
    ],
    ids=["duplicate", "integer-key", "mapping-key"],
)
def test_policy_mode_refuses_duplicate_and_non_string_keys(text: str, message: str) -> None:
    with pytest.raises(yamldoc.YAMLDocError, match=message):
        yamldoc.load(text, unique_keys=True, string_keys=True)


def test_values_are_json_shaped() -> None:
    assert yamldoc.load("a: 2020-01-01\nb: 2020-01-01T00:00:00Z\nc: 1\n") == {
        "a": "2020-01-01",
        "b": "2020-01-01T00:00:00Z",
        "c": 1,
    }


def test_merge_keys_still_work() -> None:
    assert yamldoc.load("base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n")["use"] == {"x": 1, "y": 2}


def test_dump_keeps_order_and_block_style() -> None:
    assert yamldoc.dump({"b": 1, "a": [1, 2]}) == "b: 1\na:\n- 1\n- 2\n"


def test_uses_libyaml_when_present() -> None:
    import yaml

    assert yaml.__with_libyaml__ == yamldoc.WITH_LIBYAML
    if yaml.__with_libyaml__:
        assert issubclass(yamldoc._Loader, yaml.CSafeLoader)


def test_pure_python_fallback_gives_the_same_answers() -> None:
    """Without libyaml the composer is PyYAML's recursive one: deep nesting must still be a
    clear error (its RecursionError is caught), never a traceback."""
    script = """
import yaml
yaml.__with_libyaml__ = False
from reconciler.decide import yamldoc
assert yamldoc._Loader.__mro__[1] is yaml.SafeLoader
for text in ("[" * 5000 + "]" * 5000, "- " * 65 + "x", "a: &a [1, *a]"):
    try:
        yamldoc.load(text)
    except yamldoc.YAMLDocError as e:
        print("refused:", e)
    else:
        raise SystemExit("accepted " + text[:10])
print(yamldoc.load("a: [1, {b: 2020-01-01}]"))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("refused:") for line in lines[:3])
    assert "nested too deeply" in lines[0] and "deeper than 64" in lines[1]
    assert lines[3] == "{'a': [1, {'b': '2020-01-01'}]}"


def test_kubeconfigs_and_kubelet_configs_keep_yamls_own_key_rules() -> None:
    assert yamldoc.load("{a: 1, a: 2}\n") == {"a": 2}
    assert yamldoc.load("{1: a, b: c}\n") == {1: "a", "b": "c"}
