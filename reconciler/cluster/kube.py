"""The one door to the Kubernetes API server: plain JSON dicts in and out, our own errors.

The official client is used for what it does well, configuration (kubeconfig, in-cluster) and
TLS, through a urllib3 pool built by its ``RESTClientObject``; its generated models are not used
(strict pydantic classes cost memory and start-up and reject what the server may add, see
docs/pitfalls.md). The client is imported inside ``connect`` so the offline commands never load it.

Edge cases handled here rather than in every caller:

- errors become ``NotFound``, ``Conflict``, ``Gone``, ``Forbidden``, ``Unauthorized``,
  ``Invalid``, ``TooManyRequests``, ``Unavailable`` (5xx, refused, reset, timed out), raised
  ``from`` the original, with the API's own message;
- only ``Unavailable`` and ``TooManyRequests`` are retried (tenacity, the process's back-off
  from ``retrying``, bounded); a 4xx never is;
- a bound service-account token file (in-cluster, or a kubeconfig ``tokenFile``) is re-read
  whenever the file changes (a stat per request) and once more after a 401, so a process keeps
  working across kubelet token rotation; the client's own in-cluster refresh waits a minute;
- the in-cluster CA bundle (``ca.crt``) is read again when the file changes (``light``): after a
  CA renewal the kubelet swaps in the renewed certificate, and the old one stops being trusted
  at its end;
- watches ask the server for a long timeout and read with a client-side timeout slightly above
  it, so a silent dead connection is noticed; ``watch_forever`` (module ``watching``) re-lists on
  410 and reconnects with back-off;
- ``within(budget)`` is a view of the same connection whose every request must end within the
  seconds ``budget`` says are left (leader election: the renew deadline; the leader's work: its
  leadership): each attempt's connect and read timeouts are cut to the time left, no retry
  starts past it, and a request with no time left is never sent (``Fenced``). The budget is
  asked again before every attempt, so a leadership revoked meanwhile stops a retry too.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import tenacity
import urllib3
import yaml

from reconciler import retrying

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
USER_AGENT = "kucero"
# A normal request answers in milliseconds; 5 s to connect and 30 s to answer mean trouble.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 30.0
# The server ends a watch after timeoutSeconds; reading waits this much longer before it
# declares a silent connection dead (a restarted server closes the socket, so this only
# matters for a connection lost without a FIN).
WATCH_READ_MARGIN_SECONDS = 30.0
# Items per list request: client-go's pager asks for 500 (k8s.io/client-go/tools/pager).
LIST_PAGE_SIZE = 500
# Transient failures are retried with the process's back-off (``retrying``): 0.2, 0.4, 0.8 ...
# seconds (jittered to 50-100 %), capped at 5 s, at most 6 attempts and 30 s in all; then the
# caller decides.
RETRY_ATTEMPTS = 6
RETRY_BACKOFF = retrying.backoff(first=0.2, cap=5.0)
RETRY_MAX_TOTAL_SECONDS = 30.0

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


class KubeError(Exception):
    """An API request failed; ``status`` is the HTTP status (0: no answer), ``reason`` the
    API's reason (``AlreadyExists``, ``Conflict``, ...) and the message the API's own."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    """409: the object exists already (``reason == "AlreadyExists"``) or changed since read."""


class Gone(KubeError):
    """410: a watch's resourceVersion is too old; list again."""


class Forbidden(KubeError):
    pass


class Unauthorized(KubeError):
    pass


class Invalid(KubeError):
    pass


class TooManyRequests(KubeError):
    pass


class Unavailable(KubeError):
    """5xx, or no answer at all (refused, reset, timed out)."""


class Fenced(KubeError):
    """Not sent: the view's time budget had run out (a leader whose leadership may have passed
    to another process, a renewal past its deadline). Never retried."""


# Seconds a ``within`` view may still spend on a request; <= 0: send nothing more.
Budget = Callable[[], float]
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


