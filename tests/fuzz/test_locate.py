"""Property-based test of ``confined.locate``'s openat2 fast path (issue 10, hypothesis).

Small random trees of directories, files and links (relative and absolute targets, ``..`` past
the root, loops, links to outside the root, links where directories were, files where
directories are expected), and random host paths (missing components, ``.``, ``..``, doubled
slashes) with every combination of ``follow_last`` and ``create_parents``. The openat2 way and
the walk alone, each on its own copy of the tree, must give the same directory, name, resolved
path and literal tail, or the same error, and leave the same tree behind.

Profiles: ``quick`` (100 trees) in ``make test``, ``long`` (10,000) in ``make fuzz``. The
module prints how many paths the fast path answered (``pytest -s``): if it answered none, the
test compared the walk with itself, and fails.
"""

from __future__ import annotations

import collections
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import locate_compare

NAMES = ["a", "b", "c"]
# Outside the root: what an escaping link would reach.
OUTSIDE: locate_compare.Spec = {"a": {"b": {"c": {}}, "c": None}, "b": None, "x": {}}
COUNTS: collections.Counter[str] = collections.Counter()

link_targets = st.builds(
    lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
    st.booleans(),
    st.lists(st.sampled_from([*NAMES, "..", ".", "out", "x"]), min_size=1, max_size=4),
)
nodes = st.recursive(
    st.none() | link_targets,
    lambda children: st.dictionaries(st.sampled_from(NAMES), children, max_size=3),
    max_leaves=10,
)
trees = st.dictionaries(st.sampled_from([*NAMES, "out"]), nodes, min_size=1, max_size=4)
host_paths = st.builds(
    lambda absolute, parts, sep: ("/" if absolute else "") + sep.join(parts),
    st.booleans(),
    st.lists(st.sampled_from([*NAMES, "..", ".", "new", "out"]), max_size=6),
    st.sampled_from(["/", "//"]),
)


def spec_paths(spec: locate_compare.Spec, prefix: str = "") -> Iterator[str]:
    """Every entry of the tree, so that most paths drawn meet its links and files."""
    for name, node in spec.items():
        yield f"{prefix}/{name}"
        if isinstance(node, dict):
            yield from spec_paths(node, f"{prefix}/{name}")


def drawn_path(data: st.DataObject, tree: locate_compare.Spec) -> str:
    if data.draw(st.integers(0, 3)) == 0:
        return data.draw(host_paths)
    suffix = data.draw(st.lists(st.sampled_from([*NAMES, "new", ".."]), max_size=2))
    return "/".join([data.draw(st.sampled_from(sorted(spec_paths(tree)))), *suffix])


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nlocate: {dict(COUNTS)}")
    assert COUNTS["answered by openat2"] > 0, COUNTS


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.data())
def test_openat2_and_the_walk_agree_on_random_trees(
    tree: locate_compare.Spec, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        fast_base, walk_base = Path(scratch, "fast"), Path(scratch, "walk")
        for base in (fast_base, walk_base):
            locate_compare.build(base, {"root": tree, "out": OUTSIDE})
        for _ in range(data.draw(st.integers(1, 6))):
            host_path = drawn_path(data, tree)
            follow_last, create_parents = data.draw(st.booleans()), data.draw(st.booleans())
            answered = locate_compare.compare(
                fast_base,
                walk_base,
                host_path,
                follow_last=follow_last,
                create_parents=create_parents,
            )
            COUNTS["answered by openat2" if answered else "walked"] += 1
