"""Leave the machine as the e2e node found it (REALNODE.md lists what a run touches).

``snapshot`` records, before anything changes, which of the touched paths existed, the
``cni0`` link, and ``net.ipv4.ip_forward``. ``teardown`` stops the supervisor (and so the
kubelet), removes every pod through the CRI, runs ``kubeadm reset``, stops containerd and its
shims, unmounts what is left under the kubelet's and containerd's directories, removes the
paths that did not exist before, the cgroup trees, the iptables chains the kubelet and CNI
made, the ``cni0`` bridge, and restores ``ip_forward``. Each step runs even when one before it
failed; without a snapshot (a crash before it was written, a reboot) the machine is assumed
to have been fresh.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# Paths a run creates; removed at teardown unless they existed before.
TOUCHED = (
    "/etc/kubernetes",
    "/var/lib/kubelet",
    "/var/lib/etcd",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/etc/cni",
    "/run/containerd",
    "/run/runc",
    "/run/netns",
    "/var/log/pods",
    "/var/log/containers",
    "/run/kubernetes",
)
# Our own CNI config, removed even when /etc/cni existed before.
OWN_FILES = ("/etc/cni/net.d/10-kucero-e2e.conflist",)
MOUNT_ROOTS = ("/var/lib/kubelet", "/run/containerd", "/var/lib/containerd", "/run/netns")
CHAIN_PREFIXES = ("KUBE-", "CNI-")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def snapshot() -> dict[str, object]:
    return {
        "existed": [p for p in TOUCHED if os.path.lexists(p)],
        # existing but empty directories (a package's /var/lib/containerd): emptied again
        "empty": [p for p in TOUCHED if os.path.isdir(p) and not os.listdir(p)],
        "ipForward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "cni0": Path("/sys/class/net/cni0").exists(),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stop(pid: int, expect: str, timeout: float = 20.0) -> bool:
    """SIGTERM ``pid`` if it still runs ``expect`` (not a reused PID), SIGKILL after
    ``timeout``; True when it was running."""
    if not pid or not _alive(pid) or expect not in _cmdline(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and expect in _cmdline(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid) and expect in _cmdline(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def _shims(socket: str) -> list[int]:
    """containerd shims serving ``socket``'s containerd: they outlive it by design."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = _cmdline(int(entry.name))
            if "containerd-shim" in cmd.split(" ")[0] and socket in cmd:
                out.append(int(entry.name))
    return out


def _quiet(argv: list[str], timeout: float = 120) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{argv[0]}: {e}"
    return (done.stdout + done.stderr).strip()


def _unmount_under(roots: tuple[str, ...]) -> int:
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if any(target == r or target.startswith(r + "/") for r in roots):
            mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        _quiet(["umount", "-l", target])
    return len(mounts)


def _remove_cgroups(name: str) -> int:
    """rmdir ``name`` under every hierarchy, leaves first (a cgroup is removed by rmdir)."""
    removed = 0
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
                removed += 1
    return removed


def _remove_chains() -> list[str]:
    """Rules jumping to, then the chains of, the kubelet (KUBE-*) and CNI (CNI-*), v4 and v6."""
    done = []
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = _quiet([tool, "-w", "-t", table, "-S"]).splitlines()
            chains = [r.split()[1] for r in rules if r.startswith("-N ")]
            ours = [c for c in chains if c.startswith(CHAIN_PREFIXES)]
            if not ours:
                continue
            for rule in rules:
                words = rule.split()
                if (
                    words[:1] == ["-A"]
                    and words[1] not in ours
                    and "-j" in words
                    and words[words.index("-j") + 1] in ours
                ):
                    _quiet([tool, "-w", "-t", table, "-D", *words[1:]])
            for chain in ours:
                _quiet([tool, "-w", "-t", table, "-F", chain])
            for chain in ours:
                _quiet([tool, "-w", "-t", table, "-X", chain])
            done.append(f"{tool} {table}: removed {', '.join(ours)}")
    return done


def teardown(state: dict[str, object], bin_dir: Path | None, socket: str) -> list[str]:
    done: list[str] = []
    before = state.get("before") or {"existed": [], "ipForward": "0", "cni0": False}
    assert isinstance(before, dict)

    def step(what: str, fn: Callable[[], object]) -> None:
        try:
            result = fn()
        except Exception as e:  # every step runs; say what failed
            done.append(f"{what}: FAILED: {e}")
            return
        if result:
            done.append(f"{what}: {result}" if result is not True else what)

    step(
        "stopped the kubelet's supervisor",
        lambda: _stop(int(state.get("supervisor") or 0), "supervise.py"),
    )
    crictl = str(bin_dir / "crictl") if bin_dir and (bin_dir / "crictl").exists() else None
    containerd = int(state.get("containerd") or 0)
    if crictl and Path(socket).exists() and _alive(containerd):
        step("removed every pod", lambda: _quiet([crictl, "-r", f"unix://{socket}", "rmp", "-fa"]))
    if bin_dir and Path("/etc/kubernetes").exists():
        step(
            "kubeadm reset",
            lambda: (
                _quiet([str(bin_dir / "kubeadm"), "reset", "-f", f"--cri-socket=unix://{socket}"])
                and "done"
            ),
        )
    step("stopped containerd", lambda: _stop(containerd, "containerd"))
    for pid in _shims(socket):
        step(f"stopped shim {pid}", lambda pid=pid: _stop(pid, "containerd-shim", timeout=5))
    step("unmounted", lambda: _unmount_under(MOUNT_ROOTS) and "lazily")
    for path in OWN_FILES:
        if os.path.lexists(path):
            step(f"removed {path}", lambda path=path: os.unlink(path) or True)
    existed = set(before.get("existed", []))
    for path in TOUCHED:
        if path not in existed and os.path.lexists(path):
            step(f"removed {path}", lambda path=path: _rmtree(path))
    for path in before.get("empty", []):
        for entry in sorted(Path(path).iterdir()) if os.path.isdir(path) else ():
            step(f"removed {entry}", lambda entry=entry: _rmtree(str(entry)))
    step("removed cgroups kubepods", lambda: _remove_cgroups("kubepods"))
    for line in _remove_chains():
        done.append(line)
    if not before.get("cni0") and Path("/sys/class/net/cni0").exists():
        step("deleted cni0", lambda: _quiet(["ip", "link", "del", "cni0"]) or True)
    forward = str(before.get("ipForward", "0"))
    if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != forward:
        step(
            f"net.ipv4.ip_forward={forward}",
            lambda: _quiet(["sysctl", "-qw", f"net.ipv4.ip_forward={forward}"]) or True,
        )
    return done


def _rmtree(path: str) -> bool:
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    else:
        shutil.rmtree(path)
    return True