_BY_STATUS: dict[int, type[KubeError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}
TRANSIENT = (Unavailable, TooManyRequests)


def error_for(status: int, body: bytes | Mapping[str, Any], what: str) -> KubeError:
    """The error for an HTTP ``status`` with the API's Status object (or raw ``body``)."""
    status_obj: Any = body
    if isinstance(body, bytes):
        try:
            status_obj = json.loads(body)
        except ValueError:
            status_obj = {"message": body.decode(errors="replace").strip()[:300]}
    if not isinstance(status_obj, Mapping):
        status_obj = {}
    message = status_obj.get("message") or f"HTTP {status}"
    reason = status_obj.get("reason") or ""
    cls = _BY_STATUS.get(status) or (Unavailable if status >= 500 else KubeError)
    return cls(f"{what}: {message}", status, reason)


class WatchEvent(NamedTuple):
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    obj: dict[str, Any]


def file_stamp(path: str) -> tuple[int, int, int, int]:
    """What changes when a file is replaced or rewritten (``os.stat`` follows the kubelet's
    ``..data`` symlinks, so a swapped projected volume shows a new inode)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class _TokenFile:
    """A bearer token read from a file, re-read when the file changes (kubelet rotates bound
    service-account tokens by swapping a symlink, so the stat sees a new inode)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int, int] | None = None
        self._token = ""
        self._lock = threading.Lock()

    def header(self) -> str:
        stamp = file_stamp(self.path)
        with self._lock:
            if stamp != self._stamp:
                with open(self.path, encoding="utf-8") as f:
                    self._token = f.read().strip()
                self._stamp = stamp
            return f"Bearer {self._token}"

    def reread(self) -> bool:
        """Read the file again; True if it now holds another token than the one last sent."""
        with self._lock:
            before, self._stamp = self._token, None
        return self.header() != f"Bearer {before}"


