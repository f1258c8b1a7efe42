"""node.linger: which process is the old static pod's, and when it is killed.

A real child process stands for the lingering component; a directory shaped like ``/proc``
says what its command line and cgroup are (the real ones are the test runner's).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.node import linger

ARGV = ["kube-apiserver", "--secure-port=6443"]


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


def fake_proc(root: Path, pid: int, argv: list[str], cgroup: str) -> Path:
    entry = root / str(pid)
    entry.mkdir(parents=True)
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (entry / "cgroup").write_text(cgroup)
    return entry


def sleeper(child: subprocess.Popen[bytes], entry: Path) -> object:
    def sleep(seconds: float) -> None:
        if child.poll() is not None:
            shutil.rmtree(entry, ignore_errors=True)  # /proc forgets a reaped process
        time.sleep(seconds)

    return sleep


def test_old_process_still_there_after_the_drain_is_killed(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    entry = fake_proc(tmp_path, child.pid, ARGV, "4:memory:/kubepods/burstable/pod1/abc\n")
    gone, note = linger.wait_gone(
        "kube-apiserver", ARGV, 0.2, time.monotonic() + 10, sleeper(child, entry), str(tmp_path)
    )  # type: ignore[arg-type]
    assert gone
    assert note and f"pid {child.pid}" in note
    assert child.wait(5) == -9


def test_process_outside_a_pod_cgroup_is_never_a_candidate(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    fake_proc(tmp_path, child.pid, ARGV, "4:memory:/user.slice\n")
    assert linger.wait_gone("kube-apiserver", ARGV, 0, time.monotonic() + 1, time.sleep,
                            str(tmp_path)) == (True, None)  # fmt: skip
    assert child.poll() is None


def test_process_with_another_command_line_is_never_a_candidate(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    fake_proc(tmp_path, child.pid, [*ARGV, "--v=2"], "4:memory:/kubepods/pod1/abc\n")
    assert linger.lingering(ARGV, str(tmp_path)) == []
    assert child.poll() is None


def test_process_that_outlives_the_deadline_is_reported_not_killed_before_the_drain(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    fake_proc(tmp_path, child.pid, ARGV, "4:memory:/kubepods/pod1/abc\n")
    gone, note = linger.wait_gone(
        "kube-apiserver", ARGV, 60, time.monotonic() + 0.3, time.sleep, str(tmp_path)
    )
    assert not gone
    assert note and "still running" in note
    assert child.poll() is None


def test_etcd_is_never_killed(tmp_path: Path, child: subprocess.Popen[bytes]) -> None:
    fake_proc(tmp_path, child.pid, ["etcd"], "4:memory:/kubepods/pod1/abc\n")
    gone, _ = linger.wait_gone("etcd", ["etcd"], 0, time.monotonic() + 0.5, time.sleep,
                               str(tmp_path))  # fmt: skip
    assert not gone
    assert child.poll() is None


def test_stop_in_place_sends_sigterm_to_the_pods_process_only(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    fake_proc(tmp_path, child.pid, ["etcd"], "4:memory:/kubepods/pod1/abc\n")
    assert linger.stop_in_place(["etcd"], str(tmp_path)) == [child.pid]
    assert child.wait(5) == -15
