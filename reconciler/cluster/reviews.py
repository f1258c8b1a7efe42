"""Who may read ``/metrics``: the API server decides, as for every Kubernetes component.

The contract of kube-rbac-proxy and of controller-runtime's secure metrics serving
(``filters.WithAuthenticationAndAuthorization``): the caller's bearer token is checked with a
``TokenReview`` (authentication), then the user it names is checked with a
``SubjectAccessReview`` for ``get`` on the non-resource URL (authorization). A Prometheus
ServiceAccount bound to a ClusterRole with ``nonResourceURLs: ["/metrics"], verbs: ["get"]``
may scrape; nobody else.

Answers are remembered for ``CACHE_SECONDS`` (the API server's own delegated authentication and
authorization cache their answers 10 s by default), keyed by a hash of the token, at most
``CACHE_MAX`` of them (oldest forgotten first), so a scrape every few seconds costs the API
server nothing and a flood of made-up tokens cannot grow memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

from reconciler.cluster import kube as kube_

CACHE_SECONDS = 10.0
CACHE_MAX = 256
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


@dataclasses.dataclass(frozen=True)
class Verdict:
    status: int  # 200 allowed, 401 not authenticated, 403 not authorized
    reason: str  # for the response body and the log; never the token


class Reviewer:
    """``check(authorization_header, path)`` -> Verdict. Raises ``KubeError`` when the API
    server cannot answer (the caller answers 503 and remembers nothing)."""

    def __init__(self, kube: kube_.Kube, clock: Callable[[], float] = time.monotonic) -> None:
        self._kube, self._clock = kube, clock
        self._cache: dict[tuple[str, str], tuple[float, Verdict]] = {}
        self._lock = threading.Lock()

    def check(self, authorization: str | None, path: str, verb: str = "get") -> Verdict:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Verdict(401, "a bearer token is required")
        key = (hashlib.sha256(token.encode()).hexdigest(), f"{verb} {path}")
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        verdict = self._review(token, path, verb)
        with self._lock:
            self._cache.pop(key, None)
            self._cache[key] = (now, verdict)
            while len(self._cache) > CACHE_MAX:
                del self._cache[next(iter(self._cache))]
        return verdict

    def _review(self, token: str, path: str, verb: str) -> Verdict:
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        status = self._kube.create(TOKEN_REVIEWS, review).get("status") or {}
        if not status.get("authenticated"):
            return Verdict(401, "the token is not valid")
        user: dict[str, Any] = status.get("user") or {}
        access = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user.get("username", ""),
                "uid": user.get("uid", ""),
                "groups": list(user.get("groups") or []),
                "extra": dict(user.get("extra") or {}),
                "nonResourceAttributes": {"path": path, "verb": verb},
            },
        }
        answer = self._kube.create(ACCESS_REVIEWS, access).get("status") or {}
        name = user.get("username", "?")
        if not answer.get("allowed"):
            return Verdict(403, f"{name} may not {verb} {path}")
        return Verdict(200, f"{name} may {verb} {path}")