class Kube:
    """A connection to one API server. Thread-safe; make one per process and share it."""

    def __init__(
        self,
        host: str,
        pool: Any,
        auth: Any,
        token_file: _TokenFile | None,
        current_pool: Callable[[], Any] | None = None,
    ) -> None:
        """``current_pool``: when the CA bundle is a file that may change under the process
        (in-cluster ``ca.crt``: ``light``), the pool for what it holds now, asked per request."""
        self.host = host.rstrip("/")
        self._pool = pool
        self._current_pool = current_pool
        self._auth = auth  # () -> Authorization header value or None
        self._token_file = token_file
        self.retry_attempts = RETRY_ATTEMPTS
        self._budget: Budget | None = None
        self._write_margin = 0.0
        self._budget_name = ""

    def within(self, budget: Budget, what: str, write_margin: float = 0.0) -> Kube:
        """This connection, every request of which ends within ``budget()`` seconds (asked
        again before each attempt); a write needs ``write_margin`` seconds more than that to
        be sent at all. ``what`` names the budget in errors ("the leadership"). Watches are
        not bounded: their caller stops them."""
        view = copy.copy(self)
        view._budget, view._budget_name, view._write_margin = budget, what, write_margin
        return view

    def _left(self, method: str, what: str) -> float | None:
        """Seconds this request may take (None: no budget); ``Fenced`` when none are left."""
        if self._budget is None:
            return None
        left = self._budget() - (self._write_margin if method in WRITES else 0.0)
        if left <= 0:
            raise Fenced(f"{what}: not sent: {self._budget_name} has run out")
        return left

    # --- verbs -------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return self._call("GET", path, params)

    def list(
        self, path: str, params: Mapping[str, str] | None = None, page_size: int = LIST_PAGE_SIZE
    ) -> dict[str, Any]:
        """The whole collection, fetched ``page_size`` items a request (``limit`` and
        ``continue``), so a 5,000-Node cluster is never one response the API server builds at
        once. The pages are one snapshot: the result carries the first page's
        ``resourceVersion``, to watch from. A continue token that expired meanwhile (410: the
        snapshot was compacted) is answered as client-go's pager does, by one list without
        ``limit``."""
        paged = {**(params or {}), "limit": str(page_size)}
        first = self._call("GET", path, paged)
        items = list(first.get("items") or [])
        token = (first.get("metadata") or {}).get("continue")
        while token:
            try:
                page = self._call("GET", path, {**paged, "continue": token})
            except Gone:
                log.info("list %s: continue token expired; listing it whole", path)
                return self._call("GET", path, params)
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
        metadata = {k: v for k, v in (first.get("metadata") or {}).items() if k != "continue"}
        return {**first, "metadata": metadata, "items": items}

    def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST; a retried create whose first attempt landed ends in ``Conflict``."""
        return self._call("POST", path, None, body)

    def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT; with ``metadata.resourceVersion`` set, a concurrent change is ``Conflict``."""
        return self._call("PUT", path, None, body)

    def patch(self, path: str, body: Any, patch_type: str = "merge") -> dict[str, Any]:
        return self._call("PATCH", path, None, body, PATCH_TYPES[patch_type])

    def delete(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._call("DELETE", path, None, body)

    def watch(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        resource_version: str | None = None,
        timeout_seconds: int = 1800,
        on_response: Any = None,
    ) -> Iterator[WatchEvent]:
        """Events of one watch request until the server ends it (after ``timeout_seconds``).

        Raises ``Gone`` when ``resource_version`` is too old (list again), ``Unavailable`` when
        the connection breaks. ``on_response(resp)`` receives the open response so another
        thread can ``shutdown()`` it to interrupt a blocked read.
        """
        query = {**(params or {}), "watch": "true", "allowWatchBookmarks": "true"}
        query["timeoutSeconds"] = str(timeout_seconds)
        if resource_version:
            query["resourceVersion"] = resource_version
        timeout = urllib3.Timeout(
            connect=CONNECT_TIMEOUT_SECONDS, read=timeout_seconds + WATCH_READ_MARGIN_SECONDS
        )
        what = f"watch {path}"
        resp = self._send("GET", path, query, None, None, timeout, stream=True)
        if on_response is not None:
            on_response(resp)
        try:
            buffer = b""
            try:
                for chunk in resp.stream(65536):
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield _event(line, what)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                raise Unavailable(f"{what}: connection lost: {e}") from e
            if buffer.strip():
                yield _event(buffer, what)
        finally:
            resp.close()
            resp.release_conn()

    def watch_forever(
        self,
        path: str,
        params: Mapping[str, str] | None,
        on_event: Any,
        stop: threading.Event,
        on_list: Any = None,
        on_error: Any = None,
        on_alive: Any = None,
    ) -> None:
        """List, then watch from the list's resourceVersion, until ``stop`` is set; see
        ``watching.watch_forever``."""
        from reconciler.cluster import watching

        watching.watch_forever(
            self, path, params, on_event, stop, on_list, on_error=on_error, on_alive=on_alive
        )

    @property
    def pool(self) -> Any:
        """The urllib3 pool requests go through now."""
        return self._current_pool() if self._current_pool is not None else self._pool

    def close(self) -> None:
        self.pool.clear()

    # --- plumbing ------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        what = f"{method} {path}"
        left = self._left(method, what)
        stop = tenacity.stop_after_attempt(self.retry_attempts) | tenacity.stop_after_delay(
            RETRY_MAX_TOTAL_SECONDS
        )
        if left is not None:  # no back-off sleep that would end past the budget
            stop = stop | tenacity.stop_before_delay(left)
        attempts = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TRANSIENT),
            wait=RETRY_BACKOFF,
            stop=stop,
            reraise=True,
            before_sleep=lambda state: log.info(
                "retrying %s %s in %.1fs after: %s",
                method,
                path,
                retrying.next_wait(state),
                retrying.failure(state),
            ),
        )
        for attempt in attempts:
            with attempt:
                left = self._left(method, what)
                if left is not None and method in WRITES:
                    # the fault tests read these lines: no write after its budget ran out
                    log.debug("%s sent with %.3fs of %s left", what, left, self._budget_name)
                timeout = _timeout(left)
                resp = self._send(method, path, params, body, content_type, timeout)
                result: dict[str, Any] = json.loads(resp.data) if resp.data else {}
                return result
        raise AssertionError("unreachable")

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Any,
        content_type: str | None,
        timeout: urllib3.Timeout,
        stream: bool = False,
    ) -> Any:
        url = self.host + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        what = f"{method} {path}"
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        for fresh_token in (False, True):
            headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
            if (auth := self._auth()) is not None:
                headers["Authorization"] = auth
            if data is not None and content_type:
                headers["Content-Type"] = content_type
            try:
                resp = self.pool.request(
                    method,
                    url,
                    body=data,
                    headers=headers,
                    timeout=timeout,
                    preload_content=not stream,
                    # one quiet retry for a pooled keep-alive connection the server closed
                    retries=urllib3.Retry(total=1, read=0, redirect=0, raise_on_status=False),
                )
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise Unavailable(f"{what}: no answer from {self.host}: {e}") from e
            if resp.status < 400:
                return resp
            raw = resp.read() if stream else resp.data
            resp.release_conn()
            error = error_for(resp.status, raw, what)
            rotated = isinstance(error, Unauthorized) and self._token_file and not fresh_token
            if rotated and self._token_file and self._token_file.reread():
                continue  # the token file changed under us: retry once with the new token
            raise error
        raise AssertionError("unreachable")


