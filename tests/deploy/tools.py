"""What the deployment tests run: the test suite's kubectl (v1.37.2 with its embedded
kustomize, built by tests/controlplane/build.sh, never whatever is on PATH) and the tools of
tests/deploy/build.sh (rule checker, promtool, Flux's apply, the prometheus-operator CRDs).

Missing tools skip the test with the command that builds them, or fail it when ``CI`` is set,
through the same gate as the control-plane binaries.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane import binaries

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "kustomize"
OVERLAYS = tuple(
    sorted(p.parent.name for p in (KUSTOMIZE / "overlays").glob("*/kustomization.yaml"))
)
# The namespace each overlay deploys to (asserted against its output by the tests).
NAMESPACES = {"default": "kube-system", "custom": "kucero-system"}
CRDS = ("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml")
GITOPS_CRDS = (
    "application-crd.yaml",  # Argo CD
    "kustomize.toolkit.fluxcd.io_kustomizations.yaml",  # Flux kustomize-controller
    "source.toolkit.fluxcd.io_gitrepositories.yaml",  # Flux source-controller
)
BUILD = Path(__file__).resolve().parent / "build.sh"
# kubectl commands against a local API server take well under a second; a minute is stuck.
KUBECTL_TIMEOUT_SECONDS = 60


@functools.cache
def directory() -> Path:
    """Where build.sh puts the tools (it names the directory after their sources' hash)."""
    out = subprocess.run([str(BUILD), "--print-dir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def require(*names: str) -> None:
    """Skip (or, with CI set, fail) unless the kubectl and every tool in ``names`` are built."""
    binaries.require("kubectl")
    absent = [n for n in names if not (directory() / n).exists()]
    if absent:
        binaries.gate(
            f"{', '.join(absent)} not built in {directory()}: run `make testbin` (needs Go)"
        )


def tool(name: str) -> str:
    require(name)
    return str(directory() / name)


def crd(name: str) -> Path:
    require(f"crds/{name}")
    return directory() / "crds" / name


def kubectl(
    *args: str,
    kubeconfig: Path | None = None,
    stdin: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the test suite's kubectl; ``check`` raises with its output on a non-zero exit."""
    require()
    command = [binaries.path("kubectl"), *args]
    if kubeconfig is not None:
        command[1:1] = ["--kubeconfig", str(kubeconfig)]
    done = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=KUBECTL_TIMEOUT_SECONDS,
        cwd=REPO,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


@functools.cache
def _rendered(target: str) -> str:
    return kubectl("kustomize", target).stdout


def render(target: str | Path) -> str:
    """``kubectl kustomize`` of a directory (relative to the repository), cached per run."""
    return _rendered(str(Path(target)))


def objects(target: str | Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render(target)) if d]


def find(items: Sequence[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in items if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} {kind}/{name} in the output"
    return matches[0]
