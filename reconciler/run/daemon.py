"""Process wiring of ``kucero node`` (daemon) and ``kucero run``: logging, signals, the API
connection, the metrics endpoint, and the threads that run the roles.

SIGTERM and SIGINT only set one ``threading.Event``; every role watches it, finishes what it is
doing (the node's pass in flight, the controller's hand-over) and returns, and the process
exits 0. A node reconciler with ``--policy FILE`` and no usable Kubernetes configuration runs
alone (no status, no slots): the DaemonSet always has one, a workstation test may not.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from reconciler.cluster import kube as kube_
from reconciler.node import execute
from reconciler.run import node_daemon

log = logging.getLogger("kucero")


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
    execute: execute.Settings
    enable_controller: bool
    args: argparse.Namespace  # the controller reads its own flags from here


def configure_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(options: Options) -> int:
    configure_logging()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the work in flight", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        kube: kube_.Kube | None = kube_.connect(options.kubeconfig)
    except kube_.KubeError as e:
        if options.policy_file is None or options.enable_controller:
            log.error("%s", e)
            return 1
        log.warning("%s: running alone with --policy (no status, no rotation slots)", e)
        kube = None
    config = node_daemon.Config(
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
    )
    node = node_daemon.NodeDaemon(config, kube)
    code = node.run(stop)
    if kube is not None:
        kube.close()
    return code
