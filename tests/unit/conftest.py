"""Fixtures for the unit tests: a fixed clock and kubeadm-like node trees on disk.

Key generation dominates the cost of a tree (RSA-2048 about 40 ms a key), so each distinct
tree is built once per session and copied for every test that needs it.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler import fabricate

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def now() -> dt.datetime:
    return NOW


@pytest.fixture(scope="session")
def _tree_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[object, ...], Path]:
    return {}


@pytest.fixture
def make_tree(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    _tree_cache: dict[tuple[object, ...], Path],
) -> Callable[..., Path]:
    """``make_tree(now=NOW, **Options fields)`` -> a fresh copy of a cached node tree."""
    counter = iter(range(1000))

    def make(now: dt.datetime = NOW, **fields: object) -> Path:
        if "expiries" in fields:
            fields["expiries"] = tuple(sorted(dict(fields["expiries"]).items()))  # type: ignore[call-overload]
        key = (now, *sorted(fields.items()))
        if key not in _tree_cache:
            template = tmp_path_factory.mktemp("template")
            fabricate.build(template, now, fabricate.Options(**fields))  # type: ignore[arg-type]
            _tree_cache[key] = template
        target = tmp_path / f"node-{next(counter)}"
        shutil.copytree(_tree_cache[key], target, symlinks=True)
        return target

    return make
