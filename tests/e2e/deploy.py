"""Deploy kucero on the e2e node exactly as the README tells users:

    kubectl kustomize <overlay> | kubectl apply --server-side -f -

where ``<overlay>`` is a kustomization of the test's own, on top of
``kustomize/overlays/default``, that changes only what this machine needs:

- the image: the one built from the Dockerfile (``tests/e2e/kucero-image.sh``);
- the API server address: ``KUBERNETES_SERVICE_HOST``/``PORT`` are the node's address and
  6443, since nothing (no kube-proxy) makes the ``kubernetes`` Service reachable;
- ``--kubelet-restart-command``: PID 1 here is not systemd and its namespaces cannot be
  entered; the command sends SIGHUP to the kubelet's supervisor (``supervise.py``), which
  restarts the kubelet as ``systemctl restart kubelet`` would;
- the policy (the ``kucero-policy`` ConfigMap's ``policy.yaml``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import checks, node

REPO = node.REPO
DEFAULT_OVERLAY = REPO / "kustomize" / "overlays" / "default"
NAMESPACE = "kube-system"
CONTROL_PLANE_DS = "kucero-control-plane"
RESTART_FLAG = "--kubelet-restart-command="
SHIPPED_POLICY = (REPO / "policies" / "default.yaml").read_text()


def rendered(bin_dir: Path, overlay: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(bin_dir / "kubectl"), "kustomize", str(overlay)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def _args_index(bin_dir: Path) -> int:
    """Where the default overlay's control-plane container has its kubelet restart flag."""
    for doc in rendered(bin_dir, DEFAULT_OVERLAY):
        if doc["kind"] == "DaemonSet" and doc["metadata"]["name"] == CONTROL_PLANE_DS:
            args = doc["spec"]["template"]["spec"]["containers"][0]["args"]
            return next(i for i, a in enumerate(args) if a.startswith(RESTART_FLAG))
    raise LookupError(f"no DaemonSet {CONTROL_PLANE_DS} in {DEFAULT_OVERLAY}")


def write_overlay(
    directory: Path, bin_dir: Path, image: str, policy: str, supervisor_pid: int
) -> Path:
    """The test's overlay in ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    name, tag = image.rsplit(":", 1)
    env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": node.node_ip()},
        {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
    ]
    restart = f"{RESTART_FLAG}sh -c 'kill -HUP {supervisor_pid}'"
    patches: list[dict[str, Any]] = []
    for ds in ("kucero-control-plane", "kucero-node"):
        ops: list[dict[str, Any]] = [
            {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": e} for e in env
        ]
        if ds == CONTROL_PLANE_DS:
            ops.append(
                {"op": "replace", "value": restart,
                 "path": f"/spec/template/spec/containers/0/args/{_args_index(bin_dir)}"}
            )  # fmt: skip
        patches.append({"target": {"kind": "DaemonSet", "name": ds}, "patch": json.dumps(ops)})
    patches.append(
        {
            "target": {"kind": "ConfigMap", "name": "kucero-policy"},
            "patch": json.dumps([{"op": "replace", "path": "/data/policy.yaml", "value": policy}]),
        }
    )
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize wants a relative path to another kustomization
        "resources": [os.path.relpath(DEFAULT_OVERLAY, directory)],
        "images": [{"name": "ghcr.io/kucero-py/kucero", "newName": name, "newTag": tag}],
        "patches": patches,
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return directory


def apply(bin_dir: Path, overlay: Path) -> str:
    """``kubectl kustomize <overlay> | kubectl apply --server-side -f -``, as the README says."""
    kubectl = str(bin_dir / "kubectl")
    rendered_text = subprocess.run(
        [kubectl, "kustomize", str(overlay)], check=True, capture_output=True, text=True
    ).stdout
    return subprocess.run(
        [kubectl, f"--kubeconfig={node.ADMIN_CONF}", "apply", "--server-side", "-f", "-"],
        input=rendered_text, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def base_policy() -> str:
    """The shipped policy, with the node's address allowed in kubelet serving certificates
    (``csrSigner.allowedIPRanges`` is empty by default: no IP SAN is approved)."""
    doc = yaml.safe_load(SHIPPED_POLICY)
    doc["spec"]["csrSigner"]["allowedIPRanges"] = [f"{node.node_ip()}/32"]
    return yaml.safe_dump(doc, sort_keys=False)


def status(bin_dir: Path) -> dict[str, Any]:
    return checks.node_annotation(bin_dir, "kucero.io/status")


def converged_to_desired(bin_dir: Path, not_revision: str | None = None) -> dict[str, Any] | None:
    desired = checks.node_annotation(bin_dir, "kucero.io/desired").get("revision")
    st = status(bin_dir)
    done = st.get("phase") == "Converged" and st.get("revision") == desired
    return st if desired and desired != not_revision and done else None


def apply_policy(bin_dir: Path, cluster: dict[str, Any], policy: str, tmp: Path) -> None:
    """Deploy again with ``policy``: a policy edit, as a user's GitOps tool applies it."""
    image = (bin_dir / "e2e" / "kucero.image").read_text().split()[0]
    overlay = write_overlay(tmp, bin_dir, image, policy, int(cluster["supervisor"]))
    apply(bin_dir, overlay)
