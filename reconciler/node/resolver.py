"""DNS lookups for ``csrSigner.resolveDNSNames``, bounded in time.

``resolve(names)`` asks the host's resolver (``getaddrinfo``, as kubelet-csr-approver asks Go's)
for every name at once, each in a thread of its own, and returns what came back within
``TIMEOUT_SECONDS``: a name that failed or is still pending is left out, which the checks read
as "does not resolve" (denied, never approved). ``getaddrinfo`` cannot be cancelled, so a slow
lookup's thread finishes in the background (a daemon thread; the libc resolver's own timeouts
end it). Only names that passed every other check are ever looked up (``decide.csr`` asks for
them with a ``RESOLVE`` verdict), at most ``maxDNSNames`` per request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# The whole lookup of one request's names: kubelet-csr-approver allows one second; the
# resolver's first retry comes after 5 s (resolv.conf's default timeout), so 2 s covers one
# slow answer without letting a dead resolver hold a CSR worker for long.
TIMEOUT_SECONDS = 2.0

Lookup = Callable[..., list[tuple[Any, ...]]]


def resolve(
    names: Iterable[str], timeout: float = TIMEOUT_SECONDS, lookup: Lookup = socket.getaddrinfo
) -> Mapping[str, tuple[str, ...]]:
    """``{name: (address, ...)}`` for the names that resolved within ``timeout`` seconds."""
    results: dict[str, tuple[str, ...]] = {}
    lock = threading.Lock()

    def one(name: str) -> None:
        try:
            answers = lookup(name, None, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        addresses = tuple(dict.fromkeys(str(a[4][0]) for a in answers))
        with lock:
            results[name] = addresses

    threads = [
        threading.Thread(target=one, args=(n,), name=f"resolve-{n}", daemon=True)
        for n in dict.fromkeys(n.lower() for n in names)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        return dict(results)
