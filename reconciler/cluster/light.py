"""Client set-up without the ``kubernetes`` package, for the configurations a node meets.

Importing the official client costs about 15 MiB on top of everything else kucero loads (its
``__init__`` pulls in the whole generated client, docs/pitfalls.md), and an idle ``kucero
node`` runs on every node of a cluster. What that process needs from the client is only
configuration and TLS, so the two shapes it meets are read here with PyYAML and ``ssl``:

- in-cluster: ``KUBERNETES_SERVICE_HOST``/``_PORT``, the service-account ``token`` (re-read when
  it changes, as ``kube._TokenFile`` does) and ``ca.crt`` (re-read when it changes too:
  ``CABundle``);
- a kubeconfig whose cluster has ``server`` and ``certificate-authority(-data)`` (or
  ``insecure-skip-tls-verify``) and whose user has a client certificate and key (files or
  ``-data``), a ``token`` or a ``tokenFile``.

Anything else (exec plugins, auth providers, proxies, ``tls-server-name``, several kubeconfig
files in ``$KUBECONFIG``) returns None and ``kube.connect`` falls back to the client library,
which knows them all. Embedded client keys are written to a private temporary directory only
for the moment ``ssl`` loads them, then removed.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import ssl
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

import urllib3
import yaml

from reconciler.cluster import kube as kube_

log = logging.getLogger(__name__)

_CLUSTER_KEYS = {"server", "certificate-authority", "certificate-authority-data"}
_CLUSTER_KEYS |= {"insecure-skip-tls-verify", "extensions"}
_USER_KEYS = {"client-certificate", "client-key", "client-certificate-data", "client-key-data"}
_USER_KEYS |= {"token", "tokenFile", "extensions"}


def connect(
    kubeconfig: str | None, environ: Mapping[str, str], service_account_dir: str
) -> kube_.Kube | None:
    """A ``Kube`` for the common shapes, or None when the client library must do it."""
    token_path = os.path.join(service_account_dir, "token")
    if kubeconfig is None and environ.get("KUBERNETES_SERVICE_HOST") and os.path.isfile(token_path):
        host, port = (
            environ["KUBERNETES_SERVICE_HOST"],
            environ.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        bundle = CABundle(os.path.join(service_account_dir, "ca.crt"))
        sa_token = kube_._TokenFile(token_path)
        server = f"https://{f'[{host}]' if ':' in host else host}:{port}"
        return kube_.Kube(server, bundle.pool(), sa_token.header, sa_token, bundle.pool)
    path = kubeconfig or environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if os.pathsep in path:
        return None  # several files to merge: the client library's job
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    base = os.path.dirname(os.path.abspath(path))
    context = _named(doc, "contexts", doc.get("current-context"), "context")
    cluster = _named(doc, "clusters", context.get("cluster"), "cluster")
    user = _named(doc, "users", context.get("user"), "user")
    if not cluster.get("server") or set(cluster) - _CLUSTER_KEYS or set(user) - _USER_KEYS:
        return None
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no system CAs: the cluster's CA only
    if cluster.get("insecure-skip-tls-verify"):
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    elif data := cluster.get("certificate-authority-data"):
        tls.load_verify_locations(cadata=base64.b64decode(data).decode())
    elif ca := cluster.get("certificate-authority"):
        tls.load_verify_locations(cafile=os.path.join(base, ca))
    _client_certificate(tls, user, base)
    token_file: kube_._TokenFile | None = None
    if user.get("tokenFile"):
        token_file = kube_._TokenFile(os.path.join(base, user["tokenFile"]))
    token = user.get("token")

    def auth() -> str | None:
        if token_file is not None:
            return token_file.header()
        return f"Bearer {token}" if token else None

    return kube_.Kube(str(cluster["server"]), _pool(tls), auth, token_file)


class CABundle:
    """The API server's CA bundle read from a file, and the connection pool that verifies with
    it, made again when the file's content changes.

    Why: a CA renewal (docs/deploy.md, "CA renewal") ends with kube-controller-manager
    publishing the renewed certificate in every namespace's ``kube-root-ca.crt`` and the
    kubelet swapping it into each pod's projected ``ca.crt``. A process that read the file once
    stops trusting the API server at the **old** certificate's end (OpenSSL refuses an expired
    trust anchor, even one whose key signed the server's certificate): kucero's own pods would
    go deaf then, as Go clients did before client-go's ``ClientsAllowCARotation``.

    A stat per request (as for the token); the file is read again when the stat changes, and
    a new pool is made when the content did. The first read must succeed (``OSError``,
    ``ssl.SSLError`` otherwise, as before). A later file that cannot be read or holds no
    usable certificate keeps the pool in use, logged: the kubelet swaps the file atomically,
    so that is damage, not an update half written. Requests already under way (a watch) keep
    the connection they verified; idle connections of the old pool are closed.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int, int] | None = None
        self._data = b""
        self._lock = threading.Lock()
        self._pool = self._load(kube_.file_stamp(path), first=True)

    def pool(self) -> urllib3.PoolManager:
        try:
            stamp = kube_.file_stamp(self.path)
        except OSError as e:
            log.warning("%s: cannot be read (%s); keeping the CA bundle read before", self.path, e)
            return self._pool
        with self._lock:
            if stamp != self._stamp:
                self._pool = self._load(stamp, first=False)
            return self._pool

    def _load(self, stamp: tuple[int, int, int, int], first: bool) -> urllib3.PoolManager:
        self._stamp = stamp
        try:
            with open(self.path, "rb") as f:
                data = f.read()
            if not first and data == self._data:
                return self._pool
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies peer and host name
            context.load_verify_locations(cadata=data.decode("ascii"))
        except (OSError, ssl.SSLError, ValueError) as e:  # ValueError: not ASCII PEM
            if first:
                raise
            log.warning("%s: not used (%s); keeping the CA bundle read before", self.path, e)
            return self._pool
        self._data = data
        if not first:
            log.info("%s changed: the API server is verified with the new CA bundle", self.path)
            self._pool.clear()  # idle connections only; those in use finish on their own
        return _pool(context)


