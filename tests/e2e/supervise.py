"""What systemd's ``Restart=always`` gives the kubelet on a real node, for a machine without
systemd: start the kubelet with the flags kubeadm's drop-in would use, start it again when it
exits, and restart it on SIGHUP (the e2e's ``--kubelet-restart-command`` sends that, as
``systemctl restart kubelet`` would). SIGTERM stops the kubelet and then the supervisor.

    python tests/e2e/supervise.py KUBELET STATE_DIR

The kubelet's PID is written to ``STATE_DIR/kubelet.pid`` each time it starts and each start
is appended to ``STATE_DIR/kubelet-starts`` (a timestamp a line), so a test can tell that a
restart happened. The kubelet's output goes to ``STATE_DIR/kubelet.log``. Standard library
only: it runs outside the virtualenv too.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

# kubeadm's systemd drop-in (10-kubeadm.conf), spelled out.
KUBEADM_FLAGS = (
    "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
    "--kubeconfig=/etc/kubernetes/kubelet.conf",
    "--config=/var/lib/kubelet/config.yaml",
)
FLAGS_ENV = Path("/var/lib/kubelet/kubeadm-flags.env")
RESTART_DELAY_SECONDS = 1.0  # between an exit and the next start (systemd's kubelet unit: 10 s)
STOP_TIMEOUT_SECONDS = 15.0  # SIGTERM, then SIGKILL


def kubeadm_args() -> list[str]:
    """``KUBELET_KUBEADM_ARGS`` from kubeadm's flags file, as systemd's EnvironmentFile reads it."""
    for line in FLAGS_ENV.read_text().splitlines():
        if line.startswith("KUBELET_KUBEADM_ARGS="):
            # systemd unquotes the value, then `$KUBELET_KUBEADM_ARGS` splits it on spaces
            return " ".join(shlex.split(line.split("=", 1)[1])).split()
    return []


def main() -> None:
    kubelet, state = sys.argv[1], Path(sys.argv[2])
    wanted = {"restart": False, "stop": False}

    def on_signal(signum: int, _frame: object) -> None:
        wanted["stop" if signum == signal.SIGTERM else "restart"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    log = (state / "kubelet.log").open("ab")
    while not wanted["stop"]:
        argv = [kubelet, *KUBEADM_FLAGS, *kubeadm_args()]
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        (state / "kubelet.pid").write_text(f"{proc.pid}\n")
        with (state / "kubelet-starts").open("a") as starts:
            starts.write(f"{time.time():.3f} {proc.pid}\n")
        wanted["restart"] = False
        while proc.poll() is None and not (wanted["restart"] or wanted["stop"]):
            time.sleep(0.1)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif not wanted["stop"]:
            time.sleep(RESTART_DELAY_SECONDS)
    (state / "kubelet.pid").unlink(missing_ok=True)
    os._exit(0)


if __name__ == "__main__":
    main()
