"""`make bench` keeps working: one run of each measurement, numbers printed (not judged)."""

from __future__ import annotations

import subprocess
import sys


def test_bench_prints_every_measurement() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--runs", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for key_type in ("rsa", "ecdsa"):
        for what in (
            "node --once (process)",
            "node --once (in-process)",
            "key generations",
            "check-expiration",
            "plan",
        ):
            assert f"{key_type}: " in done.stdout and what in done.stdout
    assert "peak RSS" in done.stdout
