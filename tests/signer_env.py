"""A CSR signer test environment: a control plane of its own (optionally without
kube-controller-manager, so kucero is the only signer), a host root holding the CA kucero signs
with, kucero's signer running on it, and node users that create CSRs. Used by the integration
tests and by the benchmark."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reconciler import fabricate
from reconciler.cluster import csr as csr_api
from reconciler.cluster import kube as kube_
from reconciler.decide import pki, policy
from reconciler.run import signer as signer_
from tests import csrs
from tests.controlplane import cluster

CA_CERT = "/etc/kubernetes/pki/ca.crt"
CA_KEY = "/etc/kubernetes/pki/ca.key"
# What the test nodes' kubelets ask for: <node>, <node>.cluster.internal and addresses in
# 10.0.0.0/8 (which holds the Service range 10.96.0.0/12: refused whatever this says).
KUBELET_ALLOWLIST = {"allowedDNSSuffixes": ["cluster.internal"], "allowedIPRanges": ["10.0.0.0/8"]}


def control_plane(directory: Path, with_controller_manager: bool) -> Any:
    """A control plane in ``directory`` for the duration of the block."""
    return cluster.guarded(directory, with_controller_manager)


def host_root_with_ca(
    root: Path,
    ca: tuple[Any, Any] | None = None,
    now: dt.datetime | None = None,
    apiserver_crt: Path | None = None,
) -> tuple[Path, Any, Any]:
    """``root`` with ``etc/kubernetes/pki/ca.{crt,key}``: ``ca`` (cert, key), or a new ECDSA CA;
    and a copy of ``apiserver_crt`` (a control plane's own) as the leader host's apiserver.crt."""
    cert, key = ca or fabricate.make_ca("kucero-test-ca", now or dt.datetime.now(dt.UTC), "ecdsa")
    pki_dir = root / "etc/kubernetes/pki"
    pki_dir.mkdir(parents=True, exist_ok=True)
    if apiserver_crt is not None:
        (pki_dir / "apiserver.crt").write_bytes(apiserver_crt.read_bytes())
    (pki_dir / "ca.crt").write_bytes(pki.cert_pem(cert))
    (pki_dir / "ca.key").write_bytes(pki.key_pem(key))
    (pki_dir / "ca.key").chmod(0o600)
    return root, cert, key


def load_policy(**csr_signer: Any) -> policy.Policy:
    """The test CA, ``KUBELET_ALLOWLIST``, and these ``csrSigner`` fields over them."""
    spec = {"caCertPath": CA_CERT, "caKeyPath": CA_KEY, **KUBELET_ALLOWLIST, **csr_signer}
    return policy.from_mapping(
        {"apiVersion": policy.API_VERSION, "kind": policy.KIND, "spec": {"csrSigner": spec}}
    )


def kube_for(plane: cluster.ControlPlane, user: str, groups: tuple[str, ...] = ()) -> kube_.Kube:
    """kucero's own API door, authenticated as ``user`` (a client certificate)."""
    return kube_.connect(str(plane.user_kubeconfig(user, groups)))


def node_kube(plane: cluster.ControlPlane, node: str) -> kube_.Kube:
    return kube_for(plane, f"system:node:{node}", ("system:nodes",))


def make_node(admin: kube_.Kube, name: str, addresses: list[tuple[str, str]]) -> dict[str, Any]:
    """A Node with these status addresses (created as admin, as the kubelet would register)."""
    with contextlib.suppress(kube_.NotFound):
        admin.delete(f"/api/v1/nodes/{name}")
    admin.create("/api/v1/nodes", {"metadata": {"name": name, "labels": {}}})
    # a merge patch, not a replace of the object just created: a running controller manager
    # (its node lifecycle controller) may have written the Node in between (409 on a replace)
    status = {"addresses": [{"type": t, "address": a} for t, a in addresses]}
    return admin.patch(f"/api/v1/nodes/{name}/status", {"status": status})


def create_csr(kube: kube_.Kube, name: str, pem: bytes, **spec: Any) -> dict[str, Any]:
    return kube.create(csr_api.PATH, csrs.body(pem, name, **spec))


def wait_for(admin: kube_.Kube, name: str, done: Any, timeout: float = 30.0) -> dict[str, Any]:
    """The CSR once ``done(csr)`` holds; AssertionError with its last state otherwise."""
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = admin.get(csr_api.path(name))
        if done(obj):
            return obj
        time.sleep(0.05)
    raise AssertionError(f"CSR {name} not done within {timeout}s: {obj.get('status')}")


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def decided(obj: dict[str, Any]) -> bool:
    return bool(conditions(obj)) or bool((obj.get("status") or {}).get("certificate"))


def signed(obj: dict[str, Any]) -> bool:
    return bool((obj.get("status") or {}).get("certificate"))


@contextlib.contextmanager
def running_signer(
    plane: cluster.ControlPlane, root: Path, loaded: policy.Policy, **kwargs: Any
) -> Iterator[signer_.Signer]:
    """kucero's signer on ``plane`` (as the admin: RBAC for kucero is the deploy work's)."""
    kube = kube_.connect(str(plane.admin_kubeconfig))
    signer = signer_.Signer(root, **kwargs)
    signer.start(kube, lambda: loaded)
    try:
        yield signer
    finally:
        signer.stop()
        kube.close()
