"""What the e2e node trusts and presents, read the way a user would read it: the CA files, the
kubelet's certificates, the cluster's copies of the CA (``kucero-ca``, ``kube-root-ca.crt``,
``cluster-info``), a pod's projected ``ca.crt``, a Lease's last renewal, the real
``kubeadm certs check-expiration``'s CA section, and whether a TLS server's certificate
verifies against a CA file *now* (OpenSSL checks the trust anchor's own validity too: an
ended CA certificate verifies nothing, even with the right key)."""

from __future__ import annotations

import base64
import datetime as dt
import re
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from tests.e2e import checks, node

CA_FILES = {
    "ca": checks.PKI / "ca.crt",
    "front-proxy-ca": checks.PKI / "front-proxy-ca.crt",
    "etcd-ca": checks.PKI / "etcd/ca.crt",
}
KUBELET_CLIENT = Path("/var/lib/kubelet/pki/kubelet-client-current.pem")
KUBELET_SERVING = Path("/var/lib/kubelet/pki/kubelet-server-current.pem")
SA_CA = "var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
_KUBEADM_CA_LINE = re.compile(r"^(\S+)\s+(\w{3} \d\d, \d{4} \d\d:\d\d UTC)\s+\S+\s+(?:yes|no)\s*$")


def ca_files() -> dict[str, x509.Certificate]:
    return {name: checks.cert(path.read_bytes()) for name, path in CA_FILES.items()}


def kubelet_client() -> x509.Certificate:
    """The kubelet's client certificate in use (the file holds the certificate and its key)."""
    return checks.cert(KUBELET_CLIENT.read_bytes())


def kubelet_serving() -> x509.Certificate:
    return checks.cert(KUBELET_SERVING.read_bytes())


def configmap(bin_dir: Path, namespace: str, name: str) -> dict[str, Any] | None:
    out = node.kubectl(
        bin_dir, "-n", namespace, "get", "configmap", name, "-o", "json", "--show-managed-fields",
        check=False, timeout=30,
    )  # fmt: skip
    return dict(yaml.safe_load(out)) if out.strip() else None


def published(bin_dir: Path) -> dict[str, str]:
    """The ``data`` of kucero's ``kucero-ca`` ConfigMap ({} while there is none)."""
    found = configmap(bin_dir, "kube-system", "kucero-ca")
    return dict((found or {}).get("data") or {})


def root_ca(bin_dir: Path, namespace: str) -> tuple[x509.Certificate, dt.datetime] | None:
    """``kube-root-ca.crt`` in ``namespace`` and when kube-controller-manager last wrote it."""
    found = configmap(bin_dir, namespace, "kube-root-ca.crt")
    if not found or "ca.crt" not in (found.get("data") or {}):
        return None
    times = [
        dt.datetime.fromisoformat(m["time"].replace("Z", "+00:00"))
        for m in found["metadata"].get("managedFields", [])
        if m.get("manager") == "kube-controller-manager" and m.get("time")
    ]
    return checks.cert(found["data"]["ca.crt"].encode()), max(times)


def cluster_info_ca(bin_dir: Path) -> x509.Certificate:
    found = configmap(bin_dir, "kube-public", "cluster-info")
    assert found, "no kube-public/cluster-info"
    doc = yaml.safe_load(found["data"]["kubeconfig"])
    return checks.cert(
        base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])
    )


def pod_ca(pid: int) -> x509.Certificate:
    """The CA a process in a pod trusts the API server with: its projected ``ca.crt``. (In a
    Debian image ``/var/run`` is a link to ``/run``: an absolute link, which ``/proc/PID/root``
    would resolve on the host, so both places are tried.)"""
    for where in (SA_CA.removeprefix("var/"), SA_CA):
        path = Path(f"/proc/{pid}/root/{where}")
        if path.exists():
            return checks.cert(path.read_bytes())
    raise FileNotFoundError(f"no projected ca.crt in process {pid}'s root")


def lease_renewed(bin_dir: Path, namespace: str, name: str) -> dt.datetime:
    lease = checks.kubectl_json(bin_dir, "-n", namespace, "get", "lease", name)
    return dt.datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))


def kubeadm_ca_ends(bin_dir: Path) -> dict[str, dt.datetime]:
    """The CA section of the real ``kubeadm certs check-expiration``: each CA's end."""
    out = subprocess.run(
        [str(bin_dir / "kubeadm"), "certs", "check-expiration"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    ends = {}
    section = False
    for line in out.splitlines():
        if line.startswith("CERTIFICATE AUTHORITY"):
            section = True
        elif section and (m := _KUBEADM_CA_LINE.match(line)):
            when = dt.datetime.strptime(m.group(2), "%b %d, %Y %H:%M %Z")
            ends[m.group(1)] = when.replace(tzinfo=dt.UTC)
    return ends


def verify_error(
    host: str, port: int, cafile: Path, client: tuple[Path, Path] | None = None
) -> str | None:
    """None when the TLS server at ``host:port`` presents a certificate that verifies against
    ``cafile`` now (OpenSSL, host name not checked), else the error."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(cafile))
    if client:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    try:
        with socket.create_connection((host, port), timeout=5) as sock, ctx.wrap_socket(sock):
            return None
    except (ssl.SSLError, OSError) as e:
        return str(e)


def kubeconfig_trusting(admin_conf: bytes, ca_pem: bytes) -> bytes:
    """``admin_conf`` with ``ca_pem`` as its cluster's CA: a kubeconfig handed out before the
    renewal (the old CA certificate embedded) whose client certificate is still valid."""
    doc = yaml.safe_load(admin_conf)
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return yaml.safe_dump(doc).encode()
