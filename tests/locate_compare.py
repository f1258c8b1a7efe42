"""Run ``confined.locate`` both ways (openat2 fast path, and the walk alone) on hostile trees
and describe what each returned in terms that can be compared across two copies of a tree.

A tree is built under ``base``: the host root is ``base/root`` and ``base/out`` is outside it,
holding the same names, so a link the OS followed out of the root would show as a directory
under ``out`` instead of the one the walk found. A tree spec is a dict: name -> ``None`` (a
file), a dict (a directory), or a str (a symbolic link to that target).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reconciler.node import confined, openat2

Spec = dict[str, Any]


def build(directory: Path, spec: Spec) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, node in spec.items():
        if node is None:
            (directory / name).write_bytes(b"x")
        elif isinstance(node, str):
            (directory / name).symlink_to(node)
        else:
            build(directory / name, node)


def snapshot(base: Path) -> list[tuple[str, str]]:
    """Every entry under ``base``, links not followed: (relative path, kind or link target)."""
    found = []
    for top, dirs, names in os.walk(base):
        for name in [*dirs, *names]:
            path = Path(top, name)
            kind = os.readlink(path) if path.is_symlink() else "dir" if path.is_dir() else "file"
            found.append((str(path.relative_to(base)), kind))
    return sorted(found)


def _directories(base: Path) -> dict[tuple[int, int], str]:
    found = {(st.st_dev, st.st_ino): "." for st in [os.lstat(base)]}
    for top, dirs, _ in os.walk(base):
        for name in dirs:
            st = os.lstat(Path(top, name))
            found[(st.st_dev, st.st_ino)] = str(Path(top, name).relative_to(base))
    return found


@contextlib.contextmanager
def fast_path(enabled: bool | None) -> Iterator[None]:
    """openat2 on or off for the block, or as it is (None). Not a fixture: hypothesis tests
    use it too."""
    if enabled is None:
        yield
        return
    before = openat2.STATE.usable
    openat2.STATE.usable = enabled
    try:
        yield
    finally:
        openat2.STATE.usable = before


@contextlib.contextmanager
def answers() -> Iterator[list[bool]]:
    """For each ``locate`` in the block: did the fast path answer (True) or the walk?"""
    real = confined._at_once
    seen: list[bool] = []

    def spy(*args: Any) -> confined.Located | None:
        try:
            where = real(*args)
        except OSError:
            seen.append(True)  # the fast path answered with the error
            raise
        seen.append(where is not None)
        return where

    confined._at_once = spy  # type: ignore[assignment]
    try:
        yield seen
    finally:
        confined._at_once = real  # type: ignore[assignment]


def outcome(base: Path, host_path: str, *, fast: bool | None, **flags: bool) -> tuple[object, ...]:
    """What ``locate`` yields (the directory named by its place under ``base``), or the error."""
    with fast_path(fast):
        try:
            with confined.locate(base / "root", host_path, **flags) as where:
                st = os.fstat(where.dir_fd)
                directory = _directories(base).get((st.st_dev, st.st_ino), "elsewhere")
                return ("at", directory, where.name, where.resolved, where.literal_tail)
        except OSError as e:
            return ("error", type(e).__name__, e.errno)


def compare(fast_base: Path, walk_base: Path, host_path: str, **flags: bool) -> bool:
    """Both ways, each on its own copy of the tree (``create_parents`` changes it); they must
    agree on the result and on the tree left behind. True when the fast path answered."""
    with answers() as seen:
        fast = outcome(fast_base, host_path, fast=True, **flags)
    walk = outcome(walk_base, host_path, fast=False, **flags)
    assert fast == walk, (host_path, flags)
    assert snapshot(fast_base) == snapshot(walk_base), (host_path, flags)
    return seen == [True]
