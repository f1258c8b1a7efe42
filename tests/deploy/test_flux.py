"""The default overlay, built and applied the way Flux's kustomize-controller does it: the Flux
Kustomization of docs/gitops/ fed to Flux's own libraries (fluxcd/pkg/kustomize's generator and
SecureBuild, fluxcd/pkg/ssa's staged server-side apply; tests/deploy/tools/fluxapply) against
a real API server. A second reconciliation finds nothing to change."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.controlplane import cluster
from tests.deploy import tools

FLUX_KUSTOMIZATION = tools.REPO / "docs/gitops/flux-kustomization.yaml"
# Building and applying ~20 objects takes about a second; a minute is stuck.
FLUX_TIMEOUT_SECONDS = 60


def reconcile(source: Path, kubeconfig: Path) -> dict[str, str]:
    done = subprocess.run(
        [
            tools.tool("fluxapply"),
            "-kubeconfig",
            str(kubeconfig),
            "-source",
            str(source),
            "-kustomization",
            str(FLUX_KUSTOMIZATION),
        ],
        capture_output=True,
        text=True,
        timeout=FLUX_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stderr
    return {e["subject"]: e["action"] for e in json.loads(done.stdout)}


def test_flux_applies_the_overlay_and_a_second_reconciliation_changes_nothing(
    own_control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    # Flux works on a copy of the repository (its source artifact), and its generator writes
    # into it: never into this checkout.
    source = tmp_path / "source"
    for part in ("kustomize", "policies"):
        shutil.copytree(tools.REPO / part, source / part)
    kubeconfig = own_control_plane.admin_kubeconfig

    first = reconcile(source, kubeconfig)
    expected = tools.objects("kustomize/overlays/default")
    assert len(first) == len(expected), first
    assert set(first.values()) == {"created"}, first
    assert "DaemonSet/kube-system/kucero-control-plane" in first

    second = reconcile(source, kubeconfig)
    assert second.keys() == first.keys()
    assert set(second.values()) == {"unchanged"}, second

    # Flux labels what it owns (for pruning), and uses its own field manager.
    got = tools.kubectl(
        "get",
        "-n",
        "kube-system",
        "configmap",
        "kucero-policy",
        "-o",
        "json",
        "--show-managed-fields",
        kubeconfig=kubeconfig,
    )
    meta = json.loads(got.stdout)["metadata"]
    assert meta["labels"]["kustomize.toolkit.fluxcd.io/name"] == "kucero"
    assert {m["manager"] for m in meta["managedFields"]} == {"kustomize-controller"}
    # The checkout's copy is as it was (the generator cleaned up after itself).
    assert (source / "kustomize/overlays/default/kustomization.yaml").read_text() == (
        tools.REPO / "kustomize/overlays/default/kustomization.yaml"
    ).read_text()
