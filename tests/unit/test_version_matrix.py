"""The version matrix's declaration (tests/controlplane/versions, k8s): which minors it claims,
and that each minor's module builds that minor only. Needs no binaries: this runs in `make test`
and catches a bumped k8s/go.mod that leaves a gap in the matrix, or a staging module pinned to
another release (Go would build a mixed kubeadm without a word)."""

from __future__ import annotations

import re

from tests.controlplane import binaries, matrix

REPLACE = re.compile(r"^\s+(k8s\.io/\S+) => (k8s\.io/\S+) (v\S+)$", re.M)


def minor_number(v: matrix.Version) -> int:
    return int(v.minor.split(".")[1])


def test_matrix_is_the_newest_four_minors_or_more_without_a_gap() -> None:
    minors = [minor_number(v) for v in matrix.VERSIONS]
    assert len(minors) >= 4
    assert minors == list(range(minors[0], minors[0] + len(minors)))
    assert matrix.VERSIONS[-1].version == binaries.K8S_VERSION == matrix.TESTBIN.version


def test_each_minor_replaces_every_staging_module_by_its_own_release() -> None:
    for v in matrix.VERSIONS:
        staging = "v0." + v.version.removeprefix("v1.")
        replaces = REPLACE.findall((v.module / "go.mod").read_text())
        assert len(replaces) >= 25, v.module
        for module, target, version in replaces:
            assert (module, version) == (target, staging), (v.module, module)


def test_each_minor_builds_the_same_kubeletbootstrap_source() -> None:
    source = (matrix.HERE / "k8s" / "kubeletbootstrap").resolve()
    for v in matrix.VERSIONS:
        assert (v.module / "kubeletbootstrap").resolve() == source, v.module
        assert (v.module / "kubeletbootstrap" / "main.go").is_file(), v.module
