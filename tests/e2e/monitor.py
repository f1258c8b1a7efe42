"""Every control-plane component's health, polled side by side during a rotation.

A thread per component asks its health endpoint on the node every ``POLL_SECONDS`` and
records each change (up or down, with the time): the timeline of a rotation. From it come
each component's downtime and whether two were ever down at once. The endpoints are the
ones kubeadm opens to anonymous callers: kube-apiserver ``/livez``, kube-controller-manager
and kube-scheduler ``/healthz`` (self-signed, not verified: this checks liveness, the
certificates are checked separately), etcd's ``/health`` on its client port 2379 (what the
API server uses; it closes as soon as etcd shuts down, while the plain-HTTP 2381 answers
until the process ends), with the healthcheck client certificate read at each poll.
"""

from __future__ import annotations

import dataclasses
import ssl
import threading
import time
import urllib.request

POLL_SECONDS = 0.25
TIMEOUT_SECONDS = 1.0
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")


def endpoints(address: str) -> dict[str, str]:
    """Each component's health URL; ``address`` is where the e2e node binds etcd's client
    port, kube-controller-manager and kube-scheduler (``tests/e2e/kubeadm.py``)."""
    return {
        "kube-apiserver": "https://127.0.0.1:6443/livez",
        "kube-controller-manager": f"https://{address}:10257/healthz",
        "kube-scheduler": f"https://{address}:10259/healthz",
        "etcd": f"https://{address}:2379/health",
    }


ETCD_CLIENT = ("/etc/kubernetes/pki/etcd/healthcheck-client.crt",
               "/etc/kubernetes/pki/etcd/healthcheck-client.key")  # fmt: skip


def healthy(url: str) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        if ":2379/" in url:
            ctx.load_cert_chain(*ETCD_CLIENT)
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=ctx) as r:
            return bool(r.status == 200)
    except (OSError, ValueError):
        return False


@dataclasses.dataclass
class Change:
    t: float  # seconds since the monitor started
    component: str
    up: bool


# The kubelet's own health endpoint (kubeadm: healthzBindAddress 127.0.0.1, plain HTTP).
KUBELET_HEALTHZ = "http://127.0.0.1:10248/healthz"


class Monitor:
    def __init__(self, address: str, with_kubelet: bool = False) -> None:
        self.endpoints = endpoints(address)
        if with_kubelet:
            self.endpoints["kubelet"] = KUBELET_HEALTHZ
        self.start = time.monotonic()
        self.wall_start = time.time()
        self.changes: list[Change] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._poll, args=(c, u), daemon=True)
            for c, u in self.endpoints.items()
        ]

    def __enter__(self) -> Monitor:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop.is_set():
            return  # stopped already (idempotent)
        self._stop.set()
        for t in self._threads:
            t.join()
        self.end = time.monotonic() - self.start

    def _poll(self, component: str, url: str) -> None:
        last: bool | None = None
        while not self._stop.is_set():
            now = healthy(url)
            if now != last:
                with self._lock:
                    self.changes.append(Change(time.monotonic() - self.start, component, now))
                last = now
            self._stop.wait(POLL_SECONDS)

    def outages(self) -> dict[str, list[tuple[float, float]]]:
        """Each component's down intervals (start, end), after it was first seen up."""
        out: dict[str, list[tuple[float, float]]] = {c: [] for c in self.endpoints}
        down_since: dict[str, float] = {}
        seen_up: set[str] = set()
        for ch in sorted(self.changes, key=lambda c: c.t):
            if ch.up:
                seen_up.add(ch.component)
                if ch.component in down_since:
                    out[ch.component].append((down_since.pop(ch.component), ch.t))
            elif ch.component in seen_up:
                down_since[ch.component] = ch.t
        for c, t in down_since.items():
            out[c].append((t, getattr(self, "end", time.monotonic() - self.start)))
        return out

    def overlaps(self, depends: dict[str, str] | None = None, slack: float = 0.0) -> list[str]:
        """Every moment two components were down together, said in words; ``depends`` maps a
        component to the one it cannot be up without (kube-apiserver: etcd), whose outage
        it shares by design; outages overlapping by less than ``slack`` seconds touch."""
        found = []
        depends = depends or {}
        spans = [(c, a, b) for c, ivs in self.outages().items() for a, b in ivs]
        for i, (c1, a1, b1) in enumerate(spans):
            for c2, a2, b2 in spans[i + 1 :]:
                if depends.get(c1) == c2 or depends.get(c2) == c1:
                    continue
                if c1 != c2 and min(b1, b2) - max(a1, a2) > slack:
                    found.append(f"{c1} down {a1:.1f}-{b1:.1f}s and {c2} down {a2:.1f}-{b2:.1f}s")
        return found

    def timeline(self) -> list[str]:
        return [
            f"{c.t:7.2f}s {c.component} {'up' if c.up else 'DOWN'}"
            for c in sorted(self.changes, key=lambda c: c.t)
        ]