def as_client_certificate(kube: kube_.Kube, pem: bytes) -> kube_.Kube:
    """A connection to ``kube``'s API server, trusting the CA ``kube`` trusts, that
    authenticates with the client certificate and key in ``pem`` (one PEM holding both, as the
    kubelet's ``kubelet-client-current.pem`` does) and with nothing else: no bearer token.

    The drain of ``rollout.drain`` runs as the node's kubelet through this (run/turn.py says
    why). Raises ``KubeError`` when ``pem`` holds no usable pair or ``kube``'s trust cannot be
    copied (a configuration only the client library reads, with a CA it keeps elsewhere).
    """
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    settings = getattr(kube.pool, "connection_pool_kw", {})
    base = settings.get("ssl_context")
    try:
        if isinstance(base, ssl.SSLContext) and base.verify_mode == ssl.CERT_NONE:
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        elif isinstance(base, ssl.SSLContext) and (cas := base.get_ca_certs(binary_form=True)):
            tls.load_verify_locations(cadata=b"".join(cas))
        elif settings.get("ca_certs"):  # the client library's pool
            tls.load_verify_locations(cafile=settings["ca_certs"])
        else:
            raise kube_.KubeError(
                "cannot tell which CA the API server's certificate is checked against"
            )
        directory = tempfile.mkdtemp(prefix="kucero-client-")  # mode 0700
        try:
            path = os.path.join(directory, "tls.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            tls.load_cert_chain(path)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    except (OSError, ssl.SSLError, ValueError) as e:
        raise kube_.KubeError(f"client certificate: {e}") from e
    pool = _pool(tls)
    # a kubeconfig's tls-server-name, as the client library passed it on
    pool.connection_pool_kw.update(
        {k: settings[k] for k in ("server_hostname", "assert_hostname") if k in settings}
    )
    return kube_.Kube(kube.host, pool, lambda: None, None)


def _named(doc: Mapping[str, Any], section: str, name: object, key: str) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if entry.get("name") == name:
            return dict(entry.get(key) or {})
    raise kube_.KubeError(f"kubeconfig: no {section[:-1]} named {name!r}")


def _client_certificate(tls: ssl.SSLContext, user: Mapping[str, Any], base: str) -> None:
    if user.get("client-certificate-data") and user.get("client-key-data"):
        directory = tempfile.mkdtemp(prefix="kucero-kubeconfig-")  # mode 0700
        try:
            crt, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
            for target, field in ((crt, "client-certificate-data"), (key, "client-key-data")):
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(base64.b64decode(user[field]))
            tls.load_cert_chain(crt, key)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    elif user.get("client-certificate") and user.get("client-key"):
        tls.load_cert_chain(
            os.path.join(base, user["client-certificate"]), os.path.join(base, user["client-key"])
        )


def _pool(context: ssl.SSLContext) -> urllib3.PoolManager:
    # a few long watches plus short requests from a handful of threads
    return urllib3.PoolManager(num_pools=4, maxsize=10, ssl_context=context, retries=False)
