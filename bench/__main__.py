"""``make bench``: kucero against ``kubeadm certs renew all``, on identical trees, in one run.

For each key type kubeadm offers by default or as an option (RSA-2048, ECDSA-P256), the real
kubeadm (the test control plane's cached binary) makes one node tree; every measured run works
on a fresh copy of it (see ``bench/trees.py``). Measured, medians of ``--runs`` runs:

* the pair: ``kucero node --once`` and ``kubeadm certs renew all``, as processes, alternating
  (who goes first alternates too), each renewing all eleven certificates and kubeconfigs with
  new keys. The ratio is the median of the per-pair ratios, so a slow moment of the machine
  hits both sides of a pair;
* the same pass in-process (``once.run_once``), which is what the daemon pays for a renewal,
  also on a copy in tmpfs (``/dev/shm``), where fsync is free: the pass apart from the disk;
* the cost floor: the same eleven key generations (with kucero's parallelism:
  ``keys.new_keys_like``) and eleven certificate signatures (``pki.renew``), nothing else;
* ``node --once`` on the converged tree, ``check-expiration`` against kubeadm's, ``plan``;
* start-up: time to the first line of output of ``python -c print()``, ``kucero --version``
  and ``kubeadm version``; every process row also shows its first line and peak RSS.

Every kucero process is the wheel of this checkout installed in a venv of its own, as operators
get it (``bench/installed.py``), not the development venv's editable install, whose import hook
costs every process about 12 ms (shown as its own start-up row).

After the runs, kucero plans on both tools' results: nothing left to renew on either, so the
two did the same work. Timings are printed, written to ``bench/results/latest.json`` (``--json``)
and never asserted. ``--quick`` (one run) is the smoke test ``make test`` runs. Every write is
fsynced, so the figures depend on the filesystem: ``--dir`` picks where the trees go.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import cryptography

from bench import installed, report, restart, trees
from bench.launcher import Launcher, Measure
from reconciler import config, flags
from reconciler.decide import pki, plan, policy
from reconciler.model import actions, kubeadm, nodespec
from reconciler.node import execute, keys, observe
from reconciler.node import host as host_
from reconciler.run import once

HERE = Path(__file__).resolve().parent
POLICY = HERE.parent / "policies" / "demo.yaml"  # restart: none (no kubelet in a bench tree)
RESULTS = HERE / "results" / "latest.json"
RENEWED = len(kubeadm.NAMES)  # eleven: every kubeadm certificate and kubeconfig
_console_script = Path(sys.executable).with_name("kucero")
# The development venv's console script (an editable install); the process rows run the
# installed wheel (bench/installed.py), this one is shown beside it at start-up.
EDITABLE = (
    [str(_console_script)] if _console_script.exists() else [sys.executable, "-m", "reconciler"]
)


def node_once(kucero: list[str], root: Path) -> list[str]:
    return [
        *kucero,
        *("node", "--once", "--host-root", str(root), "--policy", str(POLICY)),
        *("--kubelet-restart-command", "true"),
    ]


def resolved_spec(root: Path) -> nodespec.NodeSpec:
    args = flags.parser().parse_args(["node", "--once", "--host-root", str(root)])
    defaults = config.settings_from(args).policy_defaults
    return policy.resolve(policy.load(POLICY.read_bytes(), str(POLICY), defaults), {})


def due(spec: nodespec.NodeSpec, root: Path) -> list[str]:
    now = dt.datetime.now(dt.UTC)
    planned = plan.plan(spec, observe.observe(host_.Host(root), None), now)
    return [a.target for a in planned.of(actions.ActionKind.RENEW)]


def floor(template: Path, runs: int) -> Measure:
    """The same key generations and signatures as a pass, with the same parallelism."""
    observed = observe.observe(host_.Host(template), None)
    host = host_.Host(template)
    ca_keys = {ca.name: pki.load_key(host.read(ca.key) or b"") for ca in kubeadm.CAS}
    leaves = [observed.leaves[name] for name in kubeadm.NAMES]
    publics = {
        leaf.name: cast(pki.PublicKey, leaf.cert.public_key()) for leaf in leaves if leaf.cert
    }
    measure = Measure()
    for _ in range(runs):
        now = dt.datetime.now(dt.UTC)
        began = time.perf_counter()
        new = keys.new_keys_like(publics)
        for leaf in leaves:
            assert leaf.cert is not None
            ca_cert = observed.cas[leaf.ca].cert
            assert ca_cert is not None
            pki.renew(
                leaf.cert,
                ca_cert,
                ca_keys[leaf.ca],
                new[leaf.name],
                keys.new_serial(),
                now,
                dt.timedelta(days=365),
            )
        measure.seconds.append(time.perf_counter() - began)
    return measure


def timed_pass(root: Path, spec: nodespec.NodeSpec, settings: execute.Settings) -> float:
    """Seconds of one in-process pass (``once.run_once``) on ``root``, which must converge."""
    began = time.perf_counter()
    result = once.run_once(host_.Host(root), spec, None, lambda: dt.datetime.now(dt.UTC), settings)
    seconds = time.perf_counter() - began
    assert result.converged, result.failures
    return seconds


def in_memory(
    template: Path,
    spec: nodespec.NodeSpec,
    settings: execute.Settings,
    runs: int,
    beside: Callable[[], None],
) -> Measure | None:
    """The in-process pass on copies in tmpfs (``/dev/shm``), where fsync costs nothing: what
    the pass costs apart from the disk's durability, which kubeadm does not pay for. ``beside``
    runs kubeadm once before each pass, for the ratio of pairs."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        return None
    measure = Measure()
    with tempfile.TemporaryDirectory(prefix="kucero-bench-", dir=shm) as tmp:
        for i in range(runs):
            beside()
            root = trees.copy(template, Path(tmp) / f"run-{i}")
            measure.seconds.append(timed_pass(root, spec, settings))
    return measure


