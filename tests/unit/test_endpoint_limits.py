"""The endpoint stays bounded whatever its clients do: a thousand idle connections make no
threads and little memory, are cut after the header timeout, and the probes are still answered
at once; a slow or oversized request is cut; liveness follows the heartbeats."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from reconciler import metrics
from reconciler.run import endpoint, health

INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE
IDLE_CONNECTIONS = 1000


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def get(port: int, path: str, timeout: float = 5) -> tuple[int, str]:
    try:
        url = f"https://127.0.0.1:{port}{path}"
        with urllib.request.urlopen(url, context=INSECURE, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def beats() -> health.Heartbeats:
    return health.Heartbeats()


@pytest.fixture
def served(beats: health.Heartbeats) -> Iterator[endpoint.Endpoint]:
    options = endpoint.Options(("127.0.0.1", 0), secure=True)
    made = endpoint.serve(options, metrics.Metrics(), lambda: True, beats, None)
    yield made
    made.close()


# Opens 1,000 connections, three times over, in another process (its sockets must not count
# in this one's memory): bare TCP ("idle") or a TLS handshake begun and left hanging ("hello").
CLIENT = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
port, mode, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for _ in range(3):
    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        if mode == "hello":
            s.setblocking(False)
            s = ctx.wrap_socket(s, do_handshake_on_connect=False)
            try:
                s.do_handshake()
            except (ssl.SSLWantReadError, OSError):
                pass
        held.append(s)
    print("held", flush=True)
    sys.stdin.readline()
    for s in held:
        s.close()
"""


@pytest.mark.parametrize("mode", ["idle", "hello"], ids=["bare-tcp", "tls-hello-then-silence"])
def test_thousands_of_hanging_connections_make_no_threads_and_the_probe_still_answers(
    served: endpoint.Endpoint, mode: str
) -> None:
    get(served.port, "/healthz")  # the worker threads and TLS are warm
    threads, rss = threading.active_count(), rss_kib()
    argv = [sys.executable, "-c", CLIENT, str(served.port), mode, str(IDLE_CONNECTIONS)]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as client:
        assert client.stdin is not None and client.stdout is not None
        try:
            for _ in range(3):
                assert client.stdout.readline() == "held\n"
                started = time.monotonic()
                healthz = get(served.port, "/healthz")
                assert healthz == (200, "[+]ping ok\nhealthz check passed\n")
                answered_in = time.monotonic() - started
                assert answered_in < 2.0, answered_in
                assert served.connections <= endpoint.MAX_CONNECTIONS
                assert threading.active_count() <= threads  # before: a thread per connection
                client.stdin.write("\n")
                client.stdin.flush()
            assert client.wait(30) == 0
        finally:
            client.kill()
    grown_mib = (rss_kib() - rss) / 1024
    assert grown_mib < 32, f"{grown_mib:.1f} MiB after {3 * IDLE_CONNECTIONS} connections"


def test_an_idle_connection_is_cut_after_the_header_timeout(
    served: endpoint.Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoint, "HEADER_TIMEOUT_SECONDS", 0.5)
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as conn:
        conn.settimeout(5)
        started = time.monotonic()
        assert conn.recv(1) == b""  # closed by the server, nothing sent
        assert time.monotonic() - started < 3


def test_a_request_sent_a_byte_at_a_time_is_cut_at_the_header_timeout(
    served: endpoint.Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoint, "HEADER_TIMEOUT_SECONDS", 1.0)
    raw = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    with INSECURE.wrap_socket(raw) as conn:
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                conn.sendall(bytes([byte]))
                time.sleep(0.05)
        assert time.monotonic() - started < 4
        with contextlib.suppress(OSError):
            assert conn.recv(100) == b""


def test_oversized_headers_are_refused(served: endpoint.Endpoint) -> None:
    raw = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    with INSECURE.wrap_socket(raw) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := conn.recv(4096):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ") or answer == b"", answer[:100]


def test_healthz_names_the_loop_that_stopped(
    served: endpoint.Endpoint, beats: health.Heartbeats
) -> None:
    beats.beat("controller-work", 60)
    beats.beat("node-pass", 0.2)
    time.sleep(0.5)
    status, body = get(served.port, "/healthz")
    assert status == 500
    assert "[+]controller-work ok" in body and "[-]node-pass failed: no progress for" in body
    beats.retire("node-pass")  # e.g. a leader's term ended: not expected any more
    assert get(served.port, "/healthz")[0] == 200


def test_only_get_on_known_paths(served: endpoint.Endpoint) -> None:
    assert get(served.port, "/nope")[0] == 404
    request = urllib.request.Request(f"https://127.0.0.1:{served.port}/healthz", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, data=b"x", context=INSECURE, timeout=5)
    refused.value.close()
    assert refused.value.code == 405


def test_secure_metrics_without_an_api_server_are_refused_not_served(
    served: endpoint.Endpoint,
) -> None:
    status, body = get(served.port, "/metrics")
    assert status == 503 and "kucero_" not in body


def test_heartbeats_use_their_own_deadlines() -> None:
    now = [100.0]
    beats = health.Heartbeats(clock=lambda: now[0])
    assert beats.healthy() and beats.check() == []  # nothing expected yet
    beats.beat("a", 10)
    now[0] += 9.9
    assert beats.healthy()
    now[0] += 0.2
    assert beats.check() == [("a", "no progress for 10s (expected within 10s)")]
