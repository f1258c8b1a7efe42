"""The README's Deploy section works as written: its shell blocks run, in order, with bash from
the repository's root, against the session's real API server, with the test suite's kubectl
first on PATH and the admin kubeconfig in KUBECONFIG (as a cluster admin would have them)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.controlplane import binaries
from tests.deploy import tools

# kubectl against a local API server answers in well under a second per command.
BLOCK_TIMEOUT_SECONDS = 120


def deploy_blocks() -> list[str]:
    readme = (tools.REPO / "README.md").read_text()
    section = re.search(r"^## Deploy\n(.*?)(?=^## )", readme, re.S | re.M)
    assert section, "README.md has no '## Deploy' section"
    blocks = re.findall(r"^```sh\n(.*?)^```", section.group(1), re.S | re.M)
    assert blocks, "the Deploy section has no sh block"
    return blocks


def test_readme_deploy_commands_work_against_a_real_api_server(
    deploy: Callable[[str], Any], kubeconfig: Path
) -> None:
    # The session's cleanup removes what the README applies (the same default overlay), and
    # applying it first leaves the README's apply with an existing, identical deployment:
    # both orders must work, this one is the cheaper to clean.
    deploy("default")
    env = dict(os.environ)
    env["PATH"] = f"{binaries.directory()}{os.pathsep}{env['PATH']}"
    env["KUBECONFIG"] = str(kubeconfig)
    outputs = []
    for block in deploy_blocks():
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tools.REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_SECONDS,
        )
        assert done.returncode == 0, f"{block}\n{done.stdout}\n{done.stderr}"
        assert "Warning" not in done.stderr, done.stderr
        outputs.append(done.stdout)
    text = "\n".join(outputs)
    assert "daemonset.apps/kucero-control-plane serverside-applied" in text
    for listed in (
        "daemonset.apps/kucero-control-plane",
        "daemonset.apps/kucero-node",
        "serviceaccount/kucero-node",
        "configmap/kucero-policy",
    ):
        assert listed in text, text
    assert re.search(r"^NODE\s+DESIRED\s+STATUS", text, re.M), text
