"""The endpoint's TLS: a provided certificate (re-read when its files change) or a self-signed
one made in memory at start-up.

kube-controller-manager and kube-scheduler do the same when kubeadm gives them no serving
certificate, and Prometheus scrapes them with ``insecureSkipVerify``: what protects ``/metrics``
is the bearer token the API server reviews, not the server's name. The self-signed key is an
ECDSA P-256 key (0.01 ms to make), the certificate lives a year and is made again at each
start. ``ssl`` loads a certificate only from files: the PEM is written to a private temporary
directory (mode 0700) for the moment it is loaded, then removed, as ``cluster.light`` does for
a kubeconfig's embedded key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import ssl
import tempfile
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SELF_SIGNED_DAYS = 365


class TLS:
    """``context()`` -> the server SSLContext to use for the next connection."""

    def __init__(self, cert_file: str | None, key_file: str | None) -> None:
        if (cert_file is None) != (key_file is None):
            raise OSError("--metrics-cert-file and --metrics-key-file go together")
        self._files = (cert_file, key_file) if cert_file and key_file else None
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._lock = threading.Lock()
        if self._files is None:
            self._context = _context_from_pem(*self_signed(socket.gethostname()))
        else:
            self._context = self._load()

    def context(self) -> ssl.SSLContext:
        if self._files is None:
            return self._context
        with self._lock:
            # missing or half-written during a renewal: keep serving the last good pair
            with contextlib.suppress(OSError, ssl.SSLError):
                if self._stamps() != self._stamp:
                    self._context = self._load()
            return self._context

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        assert self._files is not None
        out = []
        for path in self._files:
            st = os.stat(path)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _load(self) -> ssl.SSLContext:
        assert self._files is not None
        stamp = self._stamps()
        context = _server_context()
        context.load_cert_chain(*self._files)
        self._stamp = stamp
        return context


def self_signed(host: str, now: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for ``host``, ``localhost`` and the loopback addresses."""
    import ipaddress

    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kucero@{host}"[:64])])
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if host and host != "localhost":
        names.append(x509.DNSName(host))
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _context_from_pem(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    context = _server_context()
    directory = tempfile.mkdtemp(prefix="kucero-endpoint-")  # mode 0700
    try:
        crt, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        for path, data in ((crt, cert_pem), (key, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        context.load_cert_chain(crt, key)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return context
