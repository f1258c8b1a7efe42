"""The real node for the e2e tests: brought up once per session, always torn down.

Needs root and what ``tests/e2e/build.sh`` makes (``make e2e`` runs it first). With ``CI``
set, anything missing fails the run; otherwise the tests skip with the reason.
``KUCERO_E2E_KEEP=1`` leaves the node up after the session (``python -m tests.e2e.node down``
removes it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import kubeadm, node

_failed: list[str] = []


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"e2e: {reason} (CI is set: failing instead of skipping)")
    pytest.skip(f"e2e: {reason}")


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    if os.geteuid() != 0:
        _unavailable("the real node needs root")
    try:
        found = node.testbin()
    except (SystemExit, OSError) as e:
        _unavailable(f"binaries missing ({e}); run tests/e2e/build.sh")
    for need in ("kubelet", "kube-scheduler", "crictl", "e2e/kucero.image"):
        if not (found / need).exists():
            _unavailable(f"{found / need} missing; run tests/e2e/build.sh")
    return found


@pytest.fixture(scope="session")
def cluster(bin_dir: Path) -> Iterator[dict[str, object]]:
    """The node, Ready; its recorded state (PIDs, timings). A failed bring-up is not retried
    for every test (pytest would run a failing session fixture again for each)."""
    if _failed:
        pytest.fail(f"e2e: the node did not come up: {_failed[0]}")
    try:
        state = node.up(bin_dir, kubeadm.Config())
    except BaseException as e:
        _failed.append(repr(e))
        for line in node.down(bin_dir):
            print("e2e teardown:", line)
        raise
    try:
        yield state
    finally:
        if not os.environ.get("KUCERO_E2E_KEEP"):
            for line in node.down(bin_dir):
                print("e2e teardown:", line)
