"""`make bench` keeps working for the CSR benchmark: a small run prints both signers and the
ratio (numbers are printed, not judged)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.controlplane import binaries

pytestmark = pytest.mark.controlplane


def test_bench_csr_prints_both_signers_and_the_ratio() -> None:
    binaries.require("etcd", "kube-apiserver", "kube-controller-manager")
    done = subprocess.run(
        [sys.executable, "-m", "bench.csr", "--csrs", "20", "--nodes", "4"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kucero (run/signer.py)" in done.stdout
    assert "kube-controller-manager csrsigning" in done.stdout
    assert "kucero / KCM: throughput" in done.stdout
