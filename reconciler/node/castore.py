"""The CA that signs kubelet serving certificates, read from the host and reloaded on change.

``CAStore.get(cert_path, key_path)`` returns the parsed CA certificate and key (host paths,
under ``--host-root``), cached. ``watch(stop)`` runs ``watchfiles`` over the directories of
every CA asked for so far and drops the cache on any change there, so a CA rotated on disk
(kubeadm, an operator) is used for the next request. The events of a directory watch do not
always name the file (atomic renames, ConfigMap-style ``..data`` swaps, see docs/pitfalls.md), so
any event reloads everything, and entries also expire after ``MAX_AGE_SECONDS`` in case an
event was missed.

The key's bytes are never logged or put into an error message: errors say which path failed
and why (absent, unreadable, not a key), nothing more.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import threading
import time

import watchfiles
from cryptography import x509

from reconciler.decide import pki
from reconciler.node import host as host_

log = logging.getLogger(__name__)

# Re-read the CA files at least this often even without a file event (a missed inotify event,
# a bind mount swapped under us): a minute of staleness is harmless, a day is not.
MAX_AGE_SECONDS = 60.0
# How often the watcher wakes without events to pick up directories of newly configured CAs.
WATCH_WAKE_MS = 2000


class CAError(Exception):
    """The CA cannot be loaded; the message names the path, never the key's content."""


@dataclasses.dataclass(frozen=True)
class CA:
    cert: x509.Certificate
    key: pki.PrivateKey
    loaded_at: float


class CAStore:
    """Thread-safe cache of CAs by (certificate path, key path)."""

    def __init__(self, host: host_.Host) -> None:
        self.host = host
        self._cache: dict[tuple[str, str], CA] = {}
        self._dirs: set[str] = set()
        self._lock = threading.Lock()
        self.reloads = 0  # how many times file events dropped the cache (tests read it)

    def get(self, cert_path: str, key_path: str) -> CA:
        now = time.monotonic()
        with self._lock:
            self._dirs.update({posixpath.dirname(cert_path), posixpath.dirname(key_path)})
            cached = self._cache.get((cert_path, key_path))
            if cached and now - cached.loaded_at < MAX_AGE_SECONDS:
                return cached
        ca = self._load(cert_path, key_path, now)
        with self._lock:
            self._cache[(cert_path, key_path)] = ca
        return ca

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()
            self.reloads += 1

    def watch(self, stop: threading.Event) -> None:
        """Drop the cache whenever a file changes in a CA directory, until ``stop``."""
        while not stop.is_set():
            with self._lock:
                dirs = sorted(d for d in self._dirs if self.host.path(d).is_dir())
            if not dirs:
                stop.wait(WATCH_WAKE_MS / 1000)
                continue
            watched = [str(self.host.path(d)) for d in dirs]
            for changes in watchfiles.watch(
                *watched,
                stop_event=stop,
                rust_timeout=WATCH_WAKE_MS,
                yield_on_timeout=True,
                debounce=50,
                step=20,
                raise_interrupt=False,
            ):
                if changes:
                    log.info("CA files changed in %s: reloading", ", ".join(dirs))
                    self.invalidate()
                with self._lock:
                    if {d for d in self._dirs if self.host.path(d).is_dir()} != set(dirs):
                        break  # a CA in another directory was configured: watch it too

    def _load(self, cert_path: str, key_path: str, now: float) -> CA:
        try:
            cert_pem = self.host.read(cert_path)
            key_pem = self.host.read(key_path)
        except host_.HostError as e:
            raise CAError(f"cannot read the CA: {e}") from None
        if cert_pem is None:
            raise CAError(f"CA certificate {cert_path} not found")
        if key_pem is None:
            raise CAError(f"CA key {key_path} not found")
        try:
            cert = pki.load_cert(cert_pem)
        except pki.PKIError as e:
            raise CAError(f"CA certificate {cert_path}: {e}") from None
        try:
            key = pki.load_key(key_pem)
        except pki.PKIError:
            # the parser's message could quote the file; say only that it is not a key
            raise CAError(f"CA key {key_path} is not a usable private key") from None
        return CA(cert, key, now)
