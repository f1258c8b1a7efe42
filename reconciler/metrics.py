"""Every Prometheus metric of kucero, declared in one place (``run.endpoint`` serves them,
behind the API server's authentication and authorization, with ``/healthz`` and ``/readyz``).

One ``Metrics`` object per process holds its own ``CollectorRegistry`` (no global state: a test
makes a fresh one). Counters have no ``_created`` series: they double the series count and no
dashboard uses them. Certificate expiry is produced at scrape time by a collector over the
latest observation, so a certificate that disappears from a node disappears from ``/metrics``
too, instead of lingering with its last value as a labelled gauge would.

Names and labels are those of docs/design.md; ``kucero_leader`` and ``kucero_api_errors_total``
are added because a controller that cannot lead or cannot talk to the API server must be visible.

``--metrics-addr`` is Go-style (``:8080`` all interfaces, ``127.0.0.1:9090``); ``0`` or empty
turns the endpoint off.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import prometheus_client
from prometheus_client import core, registry

from reconciler import __version__

log = logging.getLogger(__name__)

# Reconcile passes take from milliseconds (nothing due) to minutes (restarts, health checks).
PASS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900)
SIGN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5)
SLOT_WAIT_BUCKETS = (0.1, 1, 5, 15, 60, 300, 900, 3600)

CertificateRow = tuple[str, str, str, float]  # name, kind, issuer, notAfter (Unix seconds)


class _Certificates(registry.Collector):
    """``kucero_certificate_expiration_timestamp_seconds`` from the latest observation of each
    node; replacing a node's rows drops the certificates that are gone."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[CertificateRow, ...]] = {}
        self._lock = threading.Lock()

    def set(self, node: str, rows: Iterable[CertificateRow]) -> None:
        with self._lock:
            self._rows[node] = tuple(rows)

    def collect(self) -> Iterator[core.Metric]:
        family = core.GaugeMetricFamily(
            "kucero_certificate_expiration_timestamp_seconds",
            "notAfter of each certificate, kubeconfig and CA kucero observes, as a Unix time",
            labels=["node", "name", "kind", "issuer"],
        )
        with self._lock:
            snapshot = dict(self._rows)
        for node, rows in sorted(snapshot.items()):
            for name, kind, issuer, not_after in rows:
                family.add_metric([node, name, kind, issuer], not_after)
        yield family


