"""Ask a running control-plane component what it serves, over real TLS on the node's network.

One TLS connection per endpoint: the handshake gives the certificate the component serves
(the proof it loaded the renewed file: serial number and notAfter must equal the file's), and
on the health endpoint the same connection carries ``GET /readyz`` (kube-apiserver),
``/healthz`` (kube-controller-manager, kube-scheduler) or ``/health`` (etcd, with the
healthcheck client certificate, since etcd requires client certificates).

The served certificate is read, not trusted: verification is off on purpose, because the
question is *which* certificate is served, and kube-controller-manager and kube-scheduler serve
one made in memory that no CA signed. A port that refuses, resets or times out "does not
answer"; that is what a restart waits for before putting the manifest back.

``ssl``, ``socket`` and ``http.client`` are imported when a probe runs: every pass imports
this module (through ``restart``), few passes restart anything, and those three cost a
``kucero node --once`` about a tenth of its start-up.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from cryptography import x509

from reconciler.model import staticpod
from reconciler.node import host as host_

if TYPE_CHECKING:
    import ssl

# One probe is a loopback connection: a second is generous, and keeps a wait loop responsive.
PROBE_TIMEOUT_SECONDS = 2.0


class ProbeError(Exception):
    """The endpoint did not answer (refused, reset, timed out, no TLS)."""


@dataclasses.dataclass(frozen=True)
class Seen:
    """What one probe of a component found."""

    served: dict[str, x509.Certificate]  # endpoint role -> certificate served
    healthy: bool
    detail: str  # why not healthy, or what answered

    def serves(self, role: str, cert: x509.Certificate | None) -> bool:
        """True when endpoint ``role`` serves ``cert`` (same serial number and notAfter)."""
        got = self.served.get(role)
        return (
            got is not None
            and cert is not None
            and got.serial_number == cert.serial_number
            and got.not_valid_after_utc == cert.not_valid_after_utc
        )


def _context(host: host_.Host, client: tuple[str, str] | None) -> ssl.SSLContext:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we read the served certificate; see the module docstring
    if client is not None and host.exists(client[0]) and host.exists(client[1]):
        ctx.load_cert_chain(host.path(client[0]), host.path(client[1]))
    return ctx


def answers(endpoint: staticpod.Endpoint, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """True when something completes a TCP connection on the endpoint."""
    import socket

    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return True
    except OSError:
        return False


def probe(
    host: host_.Host, pod: staticpod.StaticPod, timeout: float = PROBE_TIMEOUT_SECONDS
) -> Seen:
    """Every endpoint's served certificate and the health answer; raise ``ProbeError`` when the
    health endpoint does not answer at all."""
    import http.client
    import ssl

    try:
        ctx = _context(host, pod.health_client)
    except (OSError, ssl.SSLError) as e:
        raise ProbeError(f"{pod.name}: cannot load the health client certificate: {e}") from e
    served: dict[str, x509.Certificate] = {}
    healthy, detail = False, ""
    for i, endpoint in enumerate(pod.endpoints):
        where = f"{endpoint.host}:{endpoint.port}"
        conn = http.client.HTTPSConnection(
            endpoint.host, endpoint.port, context=ctx, timeout=timeout
        )
        try:
            conn.connect()
            assert isinstance(conn.sock, ssl.SSLSocket)
            der = conn.sock.getpeercert(binary_form=True)
            if der:
                served[endpoint.role] = x509.load_der_x509_certificate(der)
            if i == 0:
                conn.request("GET", pod.health_path)
                response = conn.getresponse()
                body = response.read(4096)
                healthy = response.status == 200 and _body_ok(pod, body)
                detail = f"{where}{pod.health_path}: {response.status} {body[:120]!r}"
        except (OSError, ssl.SSLError, http.client.HTTPException, ValueError) as e:
            if i == 0:
                raise ProbeError(f"{pod.name} on {where}: {e}") from e
        finally:
            conn.close()
    return Seen(served, healthy, detail)


def _body_ok(pod: staticpod.StaticPod, body: bytes) -> bool:
    if pod.health_path != "/health":
        return True
    try:  # etcd: {"health":"true","reason":""}
        return str(json.loads(body).get("health")) == "true"
    except (ValueError, AttributeError):
        return False
