"""Fixtures of the deployment tests: overlays applied to the session's real API server with
the test kubectl (`kubectl apply --server-side`, as the README says), removed at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane import cluster
from tests.deploy import identities, tools


@pytest.fixture(scope="session")
def kubeconfig(control_plane: cluster.ControlPlane) -> Path:
    """The admin kubeconfig (system:masters) of the session's control plane."""
    return control_plane.admin_kubeconfig


@pytest.fixture(scope="session")
def monitoring_crds(kubeconfig: Path) -> Iterator[list[Path]]:
    """The prometheus-operator's ServiceMonitor and PrometheusRule CRDs, installed and
    established (taken from the published Go module by tests/deploy/build.sh)."""
    files = [tools.crd(name) for name in tools.CRDS]
    args = [a for f in files for a in ("-f", str(f))]
    tools.kubectl("apply", "--server-side", *args, kubeconfig=kubeconfig)
    tools.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *args, kubeconfig=kubeconfig
    )
    yield files
    tools.kubectl("delete", "--ignore-not-found", "--wait=false", *args, kubeconfig=kubeconfig)


@pytest.fixture(scope="session")
def deploy(kubeconfig: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[str], Any]]:
    """``deploy(overlay)`` -> the completed first `kubectl apply --server-side` of that
    overlay's output (applied once per session); everything applied is deleted at the end.
    The prometheus-operator CRDs are installed first only for an overlay that needs them."""
    applied: dict[str, Any] = {}

    def apply(overlay: str) -> Any:
        if overlay not in applied:
            rendered = tools.render(f"kustomize/overlays/{overlay}")
            if "monitoring.coreos.com/" in rendered:
                request.getfixturevalue("monitoring_crds")
            applied[overlay] = tools.kubectl(
                "apply", "--server-side", "-f", "-", stdin=rendered, kubeconfig=kubeconfig
            )
        return applied[overlay]

    yield apply
    for overlay in applied:
        tools.kubectl(
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "-f",
            "-",
            stdin=tools.render(f"kustomize/overlays/{overlay}"),
            kubeconfig=kubeconfig,
        )


@pytest.fixture(scope="module")
def own_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ControlPlane]:
    """A second, empty control plane (etcd + kube-apiserver, about 4 s to start) for a test
    whose field manager would otherwise fight the kubectl applies on the session's one."""

    directory = tmp_path_factory.mktemp("own-controlplane")
    with cluster.guarded(directory) as plane:
        yield plane


@pytest.fixture(scope="module")
def world(
    admin_kube: Any, clients: Any, control_plane: cluster.ControlPlane
) -> Iterator[identities.World]:
    """Nodes, pods and the identities of an attacker with root on a node (identities.py), with
    the RBAC and admission policies kustomize/ ships, in force."""
    with identities.build(admin_kube, clients, control_plane) as made:
        yield made
