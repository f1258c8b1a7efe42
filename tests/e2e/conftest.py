"""The real nodes for the e2e tests: one per test module, brought up for it, always torn down.

Needs root and what ``tests/e2e/build.sh`` makes (``make e2e`` runs it first). With ``CI``
set, anything missing fails the run; otherwise the tests skip with the reason.
Each test module brings up its own node (``bring_up``), torn down after it.
``KUCERO_E2E_KEEP=1`` leaves the last node up after the session (``python -m tests.e2e.node
down`` removes it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane import binaries
from tests.e2e import kubeadm, node

_failed: dict[kubeadm.Config, str] = {}
_kept: list[kubeadm.Config] = []


def _unavailable(reason: str) -> None:
    binaries.gate(f"e2e: {reason}")


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
def bring_up(bin_dir: Path) -> Callable[[kubeadm.Config], AbstractContextManager[dict[str, Any]]]:
    """``with bring_up(config) as state``: a node made with ``config``, Ready, torn down after
    (one node at a time: each test module brings up its own). A bring-up that failed is not
    tried again for every test (pytest would run a failing fixture again for each)."""

    @contextlib.contextmanager
    def up(config: kubeadm.Config) -> Iterator[dict[str, Any]]:
        if config in _failed:
            pytest.fail(f"e2e: the node did not come up: {_failed[config]}")
        while _kept:  # KUCERO_E2E_KEEP keeps only the session's last node
            _kept.pop()
            for line in node.down(bin_dir):
                print("e2e teardown:", line)
        try:
            state = node.up(bin_dir, config)
        except BaseException as e:
            _failed[config] = repr(e)
            for line in node.down(bin_dir):
                print("e2e teardown:", line)
            raise
        try:
            yield state
        finally:
            if os.environ.get("KUCERO_E2E_KEEP"):
                _kept.append(config)
            else:
                for line in node.down(bin_dir):
                    print("e2e teardown:", line)

    return up


@pytest.fixture(scope="module")
def cluster(
    bring_up: Callable[[kubeadm.Config], AbstractContextManager[dict[str, Any]]],
) -> Iterator[dict[str, Any]]:
    """The node with kubeadm's ten-year CAs and 48 h leaves; its recorded state (PIDs,
    timings)."""
    with bring_up(kubeadm.Config()) as state:
        yield state
