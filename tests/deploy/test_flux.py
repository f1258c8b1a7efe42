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


def test_gitops_manifests_are_accepted_by_argo_cd_and_flux_crds(
    own_control_plane: cluster.ControlPlane,
) -> None:
    """The Argo CD Application and the Flux GitRepository and Kustomization of docs/gitops/
    validate against those tools' own CRDs (from their published Go modules): a server-side
    dry run, which the CRDs' schemas check field by field."""
    kubeconfig = own_control_plane.admin_kubeconfig
    crds = [a for name in tools.GITOPS_CRDS for a in ("-f", str(tools.crd(name)))]
    tools.kubectl("apply", "--server-side", *crds, kubeconfig=kubeconfig)
    tools.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *crds, kubeconfig=kubeconfig
    )
    for namespace in ("argocd", "flux-system"):
        tools.kubectl("create", "namespace", namespace, kubeconfig=kubeconfig)
    manifests = sorted((tools.REPO / "docs/gitops").glob("*.yaml"))
    assert len(manifests) == 3
    for manifest in manifests:
        done = tools.kubectl(
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            str(manifest),
            kubeconfig=kubeconfig,
            check=False,
        )
        assert done.returncode == 0 and done.stderr == "", f"{manifest.name}: {done.stderr}"
    # The schema is really checked: a misspelt field is refused.
    bad = (
        (tools.REPO / "docs/gitops/flux-kustomization.yaml").read_text().replace("prune:", "prnue:")
    )
    refused = tools.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        stdin=bad,
        kubeconfig=kubeconfig,
        check=False,
    )
    assert refused.returncode != 0 and "prnue" in refused.stderr, refused.stderr
