"""The control plane harness by itself: started and stopped by hand, retried on a taken port,
stopped by its guard when the test session dies, and never silently skipped in CI.

Each test here starts its own control plane (about 3 s) in its own directory, apart from the
session's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.controlplane import binaries, cluster, processes

CONTROL_PLANE = ("etcd", "kube-apiserver")
STOP_SECONDS = 30


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    """A control plane's directory, stopped and rid of etcd's 62 MB WAL after the test."""
    yield tmp_path / "cp"
    cluster.stop(tmp_path / "cp")
    shutil.rmtree(tmp_path / "cp" / "etcd", ignore_errors=True)


def controlplane_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.controlplane", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=processes.REPO,
        timeout=cluster.READY_TIMEOUT_SECONDS + 30,
    )


def readyz(directory: Path) -> bytes:
    """GET /readyz with the credentials of ``admin.kubeconfig``, as a user of it would."""
    config = yaml.safe_load((directory / "admin.kubeconfig").read_text())
    user = config["users"][0]["user"]
    context = ssl.create_default_context(
        cafile=config["clusters"][0]["cluster"]["certificate-authority"]
    )
    context.load_cert_chain(user["client-certificate"], user["client-key"])
    server = config["clusters"][0]["cluster"]["server"]
    with urllib.request.urlopen(f"{server}/readyz", context=context, timeout=10) as response:
        return bytes(response.read())


def wait_gone(pids: dict[str, int]) -> list[str]:
    deadline = time.monotonic() + STOP_SECONDS
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [n for n in pids if processes.running(pids[n], binaries.path(n))]
        time.sleep(0.2)
    return alive


@pytest.mark.controlplane
def test_start_and_stop_by_hand_leave_credentials_and_pids(directory: Path) -> None:
    binaries.require(*CONTROL_PLANE)
    started = controlplane_cli("start", "--dir", directory)
    try:
        assert started.returncode == 0, started.stderr
        assert "ready in" in started.stdout
        assert readyz(directory) == b"ok"
        for name in ("admin.kubeconfig", "pki/ca.crt", "pki/ca.key", "pki/sa.key"):
            assert (directory / name).is_file(), name
        pids = {n: int((directory / f"{n}.pid").read_text()) for n in CONTROL_PLANE}
        assert json.loads((directory / "controlplane.json").read_text())["pids"] == pids
        assert all(processes.running(p, binaries.path(n)) for n, p in pids.items())
    finally:
        stopped = controlplane_cli("stop", "--dir", directory)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "stopped: kube-apiserver, etcd"
    assert wait_gone(pids) == []
    assert (directory / "admin.kubeconfig").is_file() and (directory / "etcd").is_dir()
    assert controlplane_cli("stop", "--dir", directory).stdout.strip() == (
        "stopped: nothing was running"
    )


@pytest.mark.controlplane
def test_a_port_taken_before_the_server_binds_it_is_retried(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binaries.require(*CONTROL_PLANE)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real = cluster.free_port
        ports = iter([real(), taken])  # the API server's port, then etcd's (which fails fast)
        monkeypatch.setattr(cluster, "free_port", lambda: next(ports, None) or real())
        plane = cluster.start(directory)
        assert "address already in use" in (directory / "logs/etcd.log").read_text()
        assert processes.running(plane.pids["etcd"], binaries.path("etcd"))


GUARDED = """\
import sys, time
from pathlib import Path
from tests.controlplane import cluster, processes
directory = Path(sys.argv[1])
guard = processes.guard(directory)
cluster.start(directory)
print("up", flush=True)
time.sleep(600)
"""


@pytest.mark.controlplane
def test_guard_stops_the_control_plane_when_the_session_is_killed(directory: Path) -> None:
    binaries.require(*CONTROL_PLANE)
    with subprocess.Popen(
        [sys.executable, "-c", GUARDED, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=processes.REPO,
    ) as session:
        assert session.stdout is not None
        up = session.stdout.readline()
        os.kill(session.pid, signal.SIGKILL)  # no finalizer, no atexit: only the guard is left
    assert up == "up\n"
    assert wait_gone(cluster.load(directory).pids) == []


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        pytest.param(None, pytest.skip.Exception, id="developer-machine-skips"),
        pytest.param("true", pytest.fail.Exception, id="ci-fails"),
        pytest.param("1", pytest.fail.Exception, id="ci-1-fails"),
        pytest.param("false", pytest.fail.Exception, id="ci-set-to-anything-fails"),
        pytest.param("", pytest.fail.Exception, id="ci-set-empty-fails"),
    ],
)
def test_missing_binaries_skip_with_how_to_build_but_fail_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str | None, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("KUCERO_TESTBIN", str(tmp_path))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"kubeadm not built in .*: run `make testbin`"):
        binaries.require("kubeadm")
