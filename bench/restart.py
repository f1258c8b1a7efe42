"""Part of ``make bench``: one full control-plane renewal with ``manifest-move`` restarts.

A fabricated stacked-etcd tree (ECDSA P-256, so key generation is negligible) with every
kubeadm certificate and kubeconfig due, its four components run by the kubelet stand-in of the
tests (real processes serving real TLS, a 50 ms static-pod-directory check). One in-process
pass renews the eleven files and restarts kube-apiserver, kube-controller-manager,
kube-scheduler and etcd one at a time, each verified over TLS. Reported: the pass's wall time,
the restarts' share of it, and of that the time spent waiting (for the component to stop
answering, then to serve the new certificate) as opposed to kucero's own work.

On a real node the waiting is longer: the kubelet notices a removed manifest within its 20 s
file-check period, and a real kube-apiserver takes seconds to become ready; the stand-in makes
the waits as short as they can be, so what remains is the floor of the restart path.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

from reconciler import fabricate
from reconciler.decide import policy
from reconciler.model import kubeadm
from reconciler.node import execute
from reconciler.node import host as host_
from reconciler.run import once
from tests.controlplane import kubeadm_node, kubelet_standin

COMPONENTS = list(kubeadm.COMPONENTS)
POLICY = (
    "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
    "spec: {kubeadm: {restart: manifest-move, healthTimeout: 30s}, "
    "kubelet: {fixKubeletConf: false, rotateClientCertificates: false, "
    "rotateServerCertificates: false}}\n"
)


def one_pass(directory: Path) -> dict[str, float]:
    now = dt.datetime.now(dt.UTC)
    root = directory / f"node-{time.monotonic_ns()}"
    due = tuple((name, dt.timedelta(days=5)) for name in kubeadm.NAMES)
    fabricate.build(
        root,
        now,
        fabricate.Options(
            key_type="ecdsa", expiries=due, ports=tuple(kubeadm_node.free_ports().items())
        ),
    )
    spec = policy.resolve(policy.load(POLICY), {})
    with kubelet_standin.KubeletStandin(root) as standin:
        standin.wait_serving(COMPONENTS)
        started = time.monotonic()
        result = once.run_once(
            host_.Host(root),
            spec,
            None,
            lambda: dt.datetime.now(dt.UTC),
            execute.Settings(("true",)),
        )
        wall = time.monotonic() - started
    restarts = [r.restart for r in result.results if r.restart is not None]
    if [r["component"] for r in restarts] != COMPONENTS or not result.converged:
        raise SystemExit(f"bench restart: the pass did not converge: {result.failures}")
    out = {"pass": wall}
    out["restarts"] = sum(float(r["seconds"]) for r in restarts)  # type: ignore[arg-type]
    out["waiting"] = sum(float(r["waited"]) for r in restarts)  # type: ignore[arg-type]
    for r in restarts:
        out[str(r["component"])] = float(r["seconds"])  # type: ignore[arg-type]
    return out


def report(runs: int) -> tuple[str, dict[str, float]]:
    """The lines ``make bench`` prints and the medians it writes to its JSON."""
    with tempfile.TemporaryDirectory(prefix="kucero-bench-restart-") as tmp:
        samples = [one_pass(Path(tmp)) for _ in range(runs)]
    med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    lines = [
        f"restart: one full renewal (11 files) + manifest-move restart of the 4 components "
        f"against the kubelet stand-in, median of {runs} run(s)",
        f"  pass {med['pass']:.2f} s; restarts {med['restarts']:.2f} s "
        f"({med['restarts'] / med['pass']:.0%} of the pass), of which waiting for the "
        f"components {med['waiting']:.2f} s ({med['waiting'] / med['restarts']:.0%} of the "
        f"restarts); kucero's own work in the restarts {med['restarts'] - med['waiting']:.2f} s",
        "  per component: " + ", ".join(f"{c} {med[c]:.2f} s" for c in COMPONENTS),
    ]
    return "\n".join(lines), {k: round(v, 3) for k, v in med.items()}


if __name__ == "__main__":
    print(report(3)[0])
