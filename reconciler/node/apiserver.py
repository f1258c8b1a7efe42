"""The API server as the leader's own host has it: the names and addresses in its serving
certificate and its Service range, which no kubelet serving certificate may name.

The leader runs on a control-plane node (it needs the CA key there), so the kubelet's static pod
directory holds ``kube-apiserver.yaml``: its ``--tls-cert-file`` says which certificate the API
server serves and ``--service-cluster-ip-range`` the Service range. Without a manifest (a
control plane kubeadm does not manage) kubeadm's ``/etc/kubernetes/pki/apiserver.crt`` is read.
Whatever cannot be read is logged and only narrows what is refused to the built-in names and the
policy's ``serviceCIDRs``: a missing file is no reason to stop signing, and nothing here can make
the checks accept more.

Read at most once per ``MAX_AGE_SECONDS`` (a renewed certificate is seen within a minute), from
any thread.
"""

from __future__ import annotations

import logging
import posixpath
import threading
import time

from reconciler.decide import reserved
from reconciler.model import kubeadm
from reconciler.node import host as host_

log = logging.getLogger(__name__)

MANIFEST = posixpath.join(kubeadm.MANIFESTS, "kube-apiserver.yaml")
DEFAULT_CERT = posixpath.join(kubeadm.PKI, "apiserver.crt")
# Re-read this often: a renewal (kucero's own, or kubeadm's) changes SANs rarely, and a minute
# of staleness only matters for a certificate that gained a name.
MAX_AGE_SECONDS = 60.0


class APIServerFacts:
    """``get()`` returns the leader host's ``reserved.APIServer``, cached."""

    def __init__(self, host: host_.Host, node_name: str | None) -> None:
        self.host = host
        self.node_name = node_name
        self._lock = threading.Lock()
        self._cached: tuple[float, reserved.APIServer] | None = None
        self._logged: tuple[str, ...] = ()

    def get(self) -> reserved.APIServer:
        now = time.monotonic()
        with self._lock:
            if self._cached and now - self._cached[0] < MAX_AGE_SECONDS:
                return self._cached[1]
        facts = read(self.host, self.node_name)
        with self._lock:
            self._cached = (now, facts)
            if facts.problems != self._logged:  # once per change, not once per CSR
                self._logged = facts.problems
                for problem in facts.problems:
                    log.warning("API server facts for the CSR checks: %s", problem)
        return facts


def read(host: host_.Host, node_name: str | None) -> reserved.APIServer:
    """What the host's manifest and certificate say; problems named, never raised."""
    problems: list[str] = []
    cert_path = DEFAULT_CERT
    ranges: tuple[reserved.Network, ...] = ()
    try:
        manifest = host.read(MANIFEST)
    except host_.HostError as e:
        manifest, problems = None, [str(e)]
    if manifest is not None:
        named, ranges, found = reserved.apiserver_manifest(manifest)
        problems += [f"{MANIFEST}: {p}" for p in found]
        cert_path = named if named and named.startswith("/") else DEFAULT_CERT
    dns: frozenset[str] = frozenset()
    ips: frozenset[reserved.IP] = frozenset()
    try:
        pem = host.read(cert_path)
        if pem is None:
            problems.append(f"{cert_path}: not found (only the built-in names are refused)")
        else:
            dns, ips = reserved.apiserver_sans(pem)
    except host_.HostError as e:
        problems.append(str(e))
    except Exception as e:  # ValueError, x509.InvalidVersion, ...: a file we cannot use
        problems.append(f"{cert_path}: not a certificate ({type(e).__name__})")
    return reserved.APIServer(node_name, cert_path, dns, ips, ranges, tuple(problems))
