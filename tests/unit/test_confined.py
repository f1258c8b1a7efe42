"""``confined.locate`` resolves every host path inside the root, by a chroot's rules, on a
hostile tree: links to absolute paths restart at the root, ``..`` stops there, loops and
dangling links end in an error, and nothing outside the root is ever reached or created."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from reconciler.node import confined

# name -> None (a file), a dict (a directory) or a str (a symbolic link to that target)
HOSTILE: dict[str, Any] = {
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
                "up": "../../../../../out",  # '..' past the root stops at the root
                "loop": "loop2",
                "loop2": "loop",
                "dangling": "nowhere",
                "magic": "/proc/self/root",  # a magic link's path, resolved inside the root
            }
        },
    },
    # Outside the root, the same names: a link the OS followed out would land here.
    "out": {"etc": {"kubernetes": {"pki": {"ca.crt": None}}}},
}


def build(directory: Path, spec: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, node in spec.items():
        if node is None:
            (directory / name).write_bytes(name.encode())
        elif isinstance(node, str):
            (directory / name).symlink_to(node)
        else:
            build(directory / name, node)


def snapshot(base: Path) -> list[tuple[str, str]]:
    found = []
    for top, dirs, names in os.walk(base):
        for name in [*dirs, *names]:
            path = Path(top, name)
            kind = os.readlink(path) if path.is_symlink() else "dir" if path.is_dir() else "file"
            found.append((str(path.relative_to(base)), kind))
    return sorted(found)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    build(tmp_path, HOSTILE)
    return tmp_path


@pytest.mark.parametrize(
    ("host_path", "follow_last", "resolved", "content"),
    [
        pytest.param(
            "/etc/kubernetes/pki/ca.crt",
            True,
            "/etc/kubernetes/pki/ca.crt",
            "ca.crt",
            id="plain-file",
        ),
        pytest.param(
            "etc//kubernetes/./pki/etcd/ca.crt",
            True,
            "/etc/kubernetes/pki/etcd/ca.crt",
            "ca.crt",
            id="odd-spelling",
        ),
        pytest.param(
            "/etc/kubernetes/pki/link.crt",
            True,
            "/etc/kubernetes/pki/ca.crt",
            "ca.crt",
            id="relative-link-followed",
        ),
        pytest.param(
            "/etc/kubernetes/pki/link.crt",
            False,
            "/etc/kubernetes/pki/link.crt",
            None,
            id="last-link-not-followed",
        ),
        pytest.param(
            "/etc/kubernetes/pki/abs.crt",
            True,
            "/etc/kubernetes/pki/ca.key",
            "ca.key",
            id="absolute-link-restarts-at-root",
        ),
        pytest.param(
            "/etc/kubernetes/tmp/ca.key",
            True,
            "/etc/kubernetes/pki/ca.key",
            "ca.key",
            id="directory-swapped-for-link",
        ),
    ],
)
def test_locate_resolves_inside_the_root(
    tree: Path, host_path: str, follow_last: bool, resolved: str, content: str | None
) -> None:
    before = snapshot(tree)
    with confined.locate(tree / "root", host_path, follow_last=follow_last) as where:
        assert where.resolved == resolved
        if content is not None:
            fd = os.open(where.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=where.dir_fd)
            try:
                assert os.read(fd, 100) == content.encode()
            finally:
                os.close(fd)
        else:
            assert os.readlink(where.name, dir_fd=where.dir_fd) == "ca.crt"
    assert snapshot(tree) == before


@pytest.mark.parametrize(
    ("host_path", "error"),
    [
        pytest.param("/etc/kubernetes/loop/x", errno.ELOOP, id="link-loop"),
        pytest.param("/etc/kubernetes/dangling/x", errno.ENOENT, id="dangling-directory-link"),
        pytest.param("/etc/kubernetes/admin.conf/x", errno.ENOTDIR, id="file-as-directory"),
        pytest.param("/etc/kubernetes/magic/etc", errno.ENOENT, id="magic-link-path-inside-root"),
        pytest.param("/etc/missing/deeper/ca.crt", errno.ENOENT, id="missing-directory"),
        # '..' past the root stops at the root: 'out' is looked for inside it, where it is not
        pytest.param("/etc/kubernetes/pki/out.crt", errno.ENOENT, id="dotdot-link-stays-inside"),
        pytest.param(
            "/etc/kubernetes/up/etc/kubernetes/pki/ca.crt",
            errno.ENOENT,
            id="up-past-root-stays-inside",
        ),
    ],
)
def test_locate_refuses_what_it_cannot_resolve_inside_the_root(
    tree: Path, host_path: str, error: int
) -> None:
    before = snapshot(tree)
    with pytest.raises(OSError) as caught, confined.locate(tree / "root", host_path):
        pass
    assert caught.value.errno == error
    assert snapshot(tree) == before


def test_create_parents_creates_inside_the_root_through_links(tree: Path) -> None:
    with confined.locate(
        tree / "root", "/etc/kubernetes/up/new/dir/f", create_parents=True, mode=0o700
    ) as where:
        assert where.resolved == "/out/new/dir/f"
    assert (tree / "root/out/new/dir").is_dir()
    assert not (tree / "out/new").exists()
    assert (tree / "root/out/new/dir").stat().st_mode & 0o777 == 0o700
