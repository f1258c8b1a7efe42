"""The one YAML door: every policy, kubeconfig and kubelet config is parsed and dumped here.

Why one module: these documents come from Git, a ConfigMap or a node's disk, and a hostile or
broken one must end as a ``YAMLDocError`` naming the problem, never as a traceback, a hang or
gigabytes of memory. PyYAML alone gives all three: an alias bomb (``a: &a [x, x]``, ``b: &b
[*a, *a]``, ...) is a few hundred bytes that expands to billions of nodes for any code that
walks the result (JSON Schema, ``json.dumps``, ``==``, ``deepcopy``); the pure-Python composer
recurses once per nesting level (``RecursionError`` at about 1,000); and a mapping key may be a
list (unhashable) or mix integers and strings (unsortable).

So the parser's node graph (where an alias is one shared node, whatever it expands to) is
walked before anything is constructed, and the document is refused when it exceeds
``MAX_BYTES``, ``MAX_NODES`` counted with every alias expanded, or ``MAX_DEPTH`` (also counted
through aliases; a recursive alias exceeds both). libyaml itself refuses nesting beyond 1,000
levels; the pure-Python composer's ``RecursionError`` becomes a ``YAMLDocError``. Values are
JSON-shaped, as Kubernetes reads YAML: timestamps stay strings, and ``!!binary``, ``!!set``,
``!!omap``, ``!!pairs`` and unknown tags are refused. Policies also refuse duplicate keys and
non-string keys.

Speed: libyaml (``yaml.CSafeLoader``/``CSafeDumper``) when PyYAML has it
(``yaml.__with_libyaml__``), the pure-Python classes otherwise. The walk costs one step per
node of a normal document (a kubeadm kubeconfig loads in about the time of a bare
``CSafeLoader`` load, ~0.1 ms) and at most ``MAX_NODES`` steps for a hostile one.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

# A ConfigMap is at most 1 MiB and kubeadm's kubeconfigs and kubelet config are a few KiB:
# 2 MiB (bytes) leaves room for hand-made files without letting a document eat memory.
MAX_BYTES = 2 * 1024 * 1024
# Nodes (scalars and collections) once every alias is expanded. kubeadm's files have about
# 50-200, a policy with many overrides a few thousand; an alias bomb has billions.
MAX_NODES = 100_000
# Nesting levels. Real documents nest under 10; 64 stays far below Python's recursion limit
# for whatever later walks the value (deepcopy, json, the dumper).
MAX_DEPTH = 64

WITH_LIBYAML: bool = getattr(yaml, "__with_libyaml__", False)
_BaseLoader: Any = yaml.CSafeLoader if WITH_LIBYAML else yaml.SafeLoader
_BaseDumper: Any = yaml.CSafeDumper if WITH_LIBYAML else yaml.SafeDumper


class YAMLDocError(ValueError):
    """A document that is not acceptable YAML; the message is one line and says why."""


def load(text: str | bytes, *, unique_keys: bool = False, string_keys: bool = False) -> Any:
    """Parse one YAML document into JSON-shaped values, or raise ``YAMLDocError``.

    ``unique_keys`` refuses a key repeated in one mapping (plain YAML lets the last one win);
    ``string_keys`` refuses keys that are not strings. Both are for policies.
    """
    if len(text) > MAX_BYTES:
        raise YAMLDocError(f"document of {len(text)} bytes is larger than {MAX_BYTES} bytes")
    loader_class = _StrictLoader if (unique_keys or string_keys) else _Loader
    loader = loader_class(text)
    loader.string_keys = string_keys
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise YAMLDocError(" ".join(str(e).split())) from e
    except RecursionError as e:  # not expected with the depth limit; never a traceback
        raise YAMLDocError("document nested too deeply") from e
    finally:
        loader.dispose()


def dump(data: Any) -> str:
    """Block-style YAML keeping key order, with libyaml when present."""
    text: str = yaml.dump(data, Dumper=_BaseDumper, sort_keys=False, default_flow_style=False)
    return text


def _check_graph(root: yaml.Node) -> None:
    """Walk the composed graph as the constructed value would be walked, every alias
    expanded, and stop at the first limit exceeded. Costs one step per node of a normal
    document and at most ``MAX_NODES`` steps for a hostile one (a recursive alias expands
    forever, so it ends here too)."""
    count = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"more than {MAX_NODES} nodes once aliases are expanded (an alias bomb or a "
                "recursive alias)",
                node.start_mark,
            )
        if isinstance(node, yaml.ScalarNode):
            continue
        if depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", node.start_mark
            )
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in node.value)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """The base loader, checking the composed graph before anything is constructed, with
    JSON-shaped constructors."""

    string_keys = False

    def get_single_node(self) -> yaml.Node | None:
        node: yaml.Node | None = super().get_single_node()
        if node is not None:
            _check_graph(node)
        return node

    def construct_refused(self, node: yaml.Node) -> Any:
        raise yaml.constructor.ConstructorError(
            None, None, f"tag {node.tag!r} is not allowed here", node.start_mark
        )


_Loader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)
for _tag in ("binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _Loader.construct_refused)


class _StrictLoader(_Loader):
    """For policies: a key repeated in one mapping, or a key that is not a string, is an
    error (with plain YAML the last duplicate silently wins, and a policy edited in Git must
    not mean something other than what it shows)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None, None, "found a mapping or list as a key", key_node.start_mark
                )
            if self.string_keys and not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is not a string", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]
