"""CertificateSigningRequests through the door: watch kubelet serving CSRs, approve or deny
(``/approval``), write the certificate or a Failed condition (``/status``).

Every write carries the ``resourceVersion`` it was based on, so it never overwrites a change it
did not see: a concurrent approval, denial or certificate (kube-controller-manager's
``csrsigning`` signs the same signer when it is configured with the cluster CA, as kubeadm
does) comes back as ``Conflict``, and the caller re-reads. Writing a certificate onto a CSR that
already holds one is refused by the API server (``Invalid``); ``put_certificate`` reports both
cases as "someone else signed" instead of failing.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any

from reconciler.cluster import kube as kube_

PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
KUBELET_SERVING = "kubernetes.io/kubelet-serving"
WATCH_PARAMS = {"fieldSelector": f"spec.signerName={KUBELET_SERVING}"}


def path(name: str) -> str:
    return f"{PATH}/{name}"


def name(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def get(kube: kube_.Kube, csr_name: str) -> dict[str, Any]:
    return kube.get(path(csr_name))


def condition(type_: str, reason: str, message: str, now: dt.datetime) -> dict[str, Any]:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": type_,
        "status": "True",
        "reason": str(reason),
        "message": message[:1024],
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
    }


def add_condition(
    kube: kube_.Kube, obj: Mapping[str, Any], cond: Mapping[str, Any]
) -> dict[str, Any]:
    """Append an Approved or Denied condition (``/approval``) or a Failed one (``/status``),
    based on ``obj``'s resourceVersion; ``Conflict`` if the CSR changed since."""
    updated = _with_status(obj)
    updated["status"]["conditions"] = [*updated["status"].get("conditions", []), dict(cond)]
    sub = "status" if cond["type"] == "Failed" else "approval"
    return kube.replace(f"{path(name(obj))}/{sub}", updated)


def put_certificate(kube: kube_.Kube, obj: Mapping[str, Any], pem: bytes) -> dict[str, Any] | None:
    """Write ``status.certificate``; None when another signer got there first (the CSR changed
    or already holds a certificate), which is not an error: first signer wins."""
    updated = _with_status(obj)
    updated["status"]["certificate"] = base64.b64encode(pem).decode()
    try:
        return kube.replace(f"{path(name(obj))}/status", updated)
    except kube_.Conflict:
        return None
    except kube_.Invalid as e:
        if "certificate" in str(e):
            return None  # "updates may not modify existing certificate content"
        raise


def _with_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    updated = {k: v for k, v in obj.items() if k != "status"}
    status = dict(obj.get("status") or {})
    status["conditions"] = list(status.get("conditions") or [])
    updated["status"] = status
    updated.setdefault("apiVersion", "certificates.k8s.io/v1")
    updated.setdefault("kind", "CertificateSigningRequest")
    return updated
