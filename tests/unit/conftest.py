"""Fixtures for the unit tests: a fixed clock and kubeadm-like node trees on disk.

Key generation dominates the cost of a tree (RSA-2048 about 40 ms a key), so each distinct
tree is built once per session and copied for every test that needs it.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler import fabricate
from reconciler.node import openat2

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


@pytest.fixture(params=["openat2", "refused"])
def locate_both_ways(request: pytest.FixtureRequest) -> Iterator[None]:
    """Run a test with ``confined.locate``'s openat2 fast path, then as on a kernel or sandbox
    that refuses openat2 (ENOSYS on the first call, the walk alone from then on). In this
    process only: a ``kucero`` subprocess the test starts always has the fast path. Not through
    ``monkeypatch``: a test may ``monkeypatch.undo()`` its own patches halfway."""
    saved = vars(openat2.STATE).copy()
    openat2.STATE.usable = openat2.State().usable
    tries: list[bytes] = []
    if request.param == "refused":

        def refused(root_fd: int, path: bytes) -> int:
            tries.append(path)
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

        openat2.STATE.call = refused
    try:
        yield
        assert len(tries) <= 1 and not (tries and openat2.STATE.usable), tries
    finally:
        vars(openat2.STATE).update(saved)
