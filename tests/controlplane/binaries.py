"""Where build.sh puts the binaries (derived from the pinned go.mod files, as build.sh does),
and the gate that skips or fails the tests that need them when they are not there."""

from __future__ import annotations

import os
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kubeadm",
    "etcd",
    "kubectl",
    "kubeletserving",
)


def _required(go_mod: Path, module: str) -> str:
    match = re.search(rf"^require {re.escape(module)} (\S+)$", go_mod.read_text(), re.M)
    if not match:
        raise RuntimeError(f"{go_mod}: no 'require {module}' line")
    return match.group(1)


K8S_VERSION = _required(HERE / "k8s" / "go.mod", "k8s.io/kubernetes")
ETCD_VERSION = _required(HERE / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3")


def cache() -> Path:
    """The root of the binary cache (build.sh and matrix.sh build under it)."""
    return Path(
        os.environ.get("KUCERO_TESTBIN")
        or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kucero-testbin"
        )
    )


def directory() -> Path:
    return cache() / f"{K8S_VERSION}-etcd-{ETCD_VERSION}"


def missing() -> list[str]:
    return [n for n in NAMES if not os.access(directory() / n, os.X_OK)]


def path(name: str) -> str:
    return str(directory() / name)


def require(*names: str) -> None:
    """Skip the calling test when any of ``names`` (default: all) is not built, saying how to
    build them; fail instead when ``CI`` is set, so a green CI run means the tests ran."""
    absent = [n for n in missing() if not names or n in names]
    if absent:
        gate(f"{', '.join(absent)} not built in {directory()}: run `make testbin` (needs Go)")


def gate(message: str) -> None:
    """Skip the calling test with ``message``, or fail it when ``CI`` is set: in CI a test that
    cannot run is a failure, never a silent skip."""
    import pytest

    # set to any value, empty included: CI=false or CI= must not turn a CI run's failure into
    # a skip
    if "CI" in os.environ:
        pytest.fail(f"{message} [CI is set: tests that cannot run fail]", pytrace=False)
    pytest.skip(message)