class Metrics:
    """The process's metrics. Thread-safe (prometheus-client's metrics are)."""

    def __init__(self) -> None:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.certificates = _Certificates()
        r.register(self.certificates)
        self.renewals = prometheus_client.Counter(
            "kucero_renewals", "Certificate renewals", ["node", "name", "result"], registry=r
        )
        self.restarts = prometheus_client.Counter(
            "kucero_restarts",
            "Restarts of control-plane components and the kubelet",
            ["node", "component", "result"],
            registry=r,
        )
        self.reconcile_duration = prometheus_client.Histogram(
            "kucero_reconcile_duration_seconds",
            "Duration of one node pass",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.policy_valid = prometheus_client.Gauge(
            "kucero_policy_valid",
            "1 when the latest policy read was valid, 0 when it was refused (the last valid "
            "one stays in force)",
            registry=r,
        )
        self.policy_info = prometheus_client.Gauge(
            "kucero_policy_info", "The revision of the policy in force", ["revision"], registry=r
        )
        self.csr_decisions = prometheus_client.Counter(
            "kucero_csr_decisions",
            "Kubelet serving CSR decisions",
            ["decision", "reason"],
            registry=r,
        )
        self.csr_sign_duration = prometheus_client.Histogram(
            "kucero_csr_sign_duration_seconds",
            "Time to sign one CSR",
            buckets=SIGN_BUCKETS,
            registry=r,
        )
        self.slot_wait = prometheus_client.Histogram(
            "kucero_rotation_slot_wait_seconds",
            "Time a node waited for a rotation slot",
            buckets=SLOT_WAIT_BUCKETS,
            registry=r,
        )
        self.build_info = prometheus_client.Gauge(
            "kucero_build_info",
            "Always 1; the labels say which kucero runs",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.node_phase = prometheus_client.Gauge(
            "kucero_node_phase",
            "1 for the phase of the node's latest pass (as kucero.io/status says), 0 for the "
            "others; the KuceroNodeNotConverged alert watches it",
            ["node", "phase"],
            registry=r,
        )
        self.leader = prometheus_client.Gauge(
            "kucero_leader", "1 while this process leads the controllers", registry=r
        )
        self.api_errors = prometheus_client.Counter(
            "kucero_api_errors",
            "Kubernetes API requests that failed, by what kucero was doing and the error",
            ["operation", "error"],
            registry=r,
        )
        self._revision_lock = threading.Lock()
        self._ca_metrics(r)

    def _ca_metrics(self, r: prometheus_client.CollectorRegistry) -> None:
        """CA renewal (issue 16): what each node trusts, what the leader publishes, what
        handed-out kubeconfigs trust, refusals of a published CA."""
        self.ca_trusted = prometheus_client.Gauge(
            "kucero_ca_expiration_timestamp_seconds",
            "notAfter of the CA certificate a node trusts, as a Unix time: the earliest over "
            "its trust anchors of that CA (pki files, kubeconfigs, the kubelet's clientCAFile)",
            ["node", "name"],
            registry=r,
        )
        self.ca_renew_before = prometheus_client.Gauge(
            "kucero_ca_renew_before_seconds",
            "The policy's ca.renewBefore as a node resolved it, in seconds: a CA certificate a "
            "node trusts that ends sooner than this is due (KuceroNodeTrustsExpiringCA)",
            ["node"],
            registry=r,
        )
        self.ca_refusals = prometheus_client.Counter(
            "kucero_ca_refusals",
            "Published CA certificates a node refused (not its CA's subject and key, garbage, "
            "a wrong fingerprint), once per distinct content",
            ["node", "name", "reason"],
            registry=r,
        )
        self.ca_published = prometheus_client.Gauge(
            "kucero_ca_published_expiration_timestamp_seconds",
            "notAfter of the CA certificate the leader publishes, as a Unix time",
            ["name"],
            registry=r,
        )
        self.ca_previous = prometheus_client.Gauge(
            "kucero_ca_previous_expiration_timestamp_seconds",
            "notAfter of the CA certificate a renewal replaced, as a Unix time: kubeconfigs "
            "handed out before the renewal embed it and stop working then",
            ["name"],
            registry=r,
        )
        self.ca_copy_current = prometheus_client.Gauge(
            "kucero_ca_cluster_copy_current",
            "1 when a cluster-level copy of the cluster CA (cluster-info, kubeadm-config, "
            "kube-root-ca.crt) holds the published certificate, 0 when it still holds an older one",
            ["copy"],
            registry=r,
        )

    def set_phase(self, node: str, phase: str, phases: Iterable[str]) -> None:
        """One series per phase, 1 for ``phase`` (a state set, so a change never leaves a
        stale 1 behind)."""
        for each in phases:
            self.node_phase.labels(node, each).set(1 if each == phase else 0)

    def set_policy(self, valid: bool, revision: str | None) -> None:
        """Record a policy read: validity, and the revision in force (one series only)."""
        self.policy_valid.set(1 if valid else 0)
        if revision is None:
            return
        with self._revision_lock:
            self.policy_info.clear()
            self.policy_info.labels(revision).set(1)

    def render(self) -> bytes:
        return bytes(prometheus_client.generate_latest(self.registry))


def certificate_rows(report_rows: Iterable[Mapping[str, Any]]) -> list[CertificateRow]:
    """Rows of ``report.expiration`` (notAfter in RFC 3339) as collector rows; rows without a
    date (unreadable files) are left out."""
    out = []
    for row in report_rows:
        not_after = row.get("notAfter")
        if not not_after:
            continue
        when = dt.datetime.fromisoformat(str(not_after).replace("Z", "+00:00"))
        out.append((str(row["name"]), str(row["kind"]), str(row["issuer"]), when.timestamp()))
    return out


def parse_addr(addr: str) -> tuple[str, int] | None:
    """``:8080`` -> ("", 8080); ``127.0.0.1:0`` -> ("127.0.0.1", 0); ``0``/empty -> None."""
    if addr in ("", "0"):
        return None
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{addr!r} is not host:port (e.g. :8080)")
    return host.strip("[]"), int(port)
