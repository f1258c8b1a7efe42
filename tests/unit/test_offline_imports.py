"""The offline commands never load the Kubernetes client (about 45 MiB and 0.3 s, see
docs/pitfalls.md): ``check-expiration`` and ``node --once`` run where the API server may be down,
on every node. Each command runs in a fresh interpreter that reports ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

PROBE = """
import json, sys
from reconciler import cli
code = cli.main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m == "kubernetes" or m.startswith("kubernetes."))
print("\\nMODULES " + json.dumps({"code": code, "kubernetes": loaded}))
"""


def _run(*args: str | Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    marker = [line for line in done.stdout.splitlines() if line.startswith("MODULES ")]
    assert marker, done.stdout + done.stderr
    return json.loads(marker[-1].removeprefix("MODULES "))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("check-expiration",), id="check-expiration"),
        pytest.param(("node", "--once", "--kubelet-restart-command", "true"), id="node-once"),
    ],
)
def test_offline_command_does_not_import_kubernetes(
    command: tuple[str, ...], make_tree: Callable[..., Path]
) -> None:
    root = make_tree()
    report = _run(*command, "--host-root", root)
    assert report["code"] in (0, 1)  # it really ran
    assert report["kubernetes"] == []


def test_probe_sees_kubernetes_when_a_cluster_command_loads_it(tmp_path: Path) -> None:
    """The probe can fail: `kucero controller` with a kubeconfig only the client library reads
    (a proxy) loads it, and then gives up on the missing CA file."""
    cluster = {
        "server": "https://127.0.0.1:1",
        "proxy-url": "http://127.0.0.1:2",
        "certificate-authority": str(tmp_path / "missing-ca.crt"),
    }
    kubeconfig = tmp_path / "proxy.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    report = _run("controller", "--kubeconfig", kubeconfig, "--metrics-addr=0")
    assert report["code"] == 1
    assert "kubernetes" in report["kubernetes"]  # type: ignore[operator]