def fsync_share(
    root: Path, spec: nodespec.NodeSpec, settings: execute.Settings
) -> tuple[int, Measure]:
    """One more in-process pass, counting and timing its fsyncs (kubeadm makes none: it
    writes each file in place, with no backup and no journal)."""
    real = os.fsync
    spent = Measure()

    def timed(fd: Any) -> None:
        began = time.perf_counter()
        real(fd)
        spent.seconds.append(time.perf_counter() - began)

    os.fsync = timed
    try:
        timed_pass(root, spec, settings)
    finally:
        os.fsync = real
    total = Measure([sum(spent.seconds)])
    return len(spent.seconds), total


def bench_key_type(
    launcher: Launcher, kucero: list[str], key_type: str, runs: int, work: Path
) -> dict[str, object]:
    template = trees.build(work / f"template-{key_type}", key_type)
    spec = resolved_spec(template)
    assert sorted(due(spec, template)) == sorted(kubeadm.NAMES), due(spec, template)
    counter = itertools.count()

    def fresh() -> Path:
        return trees.copy(template, work / f"{key_type}-{next(counter)}")

    ours, theirs = Measure(), Measure()
    for i in range(runs):
        pair = [(node_once(kucero, fresh()), ours), (trees.renew_all(fresh()), theirs)]
        for argv, into in pair if i % 2 == 0 else reversed(pair):
            launcher.run(argv, into)
    renewed_by_us, renewed_by_kubeadm = work / f"{key_type}-0", work / f"{key_type}-1"
    # Fair comparison: after either tool, nothing is left to renew (kubeadm renewed all 11 too).
    assert not due(spec, renewed_by_us) and not due(spec, renewed_by_kubeadm)

    settings = execute.Settings(kubelet_restart_command=("true",))
    # each in-process pass is paired with a kubeadm run just before it, as the processes are:
    # the machine's speed drifts between sections, and a ratio of pairs does not
    in_process, beside, beside_tmpfs = Measure(), Measure(), Measure()
    for _ in range(runs):
        launcher.run(trees.renew_all(fresh()), beside)
        in_process.seconds.append(timed_pass(fresh(), spec, settings))

    on_tmpfs = in_memory(
        template, spec, settings, runs, lambda: launcher.run(trees.renew_all(fresh()), beside_tmpfs)
    )
    fsyncs, fsync_time = fsync_share(fresh(), spec, settings)
    cost_floor = floor(template, runs)
    idle, check, their_check, planning = Measure(), Measure(), Measure(), Measure()
    for _ in range(runs):
        launcher.run(node_once(kucero, renewed_by_us), idle)
        launcher.run([*kucero, "check-expiration", "--host-root", str(template)], check)
        launcher.run(trees.check_expiration(template), their_check)
        planning_argv = [*kucero, "plan", "--host-root", str(template), "--policy", str(POLICY)]
        launcher.run(planning_argv, planning)
    for root in work.glob(f"{key_type}-*"):
        subprocess.run(["rm", "-rf", str(root)], check=True)

    renew_ratio = report.pair_ratio(ours, theirs)
    check_ratio = report.pair_ratio(check, their_check)
    vs_kubeadm = report.pair_ratio(in_process, beside)
    tmpfs_vs = report.pair_ratio(on_tmpfs, beside_tmpfs) if on_tmpfs is not None else None
    vs_floor = in_process.median / cost_floor.median
    threads = min(keys.usable_cores(), RENEWED) if key_type == "rsa" else 1
    section = report.Section(
        f"{trees.ALGORITHMS[key_type]}: {RENEWED} renewals, tree made by kubeadm",
        [
            report.Row("kubeadm certs renew all (process)", theirs, "= 1"),
            report.Row("kucero node --once (process)", ours, f"{renew_ratio:.2f}x kubeadm"),
            report.Row("kucero run_once (in-process)", in_process, f"{vs_kubeadm:.2f}x kubeadm"),
            report.Row(f"  of which fsync ({fsyncs} calls, 1 pass)", fsync_time),
            *(
                [
                    report.Row(
                        "kucero run_once on tmpfs (no disk)",
                        on_tmpfs,
                        f"{tmpfs_vs:.2f}x kubeadm",
                    )
                ]
                if on_tmpfs is not None
                else []
            ),
            report.Row(
                f"floor: {RENEWED} keys + signatures ({threads} thread(s))",
                cost_floor,
                f"pass {vs_floor:.1f}x floor",
            ),
            report.Row("kucero node --once, nothing due", idle),
            report.Row("kubeadm certs check-expiration", their_check, "= 1"),
            report.Row("kucero check-expiration", check, f"{check_ratio:.2f}x kubeadm"),
            report.Row("kucero plan", planning),
        ],
    )
    return {
        "section": section,
        "json": {
            "algorithm": trees.ALGORITHMS[key_type],
            "renew": {
                "kubeadm": theirs.to_dict(),
                "kucero": ours.to_dict(),
                "ratio": round(renew_ratio, 3),
                "ratio_of_medians": round(ours.median / theirs.median, 3),
            },
            "in_process": {**in_process.to_dict(), "ratio_to_kubeadm": round(vs_kubeadm, 3)},
            "in_process_tmpfs": (
                {
                    **on_tmpfs.to_dict(),
                    "ratio_to_kubeadm": round(tmpfs_vs or 0.0, 3),
                }
                if on_tmpfs is not None
                else None
            ),
            "floor": {**cost_floor.to_dict(), "threads": threads},
            "in_process_over_floor": round(vs_floor, 2),
            "fsync_one_pass": {"calls": fsyncs, "seconds": round(fsync_time.median, 5)},
            "idle_pass": idle.to_dict(),
            "check_expiration": {
                "kubeadm": their_check.to_dict(),
                "kucero": check.to_dict(),
                "ratio": round(check_ratio, 3),
            },
            "plan": planning.to_dict(),
        },
    }


