"""``make bench``: what one offline pass costs on a full control-plane node, against a peer.

The tree is the worst case of a pass: every kubeadm certificate and kubeconfig due (11 renewals)
plus both kubelet repairs, built by ``reconciler.fabricate`` with RSA-2048 keys (as kubeadm
makes them) and again with ECDSA P-256. Each measurement is the median of ``--runs`` runs,
with min and max to show the spread, on a fresh copy of the tree whenever the run changes it:

* ``node --once`` as an operator runs it: a new process, wall time, and its peak RSS (the
  ``ru_maxrss`` of that child, read with ``os.wait4`` because ``RUSAGE_CHILDREN`` only keeps
  the largest child so far);
* the same pass in-process (``once.run_once``), i.e. without interpreter start-up;
* ``node --once`` on the converged tree (the pass every ``checkInterval`` pays);
* ``check-expiration`` and ``plan`` on the due tree, as processes.

The peer, measured in the same run, is the floor of the work itself: generating the same
number of keys of the same type with ``cryptography`` directly. ``pass / floor`` says how much
parsing, signing, backup, journaling and fsync add on top; for ECDSA (keys cost microseconds)
it is large by construction and only says that the pass is I/O. Start-up is reported apart:
``python -c pass`` and ``python -c 'import reconciler.cli'``.

Results depend on the filesystem (every write is fsynced): ``--dir`` picks where the trees go.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cryptography
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from reconciler import cli, fabricate
from reconciler.decide import plan, policy
from reconciler.model import actions, kubeadm, nodespec
from reconciler.node import execute, observe
from reconciler.node import host as host_
from reconciler.run import once

POLICY = Path(__file__).resolve().parent.parent / "policies" / "demo.yaml"  # restart: none
DUE = tuple((name, dt.timedelta(days=5)) for name in kubeadm.NAMES)  # renewBefore is 30 days
RENEWED_KEYS = len(kubeadm.NAMES)  # one new key per renewed certificate or kubeconfig
KUCERO = (sys.executable, "-m", "reconciler")
ENV = dict(os.environ)


@dataclasses.dataclass
class Measure:
    seconds: list[float] = dataclasses.field(default_factory=list)
    rss_kib: list[int] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


# Runs each measured command and reports its wall time and ru_maxrss. A child's ru_maxrss
# starts from the memory of the process that spawned it (the kernel carries the spawner's
# high-water mark over the exec), so the spawner must be small: this launcher, not the
# bench, which has imported the reconciler and cryptography (35 MiB).
LAUNCHER = """
import json, os, sys, time
null = os.open(os.devnull, os.O_RDONLY)
for line in sys.stdin:
    argv, out = json.loads(line)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    redirect = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)]
    began = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=redirect)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - began
    os.close(fd)
    print(json.dumps([elapsed, usage.ru_maxrss, os.waitstatus_to_exitcode(status)]), flush=True)
"""


class Launcher:
    def __init__(self, work: Path) -> None:
        self.output = work / "output.txt"
        self.child = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=ENV,
            text=True,
        )

    def run(self, argv: list[str]) -> tuple[float, int]:
        """Run ``argv``; return its wall time (s) and peak RSS (KiB). Exit status must be 0."""
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(json.dumps([argv, str(self.output)]) + "\n")
        self.child.stdin.flush()
        elapsed, rss, code = json.loads(self.child.stdout.readline())
        if code != 0:
            raise SystemExit(f"{' '.join(argv)}: exit {code}\n{self.output.read_text()}")
        return elapsed, rss

    def close(self) -> None:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.close()
        self.child.stdout.close()
        self.child.wait()


def repeat(launcher: Launcher, runs: int, prepare: Callable[[], list[str]]) -> Measure:
    measure = Measure()
    for _ in range(runs):
        elapsed, rss = launcher.run(prepare())
        measure.seconds.append(elapsed)
        measure.rss_kib.append(rss)
    return measure


def new_key(key_type: str) -> object:
    """The peer: what a renewal's new key costs with nothing around it."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def node_once(root: Path) -> list[str]:
    return [
        *KUCERO,
        *("node", "--once", "--host-root", str(root), "--policy", str(POLICY)),
        *("--kubelet-restart-command", "true"),
    ]


def spec_as_the_cli_resolves_it(root: Path) -> nodespec.NodeSpec:
    args = cli.parser().parse_args(["node", "--once", "--host-root", str(root)])
    defaults = cli.settings_from(args).policy_defaults
    return policy.resolve(policy.load(POLICY.read_bytes(), str(POLICY), defaults), {})


