"""Process wiring of ``kucero node`` (daemon) and ``kucero run``: signals, the API connection,
the metrics endpoint, and the threads that run the roles (``cli`` has set up logging).

``kucero run`` is the drop-in replacement of the original DaemonSet: the node reconciler and,
with ``--enable-kucero-controller`` (default true), the leader-elected controller, in one
process sharing one API connection, one metrics registry and one endpoint. ``/readyz`` says
ready once the first node pass is done and, with the controller, once the election knows a
leader (this process or another).

SIGTERM and SIGINT only set one ``threading.Event``; every role watches it, finishes what it is
doing (the node's pass in flight, the controller's hand-over of its Lease) and returns, and the
process exits 0. A node reconciler with ``--policy FILE`` and no usable Kubernetes
configuration runs alone (no status, no slots, no Events): the DaemonSet always has one, a
workstation may not.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconciler import metrics as metrics_
from reconciler.cluster import kube as kube_
from reconciler.decide import castatus, report, status
from reconciler.model import actions
from reconciler.node import execute, hostcommands
from reconciler.run import endpoint, health, node_daemon, node_report, once

log = logging.getLogger(__name__)
# decide.caplan words a refusal "<name> refused (<carenewal.Refusal>): ..."
_REFUSAL = re.compile(r" refused \((\w+)\)")


@dataclasses.dataclass(frozen=True)
class Options:
    command: str  # "node" or "run"
    node_name: str
    host_root: str
    namespace: str
    policy_file: str | None
    policy_defaults: Mapping[str, Any]
    node_labels: Mapping[str, str]
    kubeconfig: str | None
    metrics_addr: str
    lease_duration: dt.timedelta
    slot_retry: dt.timedelta
    failure_retry: dt.timedelta
    execute: execute.Settings  # its host commands are decided before each pass
    commands: hostcommands.Given
    controller: Any = None  # run.controller.Settings when `kucero run` leads too
    # leader-only components, made with the process's metrics (the CSR signer)
    components: Callable[[Any], Sequence[Any]] = lambda _: ()
    metrics_secure: bool = True  # HTTPS, /metrics behind TokenReview + SubjectAccessReview
    metrics_cert_file: str | None = None  # default: self-signed at start-up
    metrics_key_file: str | None = None


def main(options: Options) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the work in flight", signal.Signals(signum).name)
        # the pass in flight ends its step, puts a parked manifest back, owes the rest
        options.execute.stop.signal = signum
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        addr = metrics_.parse_addr(options.metrics_addr)
    except ValueError as e:
        log.error("--metrics-addr: %s", e)
        return 2
    try:
        kube: kube_.Kube | None = kube_.connect(options.kubeconfig)
    except kube_.KubeError as e:
        if options.policy_file is None or options.controller is not None:
            log.error("%s", e)
            return 1
        log.warning("%s: running alone with --policy (no status, no rotation slots)", e)
        kube = None
    metrics = metrics_.Metrics()

    def count_restart(node_name: str | None, component: str, result: str) -> None:
        # the restart engine's own outcome (restarted, failed, rolled-back, rollback-failed,
        # interrupted), not only ok/not ok: a rollback is what an operator is paged for
        metrics.restarts.labels(node_name or options.node_name, component, result).inc()

    options = dataclasses.replace(
        options, execute=dataclasses.replace(options.execute, on_restart=count_restart)
    )
    heartbeats = health.Heartbeats()
    node = node_daemon.NodeDaemon(
        _config(options), kube, observer(metrics, options.node_name), heartbeats=heartbeats
    )
    node.turn.on_slot_wait = metrics.slot_wait.observe
    elector, threads = None, []
    if options.controller is not None and kube is not None:
        from reconciler.run import controller, election

        elector = election.Elector(kube, options.controller.election, metrics)
        lead = controller.Controller(
            kube, options.controller, metrics, options.components(metrics), heartbeats
        )
        threads.append(
            threading.Thread(target=elector.run, args=(stop, lead.lead), name="controller")
        )

    def ready() -> bool:
        return node.ready.is_set() and (elector is None or elector.leader is not None)

    server = None
    if addr is not None:
        served = endpoint.Options(
            addr, options.metrics_secure, options.metrics_cert_file, options.metrics_key_file
        )
        try:
            server = endpoint.serve(served, metrics, ready, heartbeats, kube)
        except (OSError, ValueError) as e:
            log.error("cannot serve metrics on %s:%d: %s", *addr, e)
            return 1
    for thread in threads:
        thread.start()
    try:
        code = node.run(stop)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        if server is not None:
            server.close()
        if kube is not None:
            kube.close()
    return code


def _config(options: Options) -> node_daemon.Config:
    return node_daemon.Config(
        node_name=options.node_name,
        host_root=options.host_root,
        namespace=options.namespace,
        policy_file=options.policy_file,
        policy_defaults=options.policy_defaults,
        node_labels=options.node_labels,
        lease_seconds=max(1, int(options.lease_duration.total_seconds())),
        slot_retry=options.slot_retry,
        failure_retry=options.failure_retry,
        execute=options.execute,
        commands=options.commands,
    )


def observer(metrics: metrics_.Metrics, node_name: str) -> Any:
    """What a finished pass puts into the metrics: certificate expiry, renewal and restart
    counters, the pass's duration."""

    refused: set[str] = set()  # refusals of a published CA already counted

    def observe(result: once.PassResult, seconds: float) -> None:
        metrics.reconcile_duration.observe(seconds)
        if result.observed is not None:
            rows = report.expiration(result.observed, dt.datetime.now(dt.UTC))
            metrics.certificates.set(node_name, metrics_.certificate_rows(rows))
            for name, until in castatus.trusted(result.observed).items():
                metrics.ca_trusted.labels(node_name, name).set(until.timestamp())
        metrics.ca_renew_before.labels(node_name).set(result.spec.ca.renew_before.total_seconds())
        for f in result.findings:
            refusal = f.reason == actions.Reason.CA_REFUSED and f.severity == "error"
            if refusal and f.detail not in refused:
                refused.add(f.detail)
                found = _REFUSAL.search(f.detail)
                why = found.group(1) if found else "Unparseable"
                metrics.ca_refusals.labels(node_name, f.target, why).inc()
        phase = node_report.status_of(result, None, None).phase
        metrics.set_phase(node_name, phase, list(status.Phase))
        for r in result.results:
            outcome = "success" if r.ok else "failure"
            if r.action.kind == actions.ActionKind.RENEW:
                metrics.renewals.labels(node_name, r.action.target, outcome).inc()
            elif r.action.kind == actions.ActionKind.RESTART_KUBELET:
                # static pod restarts are counted by the restart engine (execute.on_restart)
                result_label = "restarted" if r.ok else "failed"
                metrics.restarts.labels(node_name, "kubelet", result_label).inc()

    return observe
