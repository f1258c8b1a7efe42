"""Ask etcd, before its local member is restarted, whether the others keep quorum without it.

The local member (the etcd static pod's client endpoint, on loopback) is asked for the member
list through etcd's JSON gateway (``POST /v3/cluster/member/list``), then every member's
``GET /health`` on its advertised client URLs: with the healthcheck client certificate
(``etcd/healthcheck-client.crt``), as kubeadm's own probes do. ``decide.quorum.verdict`` says
yes or no; anything that prevents asking (an answer that is not etcd's, a TLS failure) is a no,
with the reason. A local member that refuses the connection outright is not running: restarting
it cannot take anything from a quorum, and is allowed.

The served certificate is checked against the etcd CA by signature only, never by its dates:
in the recovery case (every certificate expired together, ``kucero node --once`` with the API
server down) the members still run with expired certificates, and this check must still be
able to ask them. ``ssl``, ``http.client`` and ``socket`` are imported when a check runs.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any

from cryptography import x509

from reconciler.decide import pki, quorum
from reconciler.model import kubeadm, staticpod
from reconciler.node import host as host_

if TYPE_CHECKING:
    import ssl

# One request to a member on the control-plane network: a healthy etcd answers in milliseconds.
TIMEOUT_SECONDS = 2.0
MEMBER_LIST = "/v3/cluster/member/list"


class _Refused(Exception):
    """Nothing listens on the local member's client port."""


def check(
    host: host_.Host, pod: staticpod.StaticPod, timeout: float = TIMEOUT_SECONDS
) -> str | None:
    """None when restarting the local etcd member of ``pod`` keeps quorum, else why not."""
    try:
        ca = pki.load_cert(host.read(kubeadm.CA_BY_NAME["etcd-ca"].cert) or b"")
        context = _context(host, pod.health_client)
    except (pki.PKIError, host_.HostError, OSError) as e:
        return (
            f"etcd quorum check: cannot load the etcd CA or the healthcheck client certificate: {e}"
        )
    local = f"https://{_host(pod.serving.host)}:{pod.serving.port}"
    try:
        listing = _request(local, "POST", MEMBER_LIST, b"{}", context, ca, timeout)
        local_id, members = quorum.parse_members(json.loads(listing))
    except _Refused:
        return None  # not running: it holds no part of any quorum
    except (OSError, ValueError) as e:
        return f"etcd quorum check: cannot ask the local member at {local} for its members: {e}"
    local_healthy = _healthy([local], context, ca, timeout)
    healthy = {
        m.id: _healthy(m.client_urls, context, ca, timeout) for m in members if m.id != local_id
    }
    return quorum.verdict(local_id, members, local_healthy, healthy)


def _healthy(urls: Any, context: ssl.SSLContext, ca: x509.Certificate, timeout: float) -> bool:
    """True when one of ``urls`` answers ``/health`` with ``{"health": "true"}``."""
    for url in urls:
        try:
            body = json.loads(_request(url, "GET", "/health", None, context, ca, timeout))
        except (OSError, ValueError, _Refused):
            continue
        if isinstance(body, dict) and str(body.get("health")) == "true":
            return True
    return False


def _request(
    base: str,
    method: str,
    path: str,
    body: bytes | None,
    context: ssl.SSLContext,
    ca: x509.Certificate,
    timeout: float,
) -> bytes:
    """One request; the member's certificate must be signed by the etcd CA. Raises ``OSError``
    (``ValueError`` for a bad URL or answer, ``_Refused`` when the port refuses)."""
    import http.client
    import ssl

    url = urllib.parse.urlsplit(base)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ValueError(f"{base}: not an http(s) URL")
    port = url.port or 2379
    if url.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            url.hostname, port, context=context, timeout=timeout
        )
    else:
        conn = http.client.HTTPConnection(url.hostname, port, timeout=timeout)
    try:
        try:
            conn.connect()
        except ConnectionRefusedError as e:
            raise _Refused(str(e)) from e
        if isinstance(conn.sock, ssl.SSLSocket):
            _check_issuer(conn.sock.getpeercert(binary_form=True), ca, base)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read(1 << 20)
        if response.status != 200:
            raise ValueError(f"{base}{path}: HTTP {response.status} {data[:200]!r}")
        return data
    except (ssl.SSLError, http.client.HTTPException) as e:
        raise OSError(f"{base}{path}: {e}") from e
    finally:
        conn.close()


def _check_issuer(der: bytes | None, ca: x509.Certificate, where: str) -> None:
    """Signed by the etcd CA (dates not checked, see the module docstring)."""
    try:
        served = x509.load_der_x509_certificate(der or b"")
        served.verify_directly_issued_by(ca)
    except Exception as e:  # wrong issuer, bad signature, garbage: not a member of ours
        raise OSError(f"{where} serves a certificate not signed by the etcd CA ({e})") from e


def _context(host: host_.Host, client: tuple[str, str] | None) -> ssl.SSLContext:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the issuer is checked by hand: expired members answer too
    if client is None:
        raise OSError("the etcd static pod names no healthcheck client certificate")
    ctx.load_cert_chain(host.path(client[0]), host.path(client[1]))
    return ctx


def _host(name: str) -> str:
    return f"[{name}]" if ":" in name else name
