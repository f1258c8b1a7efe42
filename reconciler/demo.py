"""``make demo``: renew an expiring kubeadm node tree offline, showing each step.

Builds a kubeadm-like control-plane tree in a temporary directory (the apiserver certificate
inside the 30-day window, admin.conf already expired, kubelet.conf with embedded client data,
a kubelet config without rotation), then runs the same commands an operator would:
``check-expiration``, ``plan``, ``node --once`` and ``check-expiration`` again. Nothing outside
the temporary directory is touched; the kubelet "restart" is an ``echo``.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from reconciler import fabricate

# Shipped inside the package (reconciler.policies is the top-level policies/), so the demo
# runs from an installed wheel or the image as well as from a checkout.
POLICY = importlib.resources.files("reconciler.policies").joinpath("demo.yaml")


def main() -> int:
    now = dt.datetime.now(dt.UTC)
    with (
        tempfile.TemporaryDirectory(prefix="kucero-demo-") as tmp,
        importlib.resources.as_file(POLICY) as policy,
    ):
        root = Path(tmp) / "node"
        options = fabricate.Options(
            node_name="cp-1",
            expiries=(
                ("apiserver", dt.timedelta(days=12)),
                ("front-proxy-client", dt.timedelta(days=20)),
                ("admin.conf", dt.timedelta(days=-2)),
            ),
        )
        fabricate.build(root, now, options)
        print(f"# A kubeadm control-plane node tree in {root}: apiserver and front-proxy-client")
        print("# expire within 30 days, admin.conf expired two days ago, kubelet.conf embeds its")
        print("# client certificate and the kubelet config does not rotate certificates.\n")
        host = ["--host-root", str(root)]
        steps = [
            ["check-expiration", *host],
            ["plan", *host, "--policy", str(policy)],
            [
                "node",
                "--once",
                *host,
                "--policy",
                str(policy),
                "--kubelet-restart-command",
                "echo restart kubelet",
            ],
            ["check-expiration", *host],
            ["plan", *host, "--policy", str(policy)],
        ]
        for args in steps:
            print("$ kucero " + shlex.join(args))
            done = subprocess.run([sys.executable, "-m", "reconciler", *args], check=False)
            print()
            if done.returncode != 0:
                print(f"demo: step failed with exit status {done.returncode}", file=sys.stderr)
                return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
