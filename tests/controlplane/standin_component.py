"""One stand-in control-plane component: a real process serving real TLS on its ports.

Started by ``kubelet_standin`` with a JSON description (argv[1]): for each endpoint the port,
the certificate and key files to serve (read once, at start-up, like a component that does not
hot-reload), or ``null`` for a certificate made in memory (kube-controller-manager and
kube-scheduler as kubeadm runs them); the health path of the first endpoint; for etcd the CA
that client certificates must chain to (etcd requires them). ``"otherCert": true`` serves a
fresh self-signed certificate instead of the files (a component that came back wrong).
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import socketserver
import ssl
import sys
import tempfile
import threading
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _self_signed(directory: str, name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}@in-memory")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    crt, pem = os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(pem, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return crt, pem


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _handler(health: str, body: bytes) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == health
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json" if ok else "text/plain")
            self.end_headers()
            self.wfile.write(body if ok else b"not found")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main(spec: dict[str, Any]) -> None:
    scratch = tempfile.mkdtemp(prefix="standin-")
    servers = []
    for i, endpoint in enumerate(spec["endpoints"]):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if endpoint["cert"] is None or spec.get("otherCert"):
            crt, key = _self_signed(scratch, f"{spec['name']}-{i}")
        else:
            crt, key = endpoint["cert"], endpoint["key"]
        ctx.load_cert_chain(crt, key)  # read once: a renewed file is seen only after a restart
        if spec.get("clientCA"):
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(spec["clientCA"])
        body = b'{"health":"true","reason":""}' if spec["health"] == "/health" else b"ok"
        server = _Server((endpoint["host"], endpoint["port"]), _handler(spec["health"], body))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        servers.append(server)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdout.write("serving\n")
    sys.stdout.flush()
    servers[0].serve_forever()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
