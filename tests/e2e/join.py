"""A node joining the e2e cluster, as far as one machine can take it: the real ``kubeadm join``
discovery and the kubelet's TLS bootstrap, with the credentials a join command hands out.

``kubeadm join`` needs a second machine (the node's ports, its kubelet, its ``/etc/kubernetes``
are taken). Its phase ``kubelet-start`` is the part that trusts the cluster: it fetches
``cluster-info`` from ``kube-public`` anonymously, checks the JWS signature the bootstrap
signer made with the token, checks the CA in it against ``--discovery-token-ca-cert-hash``,
fetches it again verifying the API server's certificate with that CA, reads ``kubeadm-config``
with the token, and writes ``bootstrap-kubelet.conf`` and ``pki/ca.crt``. It runs here in a
private mount namespace with empty ``/etc/kubernetes`` and ``/var/lib/kubelet`` (tmpfs, gone
with the namespace), and without ``systemctl`` on its ``PATH`` (it would try to stop and start
a kubelet service). What it wrote is read back from inside.

The rest of a join is the kubelet's TLS bootstrap: a CSR for ``system:node:<name>`` sent with
``bootstrap-kubelet.conf``, approved by kube-controller-manager's approver (kubeadm's RBAC for
the bootstrap token group) and signed by its signer. ``bootstrap_client`` does that with
kubectl and returns the certificate.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import time
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e import node

# kubeadm's own discovery timeout (5 min: the bootstrap signer must have signed the token)
DISCOVERY_TIMEOUT_SECONDS = 300
SIGNED_TIMEOUT_SECONDS = 60.0


def join_command(bin_dir: Path) -> dict[str, str]:
    """``kubeadm token create --print-join-command`` (a token valid 15 minutes), read."""
    out = subprocess.run(
        [str(bin_dir / "kubeadm"), "token", "create", "--print-join-command", "--ttl=15m",
         f"--kubeconfig={node.ADMIN_CONF}"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    words = out.split()
    assert words[:2] == ["kubeadm", "join"], out
    return {
        "command": out.strip(),
        "endpoint": words[2],
        "token": words[words.index("--token") + 1],
        "caCertHash": words[words.index("--discovery-token-ca-cert-hash") + 1],
    }


def ca_cert_hash(cert: x509.Certificate) -> str:
    """kubeadm's pin: SHA-256 of the CA's SubjectPublicKeyInfo."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return "sha256:" + digest.finalize().hex()


def discover(bin_dir: Path, join: dict[str, str], name: str) -> dict[str, bytes]:
    """Run ``kubeadm join phase kubelet-start`` in a private mount namespace; returns what it
    wrote (``bootstrap-kubelet.conf``, ``ca.crt``) and its log. Raises on failure."""
    kubeadm = shlex.join(
        [
            "env", "PATH=/nonexistent", str(bin_dir / "kubeadm"), "join", "phase", "kubelet-start",
            join["endpoint"], "--token", join["token"],
            "--discovery-token-ca-cert-hash", join["caCertHash"],
            "--node-name", name, f"--cri-socket=unix://{node.SOCKET}", "-v=5",
        ]
    )  # fmt: skip
    script = f"""set -eu
mount -t tmpfs kucero-e2e-join /etc/kubernetes
mount -t tmpfs kucero-e2e-join /var/lib/kubelet
{kubeadm} >&2
echo '---bootstrap-kubelet.conf'; base64 -w0 /etc/kubernetes/bootstrap-kubelet.conf; echo
echo '---ca.crt'; base64 -w0 /etc/kubernetes/pki/ca.crt; echo
"""
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=DISCOVERY_TIMEOUT_SECONDS + 60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"kubeadm join phase kubelet-start failed:\n{done.stderr[-4000:]}")
    lines = done.stdout.splitlines()
    found = {
        lines[i].removeprefix("---"): base64.b64decode(lines[i + 1])
        for i in range(len(lines) - 1)
        if lines[i].startswith("---")
    }
    found["log"] = done.stderr.encode()
    return found


def _csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{name}"),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def bootstrap_client(
    bin_dir: Path, bootstrap_conf: bytes, name: str, directory: Path
) -> tuple[dict[str, object], Path, Path]:
    """The kubelet's TLS bootstrap with ``bootstrap_conf``: the CSR's final object, and the
    signed client certificate and its key as files."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "bootstrap-kubelet.conf"
    conf.touch(mode=0o600)
    conf.write_bytes(bootstrap_conf)
    key = ec.generate_private_key(ec.SECP256R1())
    csr_name = f"kucero-e2e-join-{int(time.time())}"
    body = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": csr_name},
        "spec": {
            "request": base64.b64encode(_csr(key, name)).decode(),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
        },
    }
    kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={conf}"]
    subprocess.run(
        [*kubectl, "create", "-f", "-"], input=json.dumps(body), check=True,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    deadline = time.monotonic() + SIGNED_TIMEOUT_SECONDS
    while True:
        # the bootstrap token may read its own CSR (kubeadm's RBAC); the admin reads it anyway
        obj = json.loads(node.kubectl(bin_dir, "get", "csr", csr_name, "-o", "json", timeout=30))
        if obj.get("status", {}).get("certificate"):
            break
        assert time.monotonic() < deadline, f"CSR {csr_name} not signed: {obj.get('status')}"
        time.sleep(1)
    node.kubectl(bin_dir, "delete", "csr", csr_name, check=False, timeout=30)
    crt = directory / "kubelet-client.crt"
    crt.write_bytes(base64.b64decode(obj["status"]["certificate"]))
    key_file = directory / "kubelet-client.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return obj, crt, key_file


def cluster_ca(bootstrap_conf: bytes) -> bytes:
    """The CA data of the bootstrap kubeconfig (what the joining kubelet will trust)."""
    doc = yaml.safe_load(bootstrap_conf)
    return base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])


def delete_token(bin_dir: Path, token: str) -> None:
    subprocess.run(
        [str(bin_dir / "kubeadm"), "token", "delete", token.split(".")[0],
         f"--kubeconfig={node.ADMIN_CONF}"],
        check=False, capture_output=True, timeout=60,
    )  # fmt: skip
