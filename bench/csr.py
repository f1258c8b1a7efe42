"""``python -m bench.csr``: kubelet serving CSRs, approved and signed, per second and how fast.

``--csrs`` requests (default 1,000) from ``--nodes`` nodes (default 100), each created by its
node user (client certificate ``system:node:<n>`` in ``system:nodes``) against a real
kube-apiserver from tests/controlplane, in two phases of the same run:

* kucero: its signer (``reconciler.run.signer``) in a process of its own, on a control plane
  without kube-controller-manager, checking, approving and signing with the cluster CA;
* the peer, the built-in path an operator has today: kube-controller-manager's ``csrsigning``
  controller signing with the same kind of CA, on a control plane with it, each CSR approved by
  this benchmark as soon as its watch sees it (so that what is measured is KCM's signing path,
  with the cheapest possible approver in front of it).

Both phases create the same requests (ECDSA P-256, as kubelets send them) with the same
``--creators`` threads, as fast as the API server takes them, and observe certificates with the
same watch (``--rate`` paces the creations instead, to see latency below saturation; ``make
bench`` runs both). Reported: throughput (certificates per second, from the first creation to the last
certificate), and latency from just before each create request to the watch event that carries
its certificate (median, p99, max). Numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from reconciler.cluster import csr as csr_api
from reconciler.cluster import kube as kube_
from reconciler.decide import pki
from tests import csrs, signer_env
from tests.controlplane import cluster

WAIT_SECONDS = 300.0  # for all certificates of one phase; far beyond any plausible run


def _requests(nodes: int, count: int) -> list[tuple[str, str, bytes]]:
    """(node, CSR name, PEM): ``count`` requests spread over ``nodes`` nodes, made up front."""
    out = []
    keys = {}
    for i in range(count):
        node = f"bench-{i % nodes:03d}"
        if node not in keys:
            keys[node] = csrs.key.__wrapped__("ecdsa")  # one key per node, not the shared one
        pem = csrs.request_pem(node, ips=[_ip(i % nodes)], dns=[node], private_key=keys[node])
        out.append((node, f"{node}-{i:05d}", pem))
    return out


def _ip(n: int) -> str:
    return f"10.50.{n // 250}.{n % 250 + 1}"


class _Observer:
    """Watches kubelet-serving CSRs; records when each first carries a certificate. With
    ``approve``, approves each pending CSR as soon as it appears (the KCM phase)."""

    def __init__(self, kube: kube_.Kube, expected: int, approve: bool) -> None:
        self.kube, self.expected, self.approve = kube, expected, approve
        self.signed: dict[str, float] = {}
        self.done = threading.Event()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._approved: set[str] = set()
        self._pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="approver")

    def on_event(self, event: kube_.WatchEvent) -> None:
        now = time.perf_counter()
        obj = event.obj
        name = csr_api.name(obj)
        if (obj.get("status") or {}).get("certificate"):
            with self._lock:
                self.signed.setdefault(name, now)
                if len(self.signed) >= self.expected:
                    self.done.set()
            return
        if (
            self.approve
            and event.type == "ADDED"
            and not (obj.get("status") or {}).get("conditions")
        ):
            with self._lock:
                if name in self._approved:
                    return
                self._approved.add(name)
            self._pool.submit(self._approve, obj)

    def _approve(self, obj: dict[str, Any]) -> None:
        cond = csr_api.condition(
            "Approved", "BenchApproved", "approved by bench.csr", dt.datetime.now(dt.UTC)
        )
        csr_api.add_condition(self.kube, obj, cond)

    def run(self) -> None:
        self.kube.watch_forever(csr_api.PATH, csr_api.WATCH_PARAMS, self.on_event, self.stop)

    def close(self) -> None:
        self.stop.set()
        self._pool.shutdown(wait=True)


def phase(
    plane: cluster.ControlPlane,
    requests: list[tuple[str, str, bytes]],
    creators: int,
    approve: bool,
    rate: float = 0.0,
) -> dict[str, float]:
    admin = kube_.connect(str(plane.admin_kubeconfig))
    node_names = sorted({n for n, _, _ in requests})
    for i, node in enumerate(node_names):
        signer_env.make_node(admin, node, [("InternalIP", _ip(i)), ("Hostname", node)])
    clients = {n: signer_env.node_kube(plane, n) for n in node_names}
    observer = _Observer(admin, len(requests), approve)
    watcher = threading.Thread(target=observer.run, name="observer")
    watcher.start()
    time.sleep(1.0)  # the watch is established before the first create
    created: dict[str, float] = {}
    start = time.perf_counter()

    def create(index: int, item: tuple[str, str, bytes]) -> None:
        if rate:  # paced: the i-th request is due i/rate seconds after the first
            time.sleep(max(0.0, start + index / rate - time.perf_counter()))
        node, name, pem = item
        created[name] = time.perf_counter()
        signer_env.create_csr(clients[node], name, pem)

    with concurrent.futures.ThreadPoolExecutor(creators) as pool:
        list(pool.map(create, range(len(requests)), requests))
    last_created = time.perf_counter()
    finished = observer.done.wait(WAIT_SECONDS)
    observer.close()
    watcher.join()
    for kube in (*clients.values(), admin):
        kube.close()
    if not finished:
        raise RuntimeError(
            f"only {len(observer.signed)} of {len(requests)} signed in {WAIT_SECONDS}s"
        )
    latencies = sorted(observer.signed[n] - created[n] for n in created)
    elapsed = max(observer.signed.values()) - min(created.values())
    return {
        "created": len(created) / (last_created - min(created.values())),
        "count": len(latencies),
        "seconds": elapsed,
        "throughput": len(latencies) / elapsed,
        "median": statistics.median(latencies),
        "p99": latencies[int(0.99 * (len(latencies) - 1))],
        "max": latencies[-1],
    }


def kucero_phase(
    directory: Path,
    requests: list[tuple[str, str, bytes]],
    creators: int,
    workers: int,
    rate: float,
) -> dict[str, float]:
    with signer_env.control_plane(directory / "kucero-plane", False) as plane:
        ca_cert = pki.load_cert((plane.pki / "ca.crt").read_bytes())
        ca_key = pki.load_key((plane.pki / "ca.key").read_bytes())
        root, *_ = signer_env.host_root_with_ca(directory / "host", (ca_cert, ca_key))
        argv = [
            sys.executable,
            "-m",
            "bench.csr",
            "--serve-signer",
            str(plane.admin_kubeconfig),
            str(root),
            str(workers),
        ]
        server = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "ready"
            return phase(plane, requests, creators, approve=False, rate=rate)
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(60)


def kcm_phase(
    directory: Path, requests: list[tuple[str, str, bytes]], creators: int, rate: float
) -> dict[str, float]:
    with signer_env.control_plane(directory / "kcm-plane", True) as plane:
        return phase(plane, requests, creators, approve=True, rate=rate)


def serve_signer(kubeconfig: str, root: str, workers: int) -> int:
    """The kucero side, as its own process: sign until stdin closes."""
    from reconciler.run import signer as signer_

    kube = kube_.connect(kubeconfig)
    loaded = signer_env.load_policy()
    running = signer_.Signer(root, workers=workers)
    running.start(kube, lambda: loaded)
    print("ready", flush=True)
    sys.stdin.read()
    running.stop()
    decisions = {
        (s.labels["decision"], s.labels["reason"]): s.value
        for s in next(iter(running.metrics.csr_decisions.collect())).samples
    }
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"kucero signer process: {decisions}, CPU {usage.ru_utime + usage.ru_stime:.2f}s, "
        f"peak RSS {usage.ru_maxrss // 1024} MiB",
        file=sys.stderr,
    )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.csr", description=__doc__.split("\n")[0])
    p.add_argument("--csrs", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--creators", type=int, default=16, help="threads creating CSRs (default 16)")
    p.add_argument("--workers", type=int, default=8, help="kucero's signer threads (default 8)")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="create this many CSRs per second (default 0: as fast as the API server takes them)",
    )
    p.add_argument(
        "--serve-signer", nargs=3, metavar=("KUBECONFIG", "ROOT", "WORKERS"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.serve_signer:
        return serve_signer(args.serve_signer[0], args.serve_signer[1], int(args.serve_signer[2]))
    requests = _requests(args.nodes, args.csrs)
    with tempfile.TemporaryDirectory(prefix="bench-csr-") as tmp:
        results = {
            "kucero (run/signer.py)": kucero_phase(
                Path(tmp), requests, args.creators, args.workers, args.rate
            ),
            "kube-controller-manager csrsigning (bench approves)": kcm_phase(
                Path(tmp), requests, args.creators, args.rate
            ),
        }
    print(
        f"bench.csr: {args.csrs} kubelet-serving CSRs (ECDSA P-256) from {args.nodes} node users, "
        f"{args.creators} creator threads, "
        f"{f'paced at {args.rate:g}/s' if args.rate else 'unpaced (a burst)'}; {os.cpu_count()} CPUs, load average before: "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    print(
        f"{'signer':<55} {'created/s':>9} {'signed/s':>9} {'median ms':>10} {'p99 ms':>8} "
        f"{'max ms':>8} {'total s':>8}"
    )
    for title, r in results.items():
        print(
            f"{title:<55} {r['created']:>9.1f} {r['throughput']:>9.1f} {r['median'] * 1000:>10.0f} "
            f"{r['p99'] * 1000:>8.0f} {r['max'] * 1000:>8.0f} {r['seconds']:>8.2f}"
        )
    ours, peer = results.values()
    print(
        f"\nkucero / KCM: throughput {ours['throughput'] / peer['throughput']:.2f}x, "
        f"median latency {ours['median'] / peer['median']:.2f}x, p99 {ours['p99'] / peer['p99']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
