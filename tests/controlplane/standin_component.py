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


def _handler(
    health: str, body: bytes, members: bytes | None = None
) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(body if self.path == health else None)

        def do_POST(self) -> None:
            # etcd's JSON gateway: this stand-in is a cluster of one member (kucero's quorum
            # check asks before restarting etcd; tests/integration/test_etcd_quorum.py runs a
            # real three-member etcd for the cases with peers)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(members if self.path == "/v3/cluster/member/list" else None)

        def _answer(self, data: bytes | None) -> None:
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Type", "application/json" if data else "text/plain")
            self.end_headers()
            self.wfile.write(data if data is not None else b"not found")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _one_member(client: dict[str, Any]) -> bytes:
    """``/v3/cluster/member/list`` as a single-member etcd answers it."""
    url = f"https://{client['host']}:{client['port']}"
    member = {"ID": "1", "name": "standin", "peerURLs": [], "clientURLs": [url]}
    return json.dumps({"header": {"member_id": "1"}, "members": [member]}).encode()


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
        etcd = spec["health"] == "/health"
        body = b'{"health":"true","reason":""}' if etcd else b"ok"
        members = _one_member(spec["endpoints"][0]) if etcd else None
        server = _Server(
            (endpoint["host"], endpoint["port"]), _handler(spec["health"], body, members)
        )
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        servers.append(server)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdout.write("serving\n")
    sys.stdout.flush()
    servers[0].serve_forever()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
