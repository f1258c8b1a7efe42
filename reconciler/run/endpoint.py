"""The process's HTTP endpoint: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for the
kubelet's probes, on ``--metrics-addr``.

kucero runs on the host network of every node, so this port is reachable from anywhere that
reaches a node. As kube-controller-manager and kube-scheduler do on theirs (and
controller-runtime's secure metrics serving, and kube-rbac-proxy), by default
(``--metrics-secure=true``) it speaks HTTPS and serves ``/metrics`` only to a bearer token the
API server authenticates (TokenReview) whose user may ``get`` the non-resource URL ``/metrics``
(SubjectAccessReview), see ``cluster.reviews``: 401 without a valid token, 403 without the
RBAC. ``/healthz`` and ``/readyz`` say only ok or not and stay open, as those components'
``--authorization-always-allow-paths`` do, because the kubelet probes them without a token.
The certificate is ``--metrics-cert-file``/``--metrics-key-file`` (re-read when they change,
for cert-manager's renewals) or else a self-signed one made in memory at start-up, as
kube-controller-manager does; Prometheus scrapes it with ``insecureSkipVerify`` and its
ServiceAccount token. ``--metrics-secure=false`` serves plain HTTP to anyone: meant for a
loopback address (``127.0.0.1:8080``), scraped by something on the node.

Bounded whatever the clients do: one asyncio loop holds every connection (an idle one costs a
few kilobytes, not a thread), at most ``MAX_CONNECTIONS`` at once (a new one pushes out the
oldest that has not finished sending its request), ``HEADER_TIMEOUT_SECONDS`` to finish the TLS
handshake and the request headers, ``REQUEST_TIMEOUT_SECONDS`` for the whole exchange, headers
of at most ``MAX_HEADER_BYTES``, one request per connection. The probes are answered on the loop
itself, so a scrape waiting on the API server never delays them; rendering metrics and asking
the API server run on ``WORKERS`` threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import prometheus_client

from reconciler import metrics as metrics_
from reconciler.cluster import kube as kube_
from reconciler.cluster import reviews
from reconciler.run import health, servingcert

log = logging.getLogger(__name__)

# Prometheus, two kubelet probes and a person with curl need a handful; a flood of idle
# connections pushes out the oldest idle one rather than the probe that arrives next.
MAX_CONNECTIONS = 64
# A client on the same network finishes a TLS handshake and a GET in milliseconds.
HEADER_TIMEOUT_SECONDS = 5.0
# Prometheus's default scrape timeout; a TokenReview that takes longer is answered 503.
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_HEADER_BYTES = 8192
# Threads that render /metrics and ask the API server (requests beyond them wait their turn).
WORKERS = 2


@dataclasses.dataclass(frozen=True)
class Options:
    addr: tuple[str, int]
    secure: bool = True
    cert_file: str | None = None
    key_file: str | None = None


@dataclasses.dataclass
class _Connection:
    in_flight: bool = False  # its request was read: it is being answered


@dataclasses.dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}
_REASONS |= {404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
_REASONS |= {503: "Service Unavailable"}


class Endpoint:
    """Serves until ``close()``, on a thread of its own."""

    def __init__(
        self,
        options: Options,
        metrics: metrics_.Metrics,
        ready: Callable[[], bool],
        heartbeats: health.Heartbeats,
        kube: kube_.Kube | None,
    ) -> None:
        self._metrics, self._ready, self._heartbeats = metrics, ready, heartbeats
        self._reviewer = reviews.Reviewer(kube) if options.secure and kube is not None else None
        self._secure = options.secure
        self._tls = servingcert.TLS(options.cert_file, options.key_file) if options.secure else None
        host, port = options.addr
        if not options.secure and host not in ("localhost",) and not _loopback(host):
            log.warning(
                "--metrics-secure=false on %s: /metrics is served to anyone who reaches this "
                "address; bind it to 127.0.0.1",
                host or "every interface",
            )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=128)
        self.port = int(sock.getsockname()[1])
        sock.setblocking(False)
        self._sock = sock
        self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS, "endpoint")
        self._open: dict[asyncio.Task[None], _Connection] = {}
        self._loop = asyncio.new_event_loop()
        self._acceptor = self._loop.create_task(self._accept())
        self._thread = threading.Thread(target=self._loop.run_forever, name="endpoint", daemon=True)
        self._thread.start()
        scheme = "https" if options.secure else "http"
        log.info(
            "serving /metrics, /healthz, /readyz (%s) on %s:%d", scheme, host or "*", self.port
        )

    @property
    def connections(self) -> int:
        return len(self._open)

    def close(self) -> None:
        async def stop() -> None:
            self._acceptor.cancel()
            for task in list(self._open):
                task.cancel()
            await asyncio.gather(self._acceptor, *self._open, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._loop.close()
        self._sock.close()

    # --- one connection ----------------------------------------------------------------

    async def _accept(self) -> None:
        """Accept, count and hand each connection to a task of its own. TLS is set up on the
        accepted socket (``connect_accepted_socket``), so a connection counts against the cap
        from its first byte, handshake included."""
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            if not self._admit():
                conn.close()
                continue
            record = _Connection()
            task = loop.create_task(self._client(conn, record))
            self._open[task] = record
            # also when cancelled before it ever ran (pushed out at once): no finally then
            task.add_done_callback(functools.partial(self._closed, conn=conn))

    def _closed(self, task: asyncio.Task[None], conn: socket.socket) -> None:
        self._open.pop(task, None)
        conn.close()

    def _admit(self) -> bool:
        """Make room for a new connection: push out the oldest one still sending its request;
        refuse the new one only when every open connection is being answered."""
        if len(self._open) < MAX_CONNECTIONS:
            return True
        idle = next((task for task, c in self._open.items() if not c.in_flight), None)
        if idle is None:
            return False
        self._open.pop(idle)
        idle.cancel()
        return True

    async def _client(self, conn: socket.socket, record: _Connection) -> None:
        # No reference to its own task here: a cancelled task's traceback keeps this frame,
        # and a cycle through it would keep each connection's TLS buffers until a full GC.
        loop = asyncio.get_running_loop()
        transport: Any = None  # an asyncio.Transport once the connection is set up
        try:
            reader = asyncio.StreamReader(limit=MAX_HEADER_BYTES, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            tls = self._tls.context() if self._tls is not None else None
            async with asyncio.timeout(HEADER_TIMEOUT_SECONDS):
                # TLS state (asyncio keeps a 256 KiB buffer per TLS connection) only for a
                # client that sends something: an idle connection stays a bare socket
                await _readable(loop, conn)
                handshake = {"ssl_handshake_timeout": HEADER_TIMEOUT_SECONDS} if tls else {}
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol, conn, ssl=tls, **handshake
                )
                writer = asyncio.StreamWriter(transport, protocol, reader, loop)
                request = await self._read(reader)
            record.in_flight = True  # never pushed out for a newcomer
            response = await asyncio.wait_for(self._answer(*request), REQUEST_TIMEOUT_SECONDS)
            writer.write(_encode(response))
            writer.close()  # after what is buffered is sent (abort would drop it)
            await asyncio.wait_for(writer.wait_closed(), REQUEST_TIMEOUT_SECONDS)
        except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            log.debug("endpoint: connection dropped: %r", e)
        except (asyncio.LimitOverrunError, ValueError) as e:  # headers too long, or not HTTP
            log.debug("endpoint: bad request: %r", e)
            if transport is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write(_encode(_Response(400, b"bad request\n")))
        except Exception:  # a bug: say it, drop this connection, keep serving
            log.exception("endpoint: unexpected error")
        finally:
            if transport is not None:
                transport.abort()  # closed already, or a close still waiting on the peer
            conn.close()

    async def _read(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return method, target.split("?", 1)[0], headers

    async def _answer(self, method: str, path: str, headers: dict[str, str]) -> _Response:
        if path not in ("/metrics", "/healthz", "/readyz"):
            return _Response(404, b"not found\n")
        if method != "GET":
            return _Response(405, b"only GET\n")
        if path == "/healthz":
            healthy = self._heartbeats.healthy()
            return _Response(200 if healthy else 500, self._heartbeats.report().encode())
        if path == "/readyz":
            ok = self._ready()
            return _Response(200 if ok else 503, b"ok\n" if ok else b"not ready\n")
        loop = asyncio.get_running_loop()
        if self._secure:
            denied = await loop.run_in_executor(self._pool, self._authorize, headers)
            if denied is not None:
                return denied
        body = await loop.run_in_executor(self._pool, self._metrics.render)
        return _Response(200, body, prometheus_client.CONTENT_TYPE_LATEST)

    def _authorize(self, headers: dict[str, str]) -> _Response | None:
        if self._reviewer is None:
            message = b"no API server to review tokens: use --metrics-secure=false on 127.0.0.1\n"
            return _Response(503, message)
        try:
            verdict = self._reviewer.check(headers.get("authorization"), "/metrics")
        except kube_.KubeError as e:
            log.warning("/metrics: cannot review a token: %s", e)
            return _Response(503, b"cannot review the token now\n")
        if verdict.status != 200:
            log.info("/metrics: %d %s", verdict.status, verdict.reason)
            return _Response(verdict.status, f"{verdict.reason}\n".encode())
        return None


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


def _encode(response: _Response) -> bytes:
    head = (
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Connection: close\r\n"
    )
    if response.status == 401:
        head += 'WWW-Authenticate: Bearer realm="kucero"\r\n'
    return head.encode() + b"\r\n" + response.body


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    options: Options,
    metrics: metrics_.Metrics,
    ready: Callable[[], bool],
    heartbeats: health.Heartbeats,
    kube: Any,
) -> Endpoint:
    """Start the endpoint; ``OSError`` when the address cannot be bound or the certificate
    files cannot be read."""
    return Endpoint(options, metrics, ready, heartbeats, kube)
