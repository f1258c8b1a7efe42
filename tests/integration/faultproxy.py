"""A TCP proxy on loopback between one kucero process and the real API server, whose faults
the test switches at will:

- ``forward``: bytes pass both ways as they come;
- ``blackhole``: connections are accepted (new ones too) and nothing is forwarded or answered
  any more, in either direction; what arrives is read and dropped (a silent network, an API
  server that accepts and never answers). Connections black-holed stay dead after the fault;
- ``delay``: every chunk is forwarded ``delay`` seconds after it arrived, in order, both ways
  (a congested link). A chunk already read is delivered even if its sender has given up;
- ``reset``: every open connection is reset (RST), and new ones are reset on accept.

TLS passes through untouched (the proxy never sees plain text). The kubeconfig of the process
behind it names the proxy's port; the API server's certificate has ``127.0.0.1`` among its
names, so verification still holds. ``log`` records each mode change with its monotonic time.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

CHUNK = 65536


class FaultProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "forward"
        self.delay = 0.0
        self.log: list[tuple[float, str]] = [(time.monotonic(), "forward")]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def set(self, mode: str, delay: float = 0.0) -> None:
        assert mode in ("forward", "blackhole", "delay", "reset"), mode
        with self._lock:
            self.mode, self.delay = mode, delay
            self.log.append((time.monotonic(), mode))
            doomed = list(self._open) if mode == "reset" else []
            self._open.difference_update(doomed)
        for sock in doomed:
            _reset(sock)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            doomed, self._open = list(self._open), set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def kubeconfig(self, original: Path, out: Path) -> Path:
        """``original`` with its server pointed at this proxy."""
        doc = yaml.safe_load(original.read_text())
        for entry in doc["clusters"]:
            entry["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        out.write_text(yaml.safe_dump(doc))
        out.chmod(0o600)
        return out

    # --- plumbing --------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
            if mode == "reset":
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            ends = threading.Semaphore(0)  # each direction's delivery releases it once
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, ends), daemon=True).start()
            threading.Thread(
                target=self._close_after, args=(ends, client, upstream), daemon=True
            ).start()

    def _close_after(
        self, ends: threading.Semaphore, client: socket.socket, upstream: socket.socket
    ) -> None:
        """Close both sockets once both directions are done."""
        ends.acquire()
        ends.acquire()
        with self._lock:
            self._open.difference_update((client, upstream))
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.close()

    def _pump(self, src: socket.socket, dst: socket.socket, ends: threading.Semaphore) -> None:
        """Copy ``src`` to ``dst`` as the mode says; a connection that was ever black-holed
        stays black-holed."""
        queue: collections.deque[tuple[float, bytes]] = collections.deque()
        ready = threading.Condition()
        done = threading.Event()
        threading.Thread(
            target=self._deliver, args=(queue, ready, done, dst, ends), daemon=True
        ).start()
        dead = False
        try:
            while True:
                try:
                    data = src.recv(CHUNK)
                except OSError:
                    break
                if not data:
                    break
                with self._lock:
                    mode, delay = self.mode, self.delay
                dead = dead or mode == "blackhole"
                if dead:
                    continue  # read and dropped: the other side hears nothing
                due = time.monotonic() + (delay if mode == "delay" else 0.0)
                with ready:
                    queue.append((due, data))
                    ready.notify()
        finally:
            done.set()
            with ready:
                ready.notify()

    def _deliver(
        self,
        queue: collections.deque[tuple[float, bytes]],
        ready: threading.Condition,
        done: threading.Event,
        dst: socket.socket,
        ends: threading.Semaphore,
    ) -> None:
        while True:
            with ready:
                while not queue and not done.is_set():
                    ready.wait(0.5)
                if not queue:
                    break
                due, data = queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with ready:
                queue.popleft()
            try:
                dst.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        ends.release()


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets RST, not FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@contextlib.contextmanager
def running(server: str) -> Iterator[FaultProxy]:
    """A proxy in front of ``server`` (``https://127.0.0.1:PORT``) for a ``with`` block."""
    host, port = server.removeprefix("https://").rsplit(":", 1)
    proxy = FaultProxy((host, int(port)))
    try:
        yield proxy
    finally:
        proxy.close()