# What a pass needs before any of kucero's code runs: the floor of a Python renewal process.
_LIBRARIES = (
    "import argparse, dataclasses, datetime, hashlib, json, logging, yaml, cryptography.x509;"
    " from cryptography.hazmat.primitives.asymmetric import ec, rsa; print()"
)


def startup(launcher: Launcher, kucero: list[str], runs: int) -> report.Section:
    python = str(Path(kucero[0]).with_name("python"))
    bare, site, ours, editable, theirs = Measure(), Measure(), Measure(), Measure(), Measure()
    x509, libraries = Measure(), Measure()
    for _ in range(runs):
        launcher.run([python, "-S", "-c", "print()"], bare)
        launcher.run([python, "-c", "print()"], site)
        launcher.run([python, "-c", "import cryptography.x509; print()"], x509)
        launcher.run([python, "-c", _LIBRARIES], libraries)
        launcher.run([*kucero, "--version"], ours)
        launcher.run([*EDITABLE, "--version"], editable)
        launcher.run([trees.kubeadm(), "version", "-o", "short"], theirs)
    return report.Section(
        "start-up (to the first line of output)",
        [
            report.Row("python -S -c print() (no site)", bare),
            report.Row("python -c print() (the installed wheel's venv)", site),
            report.Row("  + import cryptography.x509 (what any renewal needs)", x509),
            report.Row("  + the libraries node --once needs, nothing of ours", libraries),
            report.Row("kucero --version", ours, f"{report.pair_ratio(ours, theirs):.2f}x kubeadm"),
            report.Row("kucero --version (editable dev install)", editable),
            report.Row("kubeadm version", theirs, "= 1"),
        ],
    )