def _timeout(left: float | None) -> urllib3.Timeout:
    """The usual timeouts, cut to ``left`` seconds for the whole attempt when bounded."""
    if left is None:
        return urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS)
    return urllib3.Timeout(
        total=left, connect=min(CONNECT_TIMEOUT_SECONDS, left), read=min(READ_TIMEOUT_SECONDS, left)
    )


def _event(line: bytes, what: str) -> WatchEvent:
    event = json.loads(line)
    kind, obj = event.get("type", ""), event.get("object") or {}
    if kind == "ERROR":
        raise error_for(int(obj.get("code") or 500), obj, what)
    return WatchEvent(kind, obj)


def connect(
    kubeconfig: str | None = None,
    environ: Mapping[str, str] | None = None,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> Kube:
    """``kubeconfig`` if given, else in-cluster (service host env and token file), else
    ``$KUBECONFIG`` / ``~/.kube/config``. Raises ``KubeError`` when none is usable."""
    from reconciler.cluster import light

    environ = os.environ if environ is None else environ
    try:  # the common shapes without the client library (15 MiB per node daemon)
        if (made := light.connect(kubeconfig, environ, service_account_dir)) is not None:
            return made
    except (OSError, ValueError, KeyError, TypeError, ssl.SSLError, yaml.YAMLError) as e:
        raise KubeError(f"no usable Kubernetes configuration: {e}") from e
    from kubernetes import client, config  # lazily: ~45 MiB, offline commands never pay it

    # In-cluster is always light's; what reaches here is a kubeconfig light cannot read.
    configuration = client.Configuration()
    token_file: _TokenFile | None = None
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
        if path := _token_file_of(kubeconfig or environ.get("KUBECONFIG")):
            token_file = _TokenFile(path)
    except (config.ConfigException, OSError, KeyError, yaml.YAMLError) as e:
        raise KubeError(f"no usable Kubernetes configuration: {e}") from e
    configuration.retries = False
    pool = client.rest.RESTClientObject(configuration).pool_manager

    def auth() -> str | None:
        if token_file is not None:
            return token_file.header()
        value = configuration.get_api_key_with_prefix("BearerToken") or None
        if value and not value.lower().startswith("bearer "):
            value = f"Bearer {value}"
        return value

    return Kube(configuration.host, pool, auth, token_file)


def _token_file_of(kubeconfig: str | None) -> str | None:
    """The current user's ``tokenFile`` (kubectl honours it; the Python client does not)."""
    path = os.path.expanduser(kubeconfig or "~/.kube/config").split(os.pathsep)[0]
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    contexts = {c["name"]: c.get("context") or {} for c in doc.get("contexts") or []}
    user_name = contexts.get(doc.get("current-context"), {}).get("user")
    for user in doc.get("users") or []:
        if user.get("name") == user_name:
            token = (user.get("user") or {}).get("tokenFile")
            if token and not os.path.isabs(token):
                token = os.path.join(os.path.dirname(os.path.abspath(path)), token)
            return token
    return None
