"""One kubelet serving CSR, from verdict to condition and certificate (``run.signer`` queues
them and runs this in its thread pool).

For one CSR: read the requesting Node (from the signer's Node cache, else the API), resolve the
``csrSigner`` policy for that Node's labels and what it refuses (with the leader host's API
server facts), get the pure verdict (``decide.csr``; a ``RESOLVE`` verdict is asked again with
the DNS answers) and act:
approve (certificate built first, then ``Approved``, then ``status.certificate``, so another
signer's window is a single request long), deny (``Denied`` and a Warning Event), leave, or ask
to be requeued (the Node is missing, or no valid policy yet). A CA that may not sign fails the
CSR (``Failed``, Warning Event, metric), never quoting the key. A write that conflicts re-reads
the CSR and looks again; a certificate written first by another signer counts as
``SignedElsewhere``, not as a failure.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from reconciler import metrics as metrics_
from reconciler.cluster import csr as csr_api
from reconciler.cluster import events, nodes
from reconciler.cluster import kube as kube_
from reconciler.decide import csr, csrsign, pki, policy
from reconciler.node import apiserver, castore, keys

log = logging.getLogger(__name__)

# A certificate write that lost a race with an unrelated change is retried this often.
WRITE_ATTEMPTS = 3
# How long a signed CSR's UID is remembered, against stale watch events; far longer than any
# watch lag, short enough that the set stays small.
DONE_MEMORY_SECONDS = 600.0

CurrentPolicy = Callable[[], policy.Policy | None]
# DNS names in, {name: (address, ...)} out for those that resolved (node.resolver.resolve)
Resolve = Callable[[Iterable[str]], Mapping[str, tuple[str, ...]]]


class State(Protocol):
    """What the handler shares with the signer that runs it."""

    cas: castore.CAStore
    apiserver: apiserver.APIServerFacts
    resolve: Resolve
    metrics: metrics_.Metrics
    now: Callable[[], dt.datetime]
    _lock: threading.Condition
    _nodes: dict[str, dict[str, Any]]
    _done: dict[str, float]


class Handler:
    def __init__(self, signer: State, kube: kube_.Kube, current: CurrentPolicy) -> None:
        self.s, self.kube, self.current = signer, kube, current

    def process(self, obj: dict[str, Any]) -> bool:
        """Decide and act on one CSR; True when it must be looked at again later."""
        name = csr_api.name(obj)
        loaded = self.current()
        if loaded is None:
            return True  # no valid policy yet: nothing may be approved or denied
        node_name = csr.node_name(obj)
        node = self._node(node_name) if node_name else None
        spec = csr.signer_spec(loaded, nodes.labels(node) if node else {})
        refused = spec.refused(self.s.apiserver.get())
        now = self.s.now()
        verdict = csr.check(obj, node, spec, refused, now)
        if verdict.decision is csr.Decision.RESOLVE:
            assert verdict.request is not None
            resolved = self.s.resolve(verdict.request.dns_names)
            verdict = csr.check(obj, node, spec, refused, now, resolved)
        if verdict.decision is csr.Decision.WAIT:
            log.info("CSR %s: %s; waiting", name, verdict.message)
            return True
        if verdict.decision is not csr.Decision.APPROVE and csr.approved_by_us_unsigned(obj):
            # approved before a restart, no longer passing (the Node's addresses changed, the
            # policy did): Denied cannot follow Approved, so it fails, unsigned
            self._fail(obj, verdict.reason, verdict.message, now)
            return False
        if verdict.decision is csr.Decision.LEAVE:
            if verdict.reason not in (csr.Reason.OTHER_SIGNER, csr.Reason.SIGNER_DISABLED):
                log.info("CSR %s left pending (onReject: ignore): %s", name, verdict.message)
                self._count("ignored", verdict.reason)
            return False
        if verdict.decision is csr.Decision.DENY:
            self._deny(obj, verdict, now)
            return False
        self._approve_and_sign(obj, verdict, spec, now)
        return False

    def _node(self, node_name: str) -> dict[str, Any] | None:
        """From the Node watch; a miss (a Node registered an instant ago) asks the API."""
        with self.s._lock:
            cached = self.s._nodes.get(node_name)
        if cached is not None:
            return cached
        try:
            return node_summary(nodes.get(self.kube, node_name))
        except kube_.NotFound:
            return None

    def _deny(self, obj: dict[str, Any], verdict: csr.Verdict, now: dt.datetime) -> None:
        name = csr_api.name(obj)
        cond = csr_api.condition("Denied", verdict.reason, verdict.message, now)
        try:
            csr_api.add_condition(self.kube, obj, cond)
        except kube_.Conflict:
            return self._retry_fresh(name)
        log.warning("CSR %s denied: %s: %s", name, verdict.reason, verdict.message)
        self._count("denied", verdict.reason)
        events.emit(self.kube, obj, verdict.reason, verdict.message, events.WARNING, "Deny")

    def _approve_and_sign(
        self, obj: dict[str, Any], verdict: csr.Verdict, spec: csr.SignerSpec, now: dt.datetime
    ) -> None:
        name = csr_api.name(obj)
        started = time.perf_counter()
        pem = self._sign(obj, verdict, spec, now)
        if pem is None:
            return
        self.s.metrics.csr_sign_duration.observe(time.perf_counter() - started)
        if not csr.approved_by_us_unsigned(obj):
            cond = csr_api.condition("Approved", csr.Reason.APPROVED, verdict.message, now)
            try:
                obj = csr_api.add_condition(self.kube, obj, cond)
            except kube_.Conflict:
                return self._retry_fresh(name)
        for _ in range(WRITE_ATTEMPTS):
            if csr_api.put_certificate(self.kube, obj, pem) is not None:
                self._remember(obj)
                log.info("CSR %s approved and signed (%s)", name, verdict.message)
                self._count("approved", csr.Reason.APPROVED)
                return
            obj = csr_api.get(self.kube, name)
            if (obj.get("status") or {}).get("certificate"):
                self._remember(obj)
                log.info("CSR %s approved; another signer wrote the certificate first", name)
                self._count("approved", csr.Reason.SIGNED_ELSEWHERE)
                return
            if not csr.approved_by_us_unsigned(obj):
                return  # failed or changed by someone else meanwhile: theirs now
        raise kube_.Conflict(f"CSR {name}: the certificate write kept conflicting", 409)

    def _sign(
        self, obj: dict[str, Any], verdict: csr.Verdict, spec: csr.SignerSpec, now: dt.datetime
    ) -> bytes | None:
        """The certificate's PEM, or None after recording why the CA may not sign."""
        assert verdict.request is not None and verdict.validity is not None
        try:
            ca = self.s.cas.get(spec.ca_cert_path, spec.ca_key_path)
            problem = csrsign.ca_problem(ca.cert, ca.key, now)
        except castore.CAError as e:
            problem = (csr.Reason.CA_UNAVAILABLE, str(e))
        if problem is None:
            try:
                cert = csrsign.build(
                    verdict.request,
                    verdict.usages,
                    ca.cert,
                    ca.key,
                    keys.new_serial(),
                    now,
                    verdict.validity,
                )
                return pki.cert_pem(cert)
            except Exception as e:  # never quote the key: the type and message of the error only
                problem = (csr.Reason.SIGNING_FAILED, f"signing failed: {type(e).__name__}")
        self._fail(obj, *problem, now)
        return None

    def _fail(self, obj: dict[str, Any], reason: str, message: str, now: dt.datetime) -> None:
        """The Failed condition (never signed), a Warning Event and the metric."""
        log.error("CSR %s: refusing to sign: %s: %s", csr_api.name(obj), reason, message)
        cond = csr_api.condition("Failed", reason, message, now)
        try:
            csr_api.add_condition(self.kube, obj, cond)
        except kube_.Conflict:
            self._retry_fresh(csr_api.name(obj))
            return
        self._count("failed", reason)
        events.emit(self.kube, obj, reason, message, events.WARNING, "Sign")

    def _remember(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        with self.s._lock:
            self.s._done[uid(obj)] = now
            if len(self.s._done) % 256 == 0:  # prune now and then, not on every CSR
                old = [n for n, t in self.s._done.items() if now - t > DONE_MEMORY_SECONDS]
                for n in old:
                    del self.s._done[n]

    def _retry_fresh(self, name: str) -> None:
        """The CSR changed under us: look at its current state (a no-op if decided)."""
        try:
            fresh = csr_api.get(self.kube, name)
        except kube_.NotFound:
            return
        if csr.is_pending(fresh) or csr.approved_by_us_unsigned(fresh):
            self.process(fresh)

    def _count(self, decision: str, reason: str) -> None:
        self.s.metrics.csr_decisions.labels(decision, str(reason)).inc()


def uid(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name"))


def node_summary(node: dict[str, Any]) -> dict[str, Any]:
    """What the checks read of a Node: its name, labels and addresses."""
    meta = node.get("metadata") or {}
    return {
        "metadata": {"name": meta.get("name"), "labels": dict(meta.get("labels") or {})},
        "status": {"addresses": list((node.get("status") or {}).get("addresses") or [])},
    }
