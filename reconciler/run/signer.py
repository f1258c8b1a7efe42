"""The kubelet serving CSR approver and signer: a component of ``kucero controller`` (leader
only) and ``kucero run``.

It watches CSRs of signer ``kubernetes.io/kubelet-serving`` (field selector), and hands each
pending one to a small thread pool, so one slow request (a Node lookup that retries, a large
RSA key) never holds back the others. For each (``run.csrwork``): read the requesting Node (from
a Node watch kept here, labels and addresses only; a miss asks the API), resolve the
``csrSigner`` policy for that Node's labels, add what this node's host says about its API server
(``node.apiserver``: the names and addresses of its certificate, its Service range; never
refused to this node's own kubelet, ``node_name``), and ask the pure checks (``decide.csr``)
for a verdict; with ``resolveDNSNames`` the names that passed every other check are looked up
(``node.resolver``, or the ``resolve`` given) and the checks asked again with the answers:

- approve: load the CA (``node.castore``, reloaded when its files change), refuse it if it is
  expired, not yet valid or does not match its key (Failed condition, Warning Event, metric),
  else build the certificate first, then add ``Approved`` (reason ``KuceroApproved``) and write
  ``status.certificate`` right after, so the window in which another signer could act is a
  single request long;
- deny: ``Denied`` with the reason, and a Warning Event on the CSR;
- wait: the Node is not registered yet; requeued with back-off until ``decide.csr.NODE_WAIT``
  after the CSR's creation, then denied;
- leave: another signer's, ``csrSigner.enabled: false`` for that node, or ``onReject: ignore``.

kube-controller-manager's ``csrsigning`` also signs approved ``kubelet-serving`` CSRs when it
has the cluster CA (kubeadm sets ``--cluster-signing-cert-file``). Both then race once kucero
approves: whichever writes ``status.certificate`` first wins, with the same CA. kucero's write
is based on the resourceVersion of its approval, so if KCM got there first the API server
answers 409 (or 422 "may not modify existing certificate content"); kucero counts that as
``SignedElsewhere`` and neither fails the CSR nor overwrites the certificate. KCM, for its
part, skips CSRs that already hold a certificate.

A CSR approved by kucero but not signed (the process died in between) is finished on the next
start. Every decision is counted in ``kucero_csr_decisions_total{decision,reason}``; signing
time in ``kucero_csr_sign_duration_seconds``. The CA key is never logged.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import heapq
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler import logs, retrying
from reconciler import metrics as metrics_
from reconciler.cluster import csr as csr_api
from reconciler.cluster import kube as kube_
from reconciler.cluster import nodes
from reconciler.decide import csr
from reconciler.node import apiserver, castore, resolver
from reconciler.node import host as host_
from reconciler.run import csrwork

log = logging.getLogger(__name__)

# Concurrent CSRs: each is a few milliseconds of CPU and three API requests; 8 keeps two cores
# busy while requests wait on the API server, and bounds what a burst of CSRs can cost.
WORKERS = 8
# A CSR whose Node is missing (or with no valid policy yet, or the API failed) is looked at
# again after 2 s, doubling to 30 s (jittered); a missing Node until decide.csr.NODE_WAIT after
# the CSR's creation, then it is denied.
REQUEUE_BACKOFF = retrying.backoff(first=2.0, cap=30.0)

Now = Callable[[], dt.datetime]
CurrentPolicy = csrwork.CurrentPolicy


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Signer:
    """Use ``run(kube, stop, current)`` as a controller component, or ``start``/``stop``."""

    name = "csr-signer"
    serves_csrs = True

    def __init__(
        self,
        host_root: str | Path = "/",
        metrics: metrics_.Metrics | None = None,
        workers: int = WORKERS,
        now: Now = _utcnow,
        node_name: str | None = None,
        resolve: csrwork.Resolve = resolver.resolve,
    ) -> None:
        host = host_.Host(host_root)
        self.cas = castore.CAStore(host)
        # the API server's certificate and Service range on this (the leader's) node; its
        # names are not refused to ``node_name``'s own kubelet, which kubeadm put in it
        self.apiserver = apiserver.APIServerFacts(host, node_name)
        self.resolve = resolve
        self.metrics = metrics or metrics_.Metrics()
        self.workers = workers
        self.now = now
        self._lock = threading.Condition()
        self._busy: set[str] = set()  # CSR names queued or in progress
        self._later: list[tuple[float, str, int]] = []  # (due, name, attempt) heap
        # UIDs of CSRs signed lately: a watch event older than our own write (approved, no
        # certificate yet) must not make a second worker sign again (pruned after
        # csrwork.DONE_MEMORY_SECONDS).
        self._done: dict[str, float] = {}
        # Nodes by name (labels and addresses only), from a watch: one request less per CSR.
        self._nodes: dict[str, dict[str, Any]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, kube: kube_.Kube, current: CurrentPolicy) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run, args=(kube, self._stop, current), name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def policy_changed(self) -> None:
        """Nothing to do: each CSR is decided with the policy in force when it is handled."""

    def run(self, kube: kube_.Kube, stop: threading.Event, current: CurrentPolicy) -> None:
        """Approve and sign until ``stop`` is set."""
        pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="csr")
        work = _Work(self, kube, current, pool)
        helpers = [
            threading.Thread(target=self.cas.watch, args=(stop,), name="csr-ca-watch"),
            threading.Thread(target=work.requeue_loop, args=(stop,), name="csr-requeue"),
            threading.Thread(
                target=kube.watch_forever,
                args=(nodes.PATH, None, work.on_node_event, stop, work.on_node_list),
                name="csr-nodes",
            ),
        ]
        for thread in helpers:
            thread.start()
        try:
            kube.watch_forever(csr_api.PATH, csr_api.WATCH_PARAMS, work.on_event, stop)
        finally:
            stop.set()
            with self._lock:
                self._lock.notify_all()
            for thread in helpers:
                thread.join()
            pool.shutdown(wait=True, cancel_futures=True)


class _Work(csrwork.Handler):
    """One run's queue: watch events in, requeues, the Node cache; ``csrwork`` does the rest."""

    def __init__(
        self,
        signer: Signer,
        kube: kube_.Kube,
        current: CurrentPolicy,
        pool: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        super().__init__(signer, kube, current)
        self.owner, self.pool = signer, pool

    def on_event(self, event: kube_.WatchEvent) -> None:
        if event.type in ("ADDED", "MODIFIED"):
            self.submit(event.obj, 0)

    def on_node_list(self, items: list[dict[str, Any]]) -> None:
        with self.s._lock:
            self.s._nodes = {nodes.name(n): csrwork.node_summary(n) for n in items}

    def on_node_event(self, event: kube_.WatchEvent) -> None:
        with self.s._lock:
            if event.type == "DELETED":
                self.s._nodes.pop(nodes.name(event.obj), None)
            else:
                self.s._nodes[nodes.name(event.obj)] = csrwork.node_summary(event.obj)

    def submit(self, obj: dict[str, Any], attempt: int) -> None:
        if not (csr.is_pending(obj) or csr.approved_by_us_unsigned(obj)):
            return
        name = csr_api.name(obj)
        with self.s._lock:
            if name in self.owner._busy or csrwork.uid(obj) in self.s._done:
                return
            self.owner._busy.add(name)
        self.pool.submit(self._guarded, obj, attempt)

    def requeue_loop(self, stop: threading.Event) -> None:
        lock = self.s._lock
        while not stop.is_set():
            with lock:
                due = self.owner._later[0][0] if self.owner._later else None
                wait = 1.0 if due is None else max(0.0, due - time.monotonic())
                if wait > 0:
                    lock.wait(min(wait, 1.0))
                    continue
                _, name, attempt = heapq.heappop(self.owner._later)
            try:
                obj = csr_api.get(self.kube, name)
            except kube_.NotFound:
                continue
            except kube_.KubeError as e:
                log.warning("CSR %s: %s; trying again later", name, e)
                self._later(name, attempt)
                continue
            self.submit(obj, attempt)

    def _later(self, name: str, attempt: int) -> None:
        delay = retrying.delay(REQUEUE_BACKOFF, attempt + 1)
        with self.s._lock:
            heapq.heappush(self.owner._later, (time.monotonic() + delay, name, attempt + 1))
            self.s._lock.notify_all()

    def _guarded(self, obj: dict[str, Any], attempt: int) -> None:
        name = csr_api.name(obj)
        requeue = False
        try:
            with logs.fields(csr=name):  # every line about this CSR names it
                requeue = self.process(obj)
        except kube_.KubeError as e:
            log.warning("CSR %s: %s; trying again later", name, e)
            self._count("error", type(e).__name__)
            requeue = True
        except Exception:
            log.exception("CSR %s: unexpected error", name)
            self._count("error", "Unexpected")
        finally:
            with self.s._lock:
                self.owner._busy.discard(name)
        if requeue:
            self._later(name, attempt)
