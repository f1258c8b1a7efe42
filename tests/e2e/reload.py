"""Which component reloads which CA file by itself, asked of the real components on the node.

A CA renewal rewrites every trust anchor and restarts what loads one (docs/deploy.md, "CA
renewal"). Whether each restart was *needed* is a property of the component: some watch their
CA files and load a new content by themselves, others read them once at start. For the
anchors a component checks its **clients** against, that is asked here directly: a throwaway
CA is appended to the file (written aside and renamed in, as kucero writes), and a client
certificate it signed is presented to the component every second. Refused before the append
and accepted after: the component reloads that file by itself; still refused after
``RELOAD_TIMEOUT_SECONDS`` (the components' file watchers also poll once a minute): it does
not. The files are put back byte for byte afterwards.

The anchors a component uses as a **client** (a kubeconfig's ``certificate-authority-data``,
kube-apiserver's ``--etcd-cafile``) and kube-controller-manager's ``--root-ca-file`` cannot be
asked this way (that would need a server with a certificate from the throwaway CA); the test
reads the last from when ``kube-root-ca.crt`` changed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import json
import os
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e import checks

RELOAD_TIMEOUT_SECONDS = 75.0
POLL_SECONDS = 1.0
ATTEMPT_TIMEOUT_SECONDS = 3.0
PROBE_USER = "e2e-reload-probe"
FRONT_PROXY_CN = "front-proxy-client"  # kubeadm's --requestheader-allowed-names
FILES = {
    "ca": checks.PKI / "ca.crt",
    "front-proxy-ca": checks.PKI / "front-proxy-ca.crt",
    "etcd-ca": checks.PKI / "etcd/ca.crt",
}


@dataclasses.dataclass(frozen=True)
class Probe:
    component: str
    anchor: str  # the flag or field naming the file
    ca: str  # which of FILES
    # (client certificate, key) -> accepted?; raises nothing: a refusal is False
    ask: Callable[[Path, Path], bool]


def _request(
    url: str,
    client: tuple[Path, Path],
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> int:
    """The HTTP status, or 0 when the TLS handshake or the connection failed (a server that
    checks client certificates in the handshake refuses an unknown one there)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's trust of us is asked, not ours of it
    ctx.load_cert_chain(str(client[0]), str(client[1]))
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=ATTEMPT_TIMEOUT_SECONDS, context=ctx) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ssl.SSLError):
        return 0


def _whoami(url: str, client: tuple[Path, Path], headers: dict[str, str]) -> str | None:
    review = json.dumps(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    ).encode()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(client[0]), str(client[1]))
    request = urllib.request.Request(
        f"{url}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        data=review,
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=ATTEMPT_TIMEOUT_SECONDS, context=ctx) as r:
            return str(json.loads(r.read())["status"]["userInfo"]["username"])
    except (OSError, ssl.SSLError, ValueError, KeyError):
        return None


def probes(address: str) -> list[Probe]:
    """Every server-side CA file of kubeadm's components, and how to ask each."""
    apiserver = "https://127.0.0.1:6443"
    header = {"X-Remote-User": f"{PROBE_USER}-header", "X-Remote-Group": "system:authenticated"}
    return [
        Probe("kube-apiserver", "--client-ca-file", "ca",
              lambda c, k: _whoami(apiserver, (c, k), {}) == PROBE_USER),
        Probe("kube-apiserver", "--requestheader-client-ca-file", "front-proxy-ca",
              lambda c, k: _whoami(apiserver, (c, k), header) == f"{PROBE_USER}-header"),
        # 401 for an unknown client; 403 once it is authenticated (authorization says no)
        Probe("kube-controller-manager", "--client-ca-file", "ca",
              lambda c, k: _request(f"https://{address}:10257/metrics", (c, k)) in (200, 403)),
        Probe("kube-scheduler", "client CA of extension-apiserver-authentication", "ca",
              lambda c, k: _request(f"https://{address}:10259/metrics", (c, k)) in (200, 403)),
        Probe("kubelet", "authentication.x509.clientCAFile", "ca",
              lambda c, k: _request(f"https://{address}:10250/pods", (c, k)) in (200, 403)),
        # etcd checks client certificates in the TLS handshake
        Probe("etcd", "--trusted-ca-file", "etcd-ca",
              lambda c, k: _request(f"https://{address}:2379/health", (c, k)) == 200),
        Probe("etcd", "--peer-trusted-ca-file", "etcd-ca",
              lambda c, k: _request(f"https://{address}:2380/version", (c, k)) == 200),
    ]  # fmt: skip


@dataclasses.dataclass
class _Throwaway:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def make(cls, name: str) -> _Throwaway:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return cls(cert, key)

    def issue(self, directory: Path, cn: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        name = f"{cn}-{self.cert.serial_number:x}"
        crt, pem = directory / f"{name}.crt", directory / f"{name}.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return crt, pem


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` aside and rename it over ``path`` (kucero's and kubeadm's way)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)


def _until_accepted(probe: Probe, client: tuple[Path, Path], since: float) -> float | None:
    """Seconds from ``since`` until ``probe`` accepted ``client``; None if it never did."""
    while time.monotonic() - since < RELOAD_TIMEOUT_SECONDS:
        if probe.ask(*client):
            return round(time.monotonic() - since, 1)
        time.sleep(POLL_SECONDS)
    return None


def ask(address: str, directory: Path) -> list[dict[str, object]]:
    """Each probe's answer: ``reloadedAfterSeconds`` (None: not within the timeout)."""
    directory.mkdir(parents=True, exist_ok=True)
    found = probes(address)
    throwaway = {ca: _Throwaway.make(f"kucero-e2e-throwaway-{ca}") for ca in FILES}
    clients = {
        ca: made.issue(directory, FRONT_PROXY_CN if ca == "front-proxy-ca" else PROBE_USER)
        for ca, made in throwaway.items()
    }
    accepted_before = [f"{p.component} {p.anchor}" for p in found if p.ask(*clients[p.ca])]
    assert not accepted_before, f"accepted before the throwaway CA was added: {accepted_before}"
    originals = {ca: path.read_bytes() for ca, path in FILES.items()}
    try:
        for ca, path in FILES.items():
            pem = throwaway[ca].cert.public_bytes(serialization.Encoding.PEM)
            _replace(path, originals[ca] + pem)
        since = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(found)) as pool:
            answers = list(pool.map(lambda p: _until_accepted(p, clients[p.ca], since), found))
    finally:
        for ca, path in FILES.items():
            _replace(path, originals[ca])
    assert all(path.read_bytes() == originals[ca] for ca, path in FILES.items())
    return [
        {
            "component": p.component,
            "anchor": p.anchor,
            "file": str(FILES[p.ca]),
            "reloadsByItself": seconds is not None,
            "reloadedAfterSeconds": seconds,
        }
        for p, seconds in zip(found, answers, strict=True)
    ]
