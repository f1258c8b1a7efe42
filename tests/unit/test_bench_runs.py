"""`make bench` keeps working: one run of each measurement, figures printed and written to
JSON, never judged (timings are not assertions). It compares with the real kubeadm, so it
needs the binary from `make testbin`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.controlplane import binaries


@pytest.mark.kubeadm
def test_bench_quick_mode_prints_every_measurement_and_writes_json(tmp_path: Path) -> None:
    binaries.require("kubeadm")
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for row in (
        "kucero --version",
        "kubeadm version",
        "RSA-2048: 11 renewals",
        "ECDSA-P256: 11 renewals",
        "kubeadm certs renew all (process)",
        "kucero node --once (process)",
        "kucero run_once (in-process)",
        "floor: 11 keys + signatures",
        "kucero check-expiration",
        "peak RSS",
    ):
        assert row in done.stdout, row
    figures = json.loads(out.read_text())
    for key_type in ("rsa", "ecdsa"):
        renew = figures[key_type]["renew"]
        assert renew["kucero"]["median_s"] > 0 and renew["kubeadm"]["median_s"] > 0
        assert renew["kucero"]["peak_rss_mib"] > 0 and renew["ratio"] > 0
        assert figures[key_type]["in_process"]["ratio_to_kubeadm"] > 0
        assert figures[key_type]["floor"]["median_s"] > 0
    assert figures["machine"]["cores"] >= 1
    assert "manifest-move restart of the 4 components" in done.stdout
    assert figures["restart"]["waiting"] > 0 and figures["restart"]["pass"] > 0
