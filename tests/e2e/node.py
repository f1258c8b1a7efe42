"""A real single-node kubeadm cluster on this machine, brought up and torn down without a trace.

``up`` starts containerd (a config of our own, the machine's /etc/containerd untouched),
imports the locally made images, writes a bridge CNI config, runs the real ``kubeadm init``
(``kubeadm.Config``: v1beta4 with short leaf and, optionally, CA validity) and starts the real
kubelet under ``supervise.py`` (no systemd here), then waits for the Node to be Ready.

``down`` undoes all of it from what ``up`` recorded in ``STATE`` before it changed anything
(PIDs, which paths existed, ``ip_forward``), and still works without that record (after a
reboot or a crash before the record was written): it then assumes the machine was fresh.
Every process it ends is one this harness started, found by the PID it recorded or, for
containerd's shims, as a child process of that containerd's socket.

    python -m tests.e2e.node up      # bring the node up, print how to use it
    python -m tests.e2e.node down    # tear it down (idempotent)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e import cleanup, kubeadm

REPO = Path(__file__).resolve().parents[2]
STATE = Path("/var/tmp/kucero-e2e")
# The logs of the last node, kept by `down` for a look after a failed run.
LOGS = Path(tempfile.gettempdir()) / "kucero-e2e-logs"
SOCKET = "/run/containerd/containerd.sock"
CNI_CONF = Path("/etc/cni/net.d/10-kucero-e2e.conflist")
POD_SUBNET = "10.244.0.0/24"  # the bridge's host-local range; no overlay, one node
ADMIN_CONF = Path("/etc/kubernetes/admin.conf")
READY_TIMEOUT_SECONDS = 240.0
# kubeadm's fixed ports on the node (API server, etcd, kubelet, controller manager, scheduler)
NODE_PORTS = (6443, 2379, 2380, 2381, 10248, 10250, 10257, 10259)
PORTS_TIMEOUT_SECONDS = 300.0
# the ones the node binds on 127.0.0.1 (the others on its address: tests/e2e/kubeadm.py)
LOOPBACK_PORTS = (2381, 10248)
# containerd and the kubelet's supervisor outlive the call that starts them (and the
# session: `down` ends them by PID); holding their Popen objects keeps Python from warning,
# when one is collected, that a child it never waited for still runs
_DETACHED: list[subprocess.Popen[bytes]] = []


def testbin() -> Path:
    """The test-binary cache directory, as tests/e2e/build.sh filled it (not built here)."""
    out = subprocess.run(
        [str(REPO / "tests/controlplane/build.sh")],
        env={**os.environ, "KUCERO_TESTBIN_ONLY": "kubelet kube-scheduler"},
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    if out[:3] != ["testbin:", "cached", "in"]:
        raise SystemExit("e2e: the node's binaries are not built: run tests/e2e/build.sh")
    return Path(out[3])


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


def _wait(what: str, ok: object, timeout: float, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not ok():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"e2e: {what} not within {timeout:g}s (logs in {STATE})")
        time.sleep(poll)


def node_ip() -> str:
    """The machine's own address on its default-route interface."""
    route = _run(["ip", "-4", "route", "get", "1.1.1.1"]).stdout.split()
    return route[route.index("src") + 1]


def node_name() -> str:
    """The hostname: it resolves locally (/etc/hosts), so preflight asks no DNS server."""
    return os.uname().nodename


def containerd_config(bin_dir: Path, pause: str) -> str:
    return f"""version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj to the kubelet's -998
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
"""


def cni_config() -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "kucero-e2e",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]]},
                },
                {"type": "loopback"},
            ],
        },
        indent=1,
    )


def kubectl(bin_dir: Path, *args: str, check: bool = True, **kw: object) -> str:
    argv = [str(bin_dir / "kubectl"), f"--kubeconfig={ADMIN_CONF}", *args]
    done = subprocess.run(argv, text=True, capture_output=True, check=False, **kw)  # type: ignore[call-overload]
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return str(done.stdout)


def node_ready(bin_dir: Path) -> bool:
    out = kubectl(
        bin_dir, "get", "node", node_name(), "-o",
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}', check=False, timeout=10,
    )  # fmt: skip
    return out.strip() == "True"


