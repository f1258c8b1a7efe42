"""``confined.locate``'s openat2 fast path (issue 10) answers exactly as the walk does, or
leaves the answer to the walk: on a hostile tree, for every path and every flag, both ways give
the same directory, name, resolved path and literal tail (or the same error) and leave the same
tree; a link-free path costs the same three calls at any depth; a kernel or sandbox that
refuses openat2 is asked once, then the walk answers everything."""

from __future__ import annotations

import errno
import itertools
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from reconciler.node import confined, openat2
from tests import locate_compare
from tests.controlplane import binaries

DEEP = "/".join("abcdefghijkl")  # twelve directories
HOSTILE: locate_compare.Spec = {
    "root": {
        "etc": {
            "kubernetes": {
                "admin.conf": None,
                "pki": {
                    "ca.crt": None,
                    "ca.key": None,
                    "etcd": {"ca.crt": None},
                    "link.crt": "ca.crt",
                    "abs.crt": "/etc/kubernetes/pki/ca.key",
                    "out.crt": "../../../../out/etc/kubernetes/pki/ca.crt",
                },
                "tmp": "/etc/kubernetes/pki",  # a directory replaced by a link
                "rel": "pki/etcd",
                "up": "../../../../../out",  # '..' past the root stops at the root
                "abs-out": "/../../out",
                "loop": "loop2",
                "loop2": "loop",
                "self": ".",
                "dangling": "nowhere",
                "file-as-dir": None,
                "magic": "/proc/self/root",  # a magic link's path, resolved inside the root
            }
        },
    },
    # Outside the root, the same names: a link the OS followed out would land here.
    "out": {"etc": {"kubernetes": {"pki": {"ca.crt": None, "etcd": {"ca.crt": None}}}}, "x": {}},
}
LINK_FREE = [
    "/etc/kubernetes/pki/ca.crt",
    "/etc/kubernetes/pki/etcd/ca.crt",
    "etc//kubernetes/./pki/etcd/",
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/pki/missing.crt",
    "/etc/kubernetes/missing/ca.crt",
    "/etc/missing/deeper/ca.crt",
    "/etc",
    f"/{DEEP}/f",
    f"/{DEEP}/new/f",
]
MISSING_DIRECTORY = {
    "/etc/kubernetes/missing/ca.crt",
    "/etc/missing/deeper/ca.crt",
    f"/{DEEP}/new/f",
}
# A link on the way, or a file where a directory should be (ENOTDIR: openat2 says the same of a
# link in the last place of the directories), is the walk's to answer.
WALKED = [
    "/etc/kubernetes/admin.conf/x",
    "/etc/kubernetes/file-as-dir/x",
    "/etc/kubernetes/pki/link.crt",
    "/etc/kubernetes/pki/abs.crt",
    "/etc/kubernetes/pki/out.crt",
    "/etc/kubernetes/tmp",
    "/etc/kubernetes/tmp/ca.crt",
    "/etc/kubernetes/tmp/new/x",
    "/etc/kubernetes/rel/ca.crt",
    "/etc/kubernetes/up/etc/kubernetes/pki/ca.crt",
    "/etc/kubernetes/up/x/y",
    "/etc/kubernetes/abs-out/x",
    "/etc/kubernetes/loop",
    "/etc/kubernetes/loop/x",
    "/etc/kubernetes/self/self/pki/ca.crt",
    "/etc/kubernetes/dangling",
    "/etc/kubernetes/dangling/x",
    "/etc/kubernetes/magic/etc",
    f"/{DEEP}/m/kubernetes/pki/ca.crt",
    f"/{DEEP}/m",
]
WITH_DOTS = [
    "/",
    "",
    "/..",
    "/../../out/x",
    "/etc/../../out/x",
    "/etc/kubernetes/pki/../admin.conf",
]
FLAGS = [
    {"follow_last": follow, "create_parents": create}
    for follow, create in itertools.product((True, False), repeat=2)
]


def hostile(base: Path) -> Path:
    locate_compare.build(base, HOSTILE)
    deep = base / "root" / DEEP
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"x")
    (deep / "m").symlink_to("/etc")
    return base


def _both(tmp_path: Path, host_path: str, flags: dict[str, bool]) -> bool:
    name = "-".join(f"{k}={v}" for k, v in flags.items())
    return locate_compare.compare(
        hostile(tmp_path / f"fast-{name}"), hostile(tmp_path / f"walk-{name}"), host_path, **flags
    )