def machine() -> dict[str, object]:
    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
            model,
        )
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": keys.usable_cores(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "kubeadm": trees.version(),
    }


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=9, help="runs per measurement (default 9)")
    p.add_argument("--quick", action="store_true", help="one run of each (the smoke test)")
    p.add_argument("--dir", help="where to build the trees (default: the system temp dir)")
    p.add_argument("--key-types", default="rsa,ecdsa", help="comma-separated: rsa, ecdsa")
    p.add_argument("--json", default=None, help=f"write figures here (default {RESULTS})")
    args = p.parse_args()
    runs = 1 if args.quick else args.runs
    if runs < 1:
        p.error("--runs must be at least 1")
    key_types = args.key_types.split(",")
    if not set(key_types) <= set(trees.ALGORITHMS):
        p.error("--key-types: rsa, ecdsa")
    if why := trees.missing():
        print(f"bench: {why}", file=sys.stderr)
        return 2

    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="kucero-bench-", dir=args.dir) as tmp:
        kucero = [str(installed.install(Path(tmp) / "installed"))]
        launcher = Launcher(Path(tmp))
        try:
            sections = [startup(launcher, kucero, runs)]
            for key_type in key_types:
                done = bench_key_type(launcher, kucero, key_type, runs, Path(tmp))
                sections.append(done["section"])  # type: ignore[arg-type]
                results[key_type] = done["json"]
        finally:
            launcher.close()
    # real processes serving TLS (the kubelet stand-in): a few runs are enough
    restart_text, results["restart"] = restart.report(min(runs, 3))

    info = machine()
    print(
        f"kucero bench: {RENEWED} certificates/kubeconfigs renewed per pass, median of {runs} "
        f"run(s), a fresh copy of a kubeadm-made tree for every run that renews"
    )
    print(
        f"{info['cpu']}, {info['cores']} cores; python {info['python']}, cryptography "
        f"{info['cryptography']}, kubeadm {info['kubeadm']}; trees under {os.path.dirname(tmp)}\n"
    )
    print(report.table(sections))
    print(f"\n{restart_text}")
    start = sections[0].rows
    document = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "make bench" + (" (--quick)" if args.quick else ""),
        "runs": runs,
        "machine": info,
        "startup": {row.name: row.measure.to_dict() for row in start},
        **results,
    }
    target = Path(args.json) if args.json else (None if args.quick else RESULTS)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(document, indent=1) + "\n")
        print(f"\nfigures written to {target}")
    first = {row.name: statistics.median(row.measure.first_line) for row in start}
    bare, site, x509, libraries, ours, editable = (first[row.name] for row in start[:6])
    print(
        f"\nstart-up to the first line: the bare interpreter {report.ms(bare)} ms; with the "
        f"site of the venv kucero is installed in {report.ms(site)} ms; importing "
        f"cryptography.x509 {report.ms(x509)} ms, and every library a pass needs "
        f"{report.ms(libraries)} ms, before any code of ours; kucero --version "
        f"{report.ms(ours)} ms (the editable dev install: {report.ms(editable)} ms)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