def bench(
    launcher: Launcher, key_type: str, runs: int, work: Path
) -> list[tuple[str, Measure, str]]:
    template = fabricate.build(
        work / f"template-{key_type}",
        dt.datetime.now(dt.UTC),
        fabricate.Options(key_type=key_type, expiries=DUE),
    )
    copies = itertools.count()
    spec = spec_as_the_cli_resolves_it(template)

    def fresh() -> Path:
        root = work / f"{key_type}-{next(copies)}"
        shutil.copytree(template, root, symlinks=True)
        return root

    planned = plan.plan(
        spec,
        observe.observe(host_.Host(template), None),
        dt.datetime.now(dt.UTC),
    )
    renewals = planned.of(actions.ActionKind.RENEW)
    assert len(renewals) == RENEWED_KEYS, [a.target for a in renewals]

    floor = Measure()
    for _ in range(runs):
        began = time.perf_counter()
        for _ in range(RENEWED_KEYS):
            new_key(key_type)
        floor.seconds.append(time.perf_counter() - began)

    renewed: list[Path] = []

    def renew_a_fresh_copy() -> list[str]:
        renewed.append(fresh())
        return node_once(renewed[-1])

    cold = repeat(launcher, runs, renew_a_fresh_copy)
    idle = repeat(launcher, runs, lambda: node_once(renewed[-1]))
    after = plan.plan(
        spec,
        observe.observe(host_.Host(renewed[-1]), None),
        dt.datetime.now(dt.UTC),
    )
    assert not after.actions, after.actions

    settings = execute.Settings(kubelet_restart_command=("true",))
    warm = Measure()
    for _ in range(runs):
        root = fresh()
        began = time.perf_counter()
        result = once.run_once(
            host_.Host(root), spec, None, lambda: dt.datetime.now(dt.UTC), settings
        )
        warm.seconds.append(time.perf_counter() - began)
        assert result.converged, result.failures

    due = fresh()
    check = repeat(launcher, runs, lambda: [*KUCERO, "check-expiration", "--host-root", str(due)])
    planning = repeat(
        launcher, runs, lambda: [*KUCERO, "plan", "--host-root", str(due), "--policy", str(POLICY)]
    )
    for root in work.glob(f"{key_type}-*"):
        shutil.rmtree(root)

    bits = "RSA-2048" if key_type == "rsa" else "ECDSA P-256"
    return [
        (f"peer: {RENEWED_KEYS} {bits} key generations, cryptography alone", floor, "= floor"),
        ("node --once (process): cold start", cold, times(cold.median / floor.median)),
        ("node --once (in-process): run_once", warm, times(warm.median / floor.median)),
        ("node --once (process): nothing due", idle, ""),
        ("check-expiration (process)", check, ""),
        ("plan (process)", planning, ""),
    ]


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


def times(ratio: float) -> str:
    return f"{ratio:.1f}x floor" if ratio < 100 else f"{ratio:.0f}x floor"


def table(sections: list[tuple[str, list[tuple[str, Measure, str]]]]) -> str:
    header = ("", "median ms", "min-max ms", "peak RSS", "vs peer")
    lines = []
    for title, rows in sections:
        lines.append([title, "", "", "", ""])
        for name, m, ratio in rows:
            rss = f"{max(m.rss_kib) / 1024:.0f} MiB" if m.rss_kib else ""
            spread = f"{ms(min(m.seconds))}-{ms(max(m.seconds))}"
            lines.append([f"  {name}", ms(m.median), spread, rss, ratio])
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(5)]
    out = []
    for i, row in enumerate([header, *lines]):
        cells = [str(row[0]).ljust(widths[0])] + [
            str(c).rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=7, help="runs per measurement (default 7)")
    p.add_argument("--dir", help="where to build the trees (default: the system temp dir)")
    p.add_argument("--key-types", default="rsa,ecdsa", help="comma-separated: rsa, ecdsa")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be at least 1")
    key_types = args.key_types.split(",")
    if not set(key_types) <= {"rsa", "ecdsa"}:
        p.error("--key-types: rsa, ecdsa")

    with tempfile.TemporaryDirectory(prefix="kucero-bench-", dir=args.dir) as tmp:
        launcher = Launcher(Path(tmp))
        try:
            interpreter = repeat(launcher, args.runs, lambda: [sys.executable, "-c", "pass"])
            imports = repeat(
                launcher, args.runs, lambda: [sys.executable, "-c", "import reconciler.cli"]
            )
            sections = [
                (
                    "start-up",
                    [
                        ("python -c pass", interpreter, ""),
                        ("python -c 'import reconciler.cli'", imports, ""),
                    ],
                )
            ]
            for key_type in key_types:
                title = (
                    "rsa: RSA-2048, as kubeadm makes them"
                    if key_type == "rsa"
                    else "ecdsa: ECDSA P-256"
                )
                sections.append((title, bench(launcher, key_type, args.runs, Path(tmp))))
        finally:
            launcher.close()

    print(
        f"kucero bench: {RENEWED_KEYS} certificates/kubeconfigs due + 2 kubelet repairs; "
        f"median of {args.runs} run(s), a fresh tree for every run that renews"
    )
    print(
        f"python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{os.cpu_count()} CPUs, trees under {os.path.dirname(tmp)}\n"
    )
    print(table(sections))
    print()
    for title, rows in sections[1:]:
        floor, cold, warm = (rows[i][1] for i in range(3))
        beyond = warm.median - floor.median
        noise = max(floor.seconds) - min(floor.seconds)
        print(
            f"{title.split(':')[0]}: start-up {ms(imports.median)} ms (of which importing the reconciler "
            f"{ms(imports.median - interpreter.median)} ms) = {imports.median / cold.median:.0%} "
            f"of a cold pass; the in-process pass beyond its key generation (parse, sign, "
            f"back up, journal, fsync) {ms(beyond)} ms"
            + (f", within the floor's own spread ({ms(noise)} ms)" if abs(beyond) < noise else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