@pytest.mark.parametrize("host_path", LINK_FREE)
def test_a_link_free_path_is_answered_by_openat2_as_the_walk_answers(
    tmp_path: Path, host_path: str
) -> None:
    answered = [_both(tmp_path, host_path, flags) for flags in FLAGS]
    # A directory to create is the walk's job; everything else is one openat2.
    expected = [not (f["create_parents"] and host_path in MISSING_DIRECTORY) for f in FLAGS]
    assert answered == expected


@pytest.mark.parametrize("host_path", WALKED + WITH_DOTS)
def test_a_path_with_links_or_dots_gets_the_walks_answer(tmp_path: Path, host_path: str) -> None:
    answered = [_both(tmp_path, host_path, flags) for flags in FLAGS]
    if host_path in WITH_DOTS:
        assert answered == [False] * len(FLAGS)


def test_a_link_in_the_last_place_is_left_alone_by_openat2_without_follow_last(
    tmp_path: Path,
) -> None:
    answered = _both(tmp_path, "/etc/kubernetes/pki/link.crt", {"follow_last": False})
    assert answered


def test_a_link_free_path_costs_three_calls_at_any_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: Counter[str] = Counter()

    def counted(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(os, "open", counted("open", os.open))
    monkeypatch.setattr(os, "stat", counted("stat", os.stat))
    monkeypatch.setattr(openat2, "open_dir", counted("openat2", openat2.open_dir))
    for depth in (4, 12):
        root = tmp_path / f"d{depth}"
        directory = root.joinpath(*"abcdefghijkl"[: depth - 1])
        directory.mkdir(parents=True)
        (directory / "f").write_bytes(b"x")
        host_path = "/" + "/".join("abcdefghijkl"[: depth - 1]) + "/f"
        for fast in (True, False):
            calls.clear()
            with locate_compare.fast_path(fast), confined.locate(root, host_path) as where:
                assert where.literal_tail == depth
            if fast:  # the root, the final directory, the last name
                assert calls == {"open": 1, "openat2": 1, "stat": 1}, depth
            else:  # the walk: an lstat and an open per directory
                assert calls == {"open": depth, "stat": depth}, depth


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG])
def test_a_refused_openat2_is_tried_once_then_the_walk_answers_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    tries = []

    def refused(root_fd: int, path: bytes) -> int:
        tries.append(path)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(openat2.STATE, "call", refused)
    monkeypatch.setattr(openat2.STATE, "usable", True)
    fast_base, walk_base = hostile(tmp_path / "fast"), hostile(tmp_path / "walk")
    for host_path, flags in itertools.product(LINK_FREE + WALKED + WITH_DOTS, FLAGS):
        refused_way = locate_compare.outcome(fast_base, host_path, fast=None, **flags)
        walk = locate_compare.outcome(walk_base, host_path, fast=False, **flags)
        assert refused_way == walk, (host_path, flags)
    assert len(tries) == 1 and not openat2.usable()


def test_a_link_on_the_way_does_not_turn_openat2_off(tmp_path: Path) -> None:
    base = hostile(tmp_path)
    with locate_compare.fast_path(True):
        with confined.locate(base / "root", "/etc/kubernetes/tmp/ca.crt") as where:
            assert where.resolved == "/etc/kubernetes/pki/ca.crt"
        assert openat2.usable()


def test_an_architecture_without_a_known_syscall_number_never_tries_openat2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "n", "6.18", "", "mips")))
    assert not openat2.State().usable


def test_openat2_is_usable_on_this_machine(tmp_path: Path) -> None:
    """Every other test here would pass with the walk alone: this one says the fast path ran."""
    release = tuple(int(n) for n in os.uname().release.split(".")[:2] if n.isdigit())
    if os.uname().machine not in openat2.SYSCALL_NUMBERS or release < (5, 6):
        binaries.gate(f"openat2 is not available on {os.uname().machine} {release}")
    (tmp_path / "a" / "b").mkdir(parents=True)
    root_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with locate_compare.fast_path(True):
            fd = openat2.open_dir(root_fd, "a/b")
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "a" / "b"))
        os.close(fd)
    finally:
        os.close(root_fd)
