"""``make bench``: how long one offline pass takes on a full control-plane tree, and why.

Measured on fresh copies of one tree whose every kubeadm certificate and kubeconfig is due, plus
the kubelet repairs (the worst case of a pass):

* ``node --once`` as operators run it (a new process: interpreter start-up included), wall
  time median of N runs, and its peak RSS;
* the same pass in-process (``node.run_once``), i.e. without start-up;
* ``check-expiration`` and ``plan`` (read-only) as processes.

The peer is the cost floor of the work itself: generating the same number of keys of the same
type with ``cryptography`` directly (RSA key generation dominates a renewal). The ratio
pass / floor says how much our overhead (parsing, signing, backup, fsync, journaling) adds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reconciler import execute, fabricate, host, kubeadm, node, policy

DUE = tuple((name, dt.timedelta(days=5)) for name in kubeadm.NAMES)
POLICY = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\nspec: {kubeadm: {restart: none}, kubelet: {restart: none}}\n"
RENEWED_KEYS = len(kubeadm.NAMES)  # one new key per renewed certificate


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.0f} ms"


def _run(argv: list[str]) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout.decode()}{done.stderr.decode()}")
    return elapsed, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def bench(key_type: str, runs: int, work: Path) -> list[tuple[str, str, str]]:
    template = work / f"template-{key_type}"
    fabricate.build(
        template, dt.datetime.now(dt.UTC), fabricate.Options(key_type=key_type, expiries=DUE)
    )
    policy_file = work / "policy.yaml"
    policy_file.write_text(POLICY)
    kucero = [sys.executable, "-m", "reconciler"]

    def fresh(i: int) -> Path:
        root = work / f"{key_type}-{i}"
        if root.exists():
            shutil.rmtree(root)
        shutil.copytree(template, root, symlinks=True)
        return root

    process, rss = [], 0
    for i in range(runs):
        root = fresh(i)
        elapsed, peak = _run(
            [*kucero, "node", "--once", "--host-root", str(root), "--policy", str(policy_file)]
        )
        process.append(elapsed)
        rss = max(rss, peak)

    spec = policy.resolve(policy.load(POLICY), {})
    settings = execute.Settings(kubelet_restart_command=("true",))
    in_process = []
    for i in range(runs):
        root = fresh(i)
        began = time.perf_counter()
        result = node.run_once(
            host.Host(root), spec, None, lambda: dt.datetime.now(dt.UTC), settings
        )
        in_process.append(time.perf_counter() - began)
        assert result.converged, result.failures

    root = fresh(0)
    check = [_run([*kucero, "check-expiration", "--host-root", str(root)])[0] for _ in range(runs)]
    planned = [
        _run([*kucero, "plan", "--host-root", str(root), "--policy", str(policy_file)])[0]
        for _ in range(runs)
    ]

    floor = []
    for _ in range(runs):
        began = time.perf_counter()
        for _ in range(RENEWED_KEYS):
            fabricate.new_key(key_type)
        floor.append(time.perf_counter() - began)
    floor_s = statistics.median(floor)
    # ECDSA keys cost microseconds: there the pass is all parsing, backup and fsync.
    ratio = (
        f"{statistics.median(in_process) / floor_s:.1f}x the key-generation floor"
        if floor_s > 0.005
        else "floor < 5 ms: the pass is I/O (backup, fsync)"
    )
    return [
        (
            f"{key_type}: node --once (process)",
            _median_ms(process),
            f"peak RSS {rss / 1024:.0f} MiB",
        ),
        (
            f"{key_type}: node --once (in-process)",
            _median_ms(in_process),
            ratio,
        ),
        (
            f"{key_type}: peer: {RENEWED_KEYS} key generations",
            _median_ms(floor),
            "cryptography alone",
        ),
        (f"{key_type}: check-expiration (process)", _median_ms(check), ""),
        (f"{key_type}: plan (process)", _median_ms(planned), ""),
    ]


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument("--runs", type=int, default=5, help="runs per measurement (median reported)")
    args = p.parse_args()
    startup = [_run([sys.executable, "-c", "import reconciler.cli"])[0] for _ in range(args.runs)]
    rows = [("start-up: python -c 'import reconciler.cli'", _median_ms(startup), "")]
    with tempfile.TemporaryDirectory(prefix="kucero-bench-") as tmp:
        for key_type in ("rsa", "ecdsa"):
            rows += bench(key_type, args.runs, Path(tmp))
    width = max(len(r[0]) for r in rows)
    print(
        f"kucero bench: {RENEWED_KEYS} certificates due + kubelet repairs, median of {args.runs} runs, {os.cpu_count()} CPUs"
    )
    for name, value, note in rows:
        print(f"  {name.ljust(width)}  {value}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
