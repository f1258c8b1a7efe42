"""Runs each measured command as a fresh process: wall time, time to its first line, peak RSS.

A child's ``ru_maxrss`` starts from the memory of the process that spawned it (the kernel
carries the spawner's high-water mark over the exec), so the spawner must be small: a
``python -I -S`` launcher fed one command a line, not the bench, which has imported the
reconciler and cryptography. ``RUSAGE_CHILDREN`` only keeps the largest child so far, so each
child's own figure is read with ``os.wait4``.

The child's standard output is a pipe the launcher drains, so it can tell when the first line
arrived (start-up as a user sees it); both outputs are also copied to a file for the error
message when a command fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = """
import json, os, sys, time
null = os.open(os.devnull, os.O_RDONLY)
for line in sys.stdin:
    argv, out = json.loads(line)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    r, w = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, fd, 2)]
    began = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    os.close(w)
    first = None
    while chunk := os.read(r, 65536):
        if first is None and b"\\n" in chunk:
            first = time.perf_counter() - began
        os.write(fd, chunk)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - began
    os.close(r)
    os.close(fd)
    print(json.dumps([elapsed, first, usage.ru_maxrss, os.waitstatus_to_exitcode(status)]), flush=True)
"""


@dataclasses.dataclass
class Measure:
    """Seconds per run, with each process run's first-line time and peak RSS (KiB)."""

    seconds: list[float] = dataclasses.field(default_factory=list)
    first_line: list[float] = dataclasses.field(default_factory=list)
    rss_kib: list[int] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "median_s": round(self.median, 5),
            "min_s": round(min(self.seconds), 5),
            "max_s": round(max(self.seconds), 5),
            "runs_s": [round(s, 5) for s in self.seconds],
        }
        if self.first_line:
            out["first_line_median_s"] = round(statistics.median(self.first_line), 5)
        if self.rss_kib:
            out["peak_rss_mib"] = round(max(self.rss_kib) / 1024, 1)
        return out


class Launcher:
    def __init__(self, work: Path) -> None:
        self.output = work / "output.txt"
        self.child = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(os.environ),
            text=True,
        )

    def run(self, argv: list[str], into: Measure) -> None:
        """Run ``argv`` (absolute program path) and add its figures to ``into``; it must exit 0."""
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(json.dumps([argv, str(self.output)]) + "\n")
        self.child.stdin.flush()
        elapsed, first, rss, code = json.loads(self.child.stdout.readline())
        if code != 0:
            raise SystemExit(f"{' '.join(argv)}: exit {code}\n{self.output.read_text()}")
        into.seconds.append(elapsed)
        into.first_line.append(first if first is not None else elapsed)
        into.rss_kib.append(rss)

    def close(self) -> None:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.close()
        self.child.stdout.close()
        self.child.wait()
