"""``python -m tests.controlplane start|stop --dir DIR``: a real control plane by hand.

``guard --dir DIR`` is the test session's watchdog (see processes.guard), not for people.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.controlplane import cluster, processes


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.controlplane")
    sub = p.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start etcd and kube-apiserver, wait for /readyz")
    start.add_argument("--dir", type=Path, required=True)
    start.add_argument("--with-controller-manager", action="store_true")
    stop = sub.add_parser("stop", help="stop what `start` started in DIR (removes nothing)")
    stop.add_argument("--dir", type=Path, required=True)
    guard = sub.add_parser("guard", help="stop the control plane in DIR when stdin closes")
    guard.add_argument("--dir", type=Path, required=True)
    args = p.parse_args()

    if args.command == "start":
        began = time.monotonic()
        try:
            plane = cluster.start(args.dir, args.with_controller_manager)
        except RuntimeError as e:
            print(f"start failed: {e}", file=sys.stderr)
            return 1
        print(f"ready in {time.monotonic() - began:.1f}s: {plane.server}")
        print(f"  export KUBECONFIG={plane.admin_kubeconfig}")
        print(f"  pids: {', '.join(f'{n}={p}' for n, p in plane.pids.items())}")
        print(f"  logs: {plane.dir / 'logs'}")
        return 0
    if args.command == "guard":
        processes.wait_for_eof()
    stopped = cluster.stop(args.dir)
    print("stopped: " + (", ".join(stopped) or "nothing was running"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
