"""``python -m bench.nodes`` (``make bench-nodes``): the GitOps loop at the scale of a
small cluster, on a real kube-apiserver and etcd (tests/controlplane, ``make testbin`` first).

It starts its own control plane, creates ``--nodes`` Nodes (3 control-plane, the rest workers),
a fabricated tree and one ``kucero node`` process for each, and one ``kucero controller``, then
measures:

* **convergence**: the time from a ConfigMap edit to every node reporting the new revision in
  ``kucero.io/status`` (``--edits`` edits, median / min / max); target < 10 s for 20 nodes;
* **idle API requests per node per hour**, from the API server's own
  ``apiserver_request_total`` by verb and resource: the increase over ``--window`` seconds of
  quiet with the node processes running, minus the same window's increase without them (the
  API server's own leases and informers, the controller), on the resources a node uses (nodes,
  leases, events), divided by the nodes and scaled to an hour. The whole difference is printed
  by verb and resource, so what is left out can be seen. A watch is counted
  when it ends, so the node's one watch (server-side timeout 30-33 min, jittered) adds about
  1.9 requests an hour that a short window cannot see: that figure is added, computed from the
  timeout, and printed apart. Target <= 2;
* **RSS** of each idle ``kucero node`` and of the controller (``VmRSS``, median / max); target
  < 64 MiB for a node.

The peer in the same run is the API server's own background traffic (the baseline window).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import cluster as controller_bench
from reconciler import config, flags
from reconciler.cluster import configmaps, kube, nodes, watching
from reconciler.decide import desired, policy, status
from tests.controlplane import cluster, processes
from tests.integration import nodesim

POLICY = nodesim.HEAD + "spec:\n  checkInterval: 1h\n  kubeadm: {restart: none, renewBefore: %dh}\n"
CONTROL_PLANES = 3
# what a node reconciler reads or writes: its Node, the slot Leases, Events
KUCERO_RESOURCES = frozenset({"nodes", "leases", "events"})
# what a controller started with default flags fills in (the revision depends on it)
DEFAULTS = config.settings_from(flags.parser().parse_args(["plan"])).policy_defaults


def requests_total(plane: cluster.ControlPlane) -> collections.Counter[tuple[str, str]]:
    """apiserver_request_total by (verb, resource), minus this scrape itself."""
    counts = controller_bench.request_counts(plane)
    counts[("GET", "")] -= 1
    return counts


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def all_at(door: kube.Kube, names: list[str], revision: str) -> bool:
    listed = door.list(nodes.PATH)["items"]
    seen = {
        n["metadata"]["name"]: status.decode(nodes.annotation(n, status.ANNOTATION)) for n in listed
    }
    return all(
        (s := seen.get(n)) is not None
        and s.revision == revision
        and s.phase == status.Phase.CONVERGED
        for n in names
    )


def revision_of(door: kube.Kube, name: str) -> str:
    """The revision the controller wrote on one Node (so the bench needs no policy maths)."""
    value = nodes.annotation(nodes.get(door, name), desired.ANNOTATION)
    return str(json.loads(value or "{}").get("revision", ""))


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.nodes")
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--edits", type=int, default=3)
    p.add_argument("--window", type=float, default=120.0, help="seconds of each idle window")
    p.add_argument("--dir", type=Path, default=None)
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kucero-bench-", dir=args.dir))
    plane_dir = base / "controlplane"
    guard = processes.guard(plane_dir)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        plane = cluster.start(plane_dir)
        door = kube.connect(str(plane.admin_kubeconfig))
        ns = "kucero-bench"
        door.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        configmaps.create_or_replace(door, ns, "kucero-policy", {"policy.yaml": POLICY % 720})
        controller = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "controller",
                f"--kubeconfig={plane.admin_kubeconfig}",
                f"--ds-namespace={ns}",
                f"--policy-configmap={ns}/kucero-policy",
                "--metrics-addr=127.0.0.1:0",
            ],
            stdout=(base / "controller.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        procs.append(controller)
        time.sleep(3)
        before = requests_total(plane)
        time.sleep(args.window)
        baseline = requests_total(plane)
        baseline.subtract(before)

        names, sims = [], []
        for i in range(args.nodes):
            control_plane = i < CONTROL_PLANES
            name = f"{'cp' if control_plane else 'w'}-{i}"
            labels = nodesim.CONTROL_PLANE if control_plane else {}
            door.create(nodes.PATH, {"metadata": {"name": name, "labels": labels}})
            root = nodesim.tree(base / "nodes", name, control_plane)
            sim = nodesim.start(
                nodesim.SimNode(name, root, control_plane), plane.admin_kubeconfig, ns
            )
            assert sim.proc is not None
            procs.append(sim.proc)
            names.append(name)
            sims.append(sim)
        began = time.monotonic()
        while not all_at(door, names, revision_of(door, names[0])):
            if time.monotonic() - began > 180:
                raise SystemExit("the fleet did not converge in 180 s")
            time.sleep(0.2)
        print(f"{args.nodes} nodes up and converged in {time.monotonic() - began:.1f}s")

        times = []
        for edit in range(args.edits):
            text = POLICY % (721 + edit)
            rev = policy.load(text, "policy.yaml", DEFAULTS).revision
            configmaps.create_or_replace(door, ns, "kucero-policy", {"policy.yaml": text})
            began = time.monotonic()
            while True:
                if all_at(door, names, rev):
                    break
                if time.monotonic() - began > 120:
                    raise SystemExit("edit not converged in 120 s")
                time.sleep(0.05)
            times.append(time.monotonic() - began)
            time.sleep(2)

        time.sleep(5)
        before = requests_total(plane)
        time.sleep(args.window)
        with_nodes = requests_total(plane)
        with_nodes.subtract(before)
        extra = {k: with_nodes[k] - baseline[k] for k in set(with_nodes) | set(baseline)}
        extra = {k: v for k, v in extra.items() if v}
        # the API server's own informers (secrets, pods, clusterroles, ...) end their watches
        # every 5-10 min: that noise is in both windows, but not equally; kucero's nodes only
        # ever touch these resources
        # A watch is counted when it ends: the nodes' own watch ends every 30-33 min and is
        # added below from that timeout; a WATCH ending inside the window is the API server's
        # own informers (the Node authorizer watches nodes too), so only other verbs count here.
        delta = sum(
            n
            for (verb, resource), n in extra.items()
            if resource in KUCERO_RESOURCES and verb != "WATCH"
        )
        per_node_hour = max(0.0, delta) / args.nodes * 3600 / args.window
        watch_per_hour = 3600 / (
            watching.WATCH_TIMEOUT_SECONDS * (1 + watching.WATCH_TIMEOUT_JITTER / 2)
        )
        node_rss = [rss_mib(s.proc.pid) for s in sims if s.proc is not None]
        print()
        print(f"convergence after a ConfigMap edit, {args.nodes} nodes, {args.edits} edits:")
        print(
            f"  median {statistics.median(times):.2f}s  min {min(times):.2f}s  "
            f"max {max(times):.2f}s  (target < 10 s)"
        )
        print(f"idle API requests over {args.window:.0f}s windows (apiserver_request_total):")
        print(
            f"  without nodes {sum(baseline.values())}, with {args.nodes} nodes "
            f"{sum(with_nodes.values())}; difference by verb/resource: "
            + (
                ", ".join(
                    f"{v} {r or '(non-resource)'} {n:+d}" for (v, r), n in sorted(extra.items())
                )
                or "none"
            )
        )
        print(
            f"  per node per hour, non-watch requests on {'/'.join(sorted(KUCERO_RESOURCES))}: "
            f"{per_node_hour:.2f} measured + {watch_per_hour:.2f} "
            f"watch renewals (30-33 min timeout) = {per_node_hour + watch_per_hour:.2f}"
            "  (target <= 2)"
        )
        print("RSS of idle processes (VmRSS):")
        print(
            f"  kucero node: median {statistics.median(node_rss):.1f} MiB  "
            f"max {max(node_rss):.1f} MiB  (target < 64 MiB)"
        )
        print(f"  kucero controller ({args.nodes} nodes): {rss_mib(controller.pid):.1f} MiB")
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        assert guard.stdin is not None
        guard.stdin.close()
        guard.wait(60)
        cluster.stop(plane_dir)
        if os.environ.get("KUCERO_BENCH_KEEP") is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
