"""``python -m bench.cluster``: what ``kucero controller`` costs with 20 Nodes.

On a control plane of its own (etcd + kube-apiserver from tests/controlplane, no controller
manager, so nothing else writes), with ``--nodes`` Nodes (every other one labelled into an
override) and the policy ConfigMap, it measures:

* convergence: time from a ConfigMap edit to every Node carrying the new revision in
  ``kucero.io/desired`` (the controller's half of the loop), median of ``--edits`` edits;
* memory: resident set (VmRSS) and peak (VmHWM) of the controller process once idle;
* API requests while idle, from the API server's own ``apiserver_request_total``: counted over
  ``--idle`` seconds with the controller running, minus the same window without it (the API
  server makes requests of its own: its identity Lease, ...), per hour, by verb and resource.
  A standby controller is measured the same way.

The peer in the ratios is client-go's leader election at its defaults (a GET and an UPDATE of
the Lease every 2 s: 3600 requests an hour), which is what a Go controller built on it pays.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from reconciler.cluster import configmaps, kube, nodes
from reconciler.decide import desired
from tests.controlplane import cluster, processes

HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
OVERRIDE = "  overrides:\n  - nodeSelector: {matchLabels: {pool: edge}}\n    spec: {kubeadm: {renewBefore: 1440h}}\n"
CLIENT_GO_LEADER_PER_HOUR = 2 * 3600 / 2  # GET + UPDATE every retryPeriod (2 s)


def policy_text(hours: int) -> str:
    return HEAD + f"spec:\n  kubeadm: {{renewBefore: {hours}h}}\n" + OVERRIDE


def request_counts(plane: cluster.ControlPlane) -> collections.Counter[tuple[str, str]]:
    pki = plane.pki
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(f"{plane.server}/metrics", context=context, timeout=10) as r:
        text = r.read().decode()
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(",")
        )
        key = (labels.get("verb", "").strip('"'), labels.get("resource", "").strip('"'))
        counts[key] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def idle_rate(
    plane: cluster.ControlPlane, seconds: float
) -> tuple[float, collections.Counter[tuple[str, str]]]:
    before = request_counts(plane)
    time.sleep(seconds)
    after = request_counts(plane)
    after.subtract(before)
    after[("GET", "")] -= 1  # our own scrape of /metrics
    return seconds, +after


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def all_at(door: kube.Kube, revision: str, count: int) -> bool:
    seen = 0
    for node in nodes.list_all(door):
        value = nodes.annotation(node, desired.ANNOTATION) or ""
        if f'"revision":"{revision}"' in value:
            seen += 1
    return seen == count


def start_controller(
    plane: cluster.ControlPlane, identity: str, log: Path
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "reconciler",
        "controller",
        f"--kubeconfig={plane.admin_kubeconfig}",
        "--metrics-addr=0",
        f"--leader-election-identity={identity}",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def per_hour(counts: collections.Counter[tuple[str, str]], seconds: float) -> float:
    return sum(counts.values()) * 3600 / seconds


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster")
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--edits", type=int, default=5)
    p.add_argument("--idle", type=float, default=60.0, help="seconds per idle window")
    args = p.parse_args()
    from reconciler.decide import policy

    work = Path(tempfile.mkdtemp(prefix="kucero-bench-cluster-"))
    guard = processes.guard(work)
    plane = cluster.start(work)
    door = kube.connect(str(plane.admin_kubeconfig))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(args.nodes):
            labels = {"pool": "edge"} if i % 2 else {}
            door.create(nodes.PATH, {"metadata": {"name": f"bench-{i:02d}", "labels": labels}})
        configmaps.create_or_replace(
            door, "kube-system", "kucero-policy", {"policy.yaml": policy_text(100)}
        )
        time.sleep(5)  # let the API server's own start-up writes settle
        base_s, base = idle_rate(plane, args.idle)

        leader = start_controller(plane, "bench-leader", work / "leader.log")
        procs.append(leader)
        first = policy.load(policy_text(100), "policy.yaml").revision
        began = time.monotonic()
        while not all_at(door, first, args.nodes):
            time.sleep(0.05)
        print(f"start-up to {args.nodes} nodes written: {time.monotonic() - began:.2f}s")

        times = []
        for edit in range(args.edits):
            text = policy_text(200 + edit)
            revision = policy.load(text, "policy.yaml").revision
            began = time.monotonic()
            configmaps.create_or_replace(
                door, "kube-system", "kucero-policy", {"policy.yaml": text}
            )
            while not all_at(door, revision, args.nodes):
                time.sleep(0.02)
            times.append(time.monotonic() - began)
        print(
            f"ConfigMap edit -> all {args.nodes} nodes' desired: median {statistics.median(times):.3f}s "
            f"(min {min(times):.3f}, max {max(times):.3f}, {args.edits} edits)"
        )
        time.sleep(3)
        mem = memory_kib(leader.pid)
        print(
            f"controller (leader) memory: RSS {mem['VmRSS'] / 1024:.1f} MiB, peak {mem['VmHWM'] / 1024:.1f} MiB"
        )

        lead_s, lead = idle_rate(plane, args.idle)
        lead.subtract(base)
        lead_rate = per_hour(lead, lead_s)
        print(
            f"idle API requests, leader: {lead_rate:.0f}/h "
            f"(client-go leader election alone: {CLIENT_GO_LEADER_PER_HOUR:.0f}/h, "
            f"ratio {lead_rate / CLIENT_GO_LEADER_PER_HOUR:.2f})"
        )
        for (verb, resource), n in sorted((+lead).items()):
            print(f"  {verb:6} {resource or '-':12} {n * 3600 / lead_s:7.0f}/h")

        standby = start_controller(plane, "bench-standby", work / "standby.log")
        procs.append(standby)
        time.sleep(3)
        both_s, both = idle_rate(plane, args.idle)
        both.subtract(base)
        both.subtract(lead)
        rate = per_hour(both, both_s)
        print(f"idle API requests, standby: {rate:.0f}/h")
        mem = memory_kib(standby.pid)
        print(f"controller (standby) memory: RSS {mem['VmRSS'] / 1024:.1f} MiB")
        print(f"baseline (API server alone): {per_hour(base, base_s):.0f}/h over {base_s:.0f}s")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        door.close()
        assert guard.stdin is not None
        guard.stdin.close()
        guard.wait(60)
        cluster.stop(work)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KUCERO_LOG_LEVEL", "WARNING")
    sys.exit(main())