def up(bin_dir: Path, config: kubeadm.Config) -> dict[str, object]:
    """Bring the node up; returns the recorded state. Refuses when a cluster is already here."""
    if os.geteuid() != 0:
        raise SystemExit("e2e: the real node needs root")
    if Path("/etc/kubernetes").exists() or STATE.exists():
        raise SystemExit(
            "e2e: /etc/kubernetes or /var/tmp/kucero-e2e exists: a node is up (or a run "
            "crashed); run `python -m tests.e2e.node down` first"
        )
    wait_ports_free()
    STATE.mkdir(parents=True)
    state: dict[str, object] = {"before": cleanup.snapshot(), "started": time.time()}
    _save(state)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)

    images = sorted((bin_dir / "e2e").glob("*.oci.tar"))
    pause = next(i for i in kubeadm.image_names(bin_dir) if "/pause:" in i)
    (STATE / "containerd.toml").write_text(containerd_config(bin_dir, pause))
    with (STATE / "containerd.log").open("ab") as log:
        proc = subprocess.Popen(
            ["containerd", "--config", str(STATE / "containerd.toml")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    _DETACHED.append(proc)
    state["containerd"] = proc.pid
    _save(state)
    _wait("containerd's socket", lambda: Path(SOCKET).exists(), 30)
    for archive in images:
        import_image(archive)

    CNI_CONF.parent.mkdir(parents=True, exist_ok=True)
    CNI_CONF.write_text(cni_config())
    (STATE / "kubeadm.yaml").write_text(config.render(node_name(), node_ip(), SOCKET))
    t = time.monotonic()
    with (STATE / "kubeadm-init.log").open("ab") as log:
        init = subprocess.Popen(
            ["kubeadm", "init", f"--config={STATE / 'kubeadm.yaml'}",
             "--skip-phases=addon/coredns,addon/kube-proxy", "-v=1"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        # kubeadm writes the kubelet's config and flags, then waits for it: start it then.
        _wait(
            "kubeadm's kubelet config",
            lambda: Path("/var/lib/kubelet/kubeadm-flags.env").exists() or init.poll() is not None,
            120,
        )
        state["supervisor"] = start_kubelet(bin_dir, env)
        _save(state)
        if init.wait(timeout=300) != 0:
            raise RuntimeError(f"e2e: kubeadm init failed: see {STATE / 'kubeadm-init.log'}")
    state["kubeadmInitSeconds"] = round(time.monotonic() - t, 1)
    _wait("the Node Ready", lambda: node_ready(bin_dir), READY_TIMEOUT_SECONDS, poll=1)
    state["readySeconds"] = round(time.monotonic() - t, 1)
    _save(state)
    return state


def _listeners(ports: tuple[int, ...]) -> list[str]:
    """Listeners that would take a port from the node: on ``ports`` at the node's address or
    all addresses, or on loopback for the ports the node binds there."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=False).stdout
    found = []
    ip = node_ip()
    for line in out.splitlines():
        local = line.split()[3]
        addr, port = local.rsplit(":", 1)
        on_loopback = addr in ("127.0.0.1", "[::1]")
        if int(port) in ports and (not on_loopback or int(port) in LOOPBACK_PORTS or addr == ip):
            found.append(f"{local} {line.split()[-1]}")
    return found


def wait_ports_free() -> None:
    """kubeadm's fixed ports must be free where the node binds them."""
    _wait(
        f"ports {', '.join(map(str, NODE_PORTS))} free ({_listeners(NODE_PORTS)})",
        lambda: not _listeners(NODE_PORTS), PORTS_TIMEOUT_SECONDS,
    )  # fmt: skip


def import_image(archive: Path) -> None:
    """Make an image tarball present in the kubelet's containerd namespace."""
    _run(["ctr", "-n", "k8s.io", "images", "import", "--platform", "linux/amd64", str(archive)])


def start_kubelet(bin_dir: Path, env: dict[str, str]) -> int:
    supervisor = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("supervise.py")),
         str(bin_dir / "kubelet"), str(STATE)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )  # fmt: skip
    _DETACHED.append(supervisor)
    return supervisor.pid


def load() -> dict[str, object]:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return dict(json.loads((STATE / "state.json").read_text()))
    return {}


def _save(state: dict[str, object]) -> None:
    tmp = STATE / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(STATE / "state.json")


def down(bin_dir: Path | None) -> list[str]:
    """Tear the node down and restore what ``up`` changed; returns what was done. Idempotent,
    and each step runs even when an earlier one failed."""
    state = load()
    done = cleanup.teardown(state, bin_dir, SOCKET)
    if STATE.exists():
        shutil.rmtree(LOGS, ignore_errors=True)
        LOGS.mkdir(parents=True)
        for log in STATE.glob("*.log"):
            shutil.copy(log, LOGS)
        done.append(f"kept the logs in {LOGS}")
        shutil.rmtree(STATE)
        done.append(f"removed {STATE}")
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description="bring the e2e kubeadm node up or down")
    ap.add_argument("command", choices=("up", "down"))
    ap.add_argument("--certificate-validity", default=kubeadm.Config.certificate_validity)
    ap.add_argument("--ca-validity", default=kubeadm.Config.ca_validity)
    args = ap.parse_args()
    bin_dir = testbin()
    if args.command == "down":
        for line in down(bin_dir):
            print("e2e:", line)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        state = up(bin_dir, kubeadm.Config(args.certificate_validity, args.ca_validity))
    except BaseException:
        print(f"e2e: bring-up failed; logs in {STATE}; tearing down", file=sys.stderr)
        for line in down(bin_dir):
            print("e2e:", line, file=sys.stderr)
        raise
    print(f"e2e: node {node_name()} Ready after {state['readySeconds']}s")
    print(f"  export KUBECONFIG={ADMIN_CONF} PATH={bin_dir}:$PATH")
    print(f"  logs: {STATE}/{{containerd,kubelet,kubeadm-init}}.log")
    print("  down: python -m tests.e2e.node down")


if __name__ == "__main__":
    main()
