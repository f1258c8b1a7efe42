"""Node trees made by the real kubeadm, laid out so both tools can renew a copy with no cluster.

Each copy is a root directory: ``etc/kubernetes`` as ``kubeadm init phase certs all`` and
``kubeadm init phase kubeconfig all`` made it, plus ``kubeadm.yaml`` (the configuration
``kubeadm certs renew`` reads, so it never asks a cluster for it). kucero gets the copy as
``--host-root``, kubeadm as ``--rootfs`` (it chroots there, so the bench runs as root).

Every copy is synced to disk before it is measured (``copy``).

The certificates are made valid for 10 days (``certificateValidityPeriod: 240h``): all eleven
are inside kucero's default renewal window (30 days), so ``kucero node --once`` renews the same
eleven that ``kubeadm certs renew all`` renews unconditionally. Both renew to one year.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.controlplane import binaries, kubeadm_tree

ALGORITHMS = {"rsa": "RSA-2048", "ecdsa": "ECDSA-P256"}
# kubeadm_tree.config's last document is the ClusterConfiguration: a field appended lands there.
_MADE_VALID = "certificateValidityPeriod: 240h\n"
_RENEWED_VALID = "certificateValidityPeriod: 8760h\n"
RENEW_CONFIG = "/kubeadm.yaml"  # inside each copy


def kubeadm() -> str:
    return binaries.path("kubeadm")


def missing() -> str | None:
    """Why the bench cannot run, or None."""
    if "kubeadm" in binaries.missing():
        return f"kubeadm is not built in {binaries.directory()}: run `make testbin` (needs Go)"
    return None


def build(root: Path, key_type: str) -> Path:
    """A template root whose ``etc/kubernetes`` the real kubeadm made; returns ``root``."""
    algorithm = ALGORITHMS[key_type]
    etc = root / "etc/kubernetes"
    (etc / "pki").mkdir(parents=True)
    made = kubeadm_tree.config(etc / "pki", algorithm=algorithm)
    assert made.rstrip().splitlines()[-1].startswith("networking:"), "config layout changed"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="kubeadm-") as cfg:
        cfg.write(made + _MADE_VALID)
        cfg.flush()
        _run([kubeadm(), "init", "phase", "certs", "all", "--config", cfg.name])
        kubeconfigs = ["kubeconfig", "all", "--config", cfg.name, "--kubeconfig-dir", str(etc)]
        _run([kubeadm(), "init", "phase", *kubeconfigs])
    renew = kubeadm_tree.config("/etc/kubernetes/pki", algorithm=algorithm) + _RENEWED_VALID
    (root / RENEW_CONFIG.lstrip("/")).write_text(renew)
    return root


def copy(template: Path, root: Path) -> Path:
    """A fresh copy, written back to disk before it is measured: on a node, kubeadm's files
    have been at rest for months. Unsynced, the copy's dirty pages would be flushed by the
    first fsync of whichever tool syncs (kucero does; kubeadm never does) and billed to it."""
    shutil.copytree(template, root, symlinks=True)
    os.sync()
    return root


def renew_all(root: Path) -> list[str]:
    return [kubeadm(), "--rootfs", str(root), "certs", "renew", "all", "--config", RENEW_CONFIG]


def check_expiration(root: Path) -> list[str]:
    return [
        *(kubeadm(), "--rootfs", str(root), "certs", "check-expiration"),
        *("--config", RENEW_CONFIG),
    ]


def version() -> str:
    return _run([kubeadm(), "version", "-o", "short"]).stdout.strip()


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    return done
