"""Each command loads only what it uses: a guard on start-up cost that counts modules, not time.

Importing jsonschema costs about 45 ms, cryptography.x509 about 35 ms and the kubernetes client
about 190 ms and 44 MiB (PITFALLS.md). Each case runs the command in a fresh interpreter and
lists the modules it loaded. (test_offline_imports.py checks ``node --once`` and
``check-expiration`` for the kubernetes client, and that its probe can fail.)
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from reconciler.decide import policy

POLICY = str(Path(__file__).resolve().parents[2] / "policies" / "demo.yaml")

_PROBE = """
import json, sys
from reconciler import cli
try:
    code = cli.main(sys.argv[2:])
except SystemExit as e:
    code = e.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def loaded(tmp_path: Path, *argv: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after ``kucero argv``."""
    out = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *argv],
        capture_output=True,
        check=True,
        timeout=60,
    )
    report = json.loads(out.read_text())
    assert report["code"] in (0, 1), report["code"]
    return {name.split(".")[0] for name in report["modules"]} | set(report["modules"])


def test_version_loads_neither_cryptography_nor_yaml_nor_jsonschema(tmp_path: Path) -> None:
    modules = loaded(tmp_path, "--version")
    assert not modules & {"cryptography", "yaml", "jsonschema", "kubernetes"}


def test_check_expiration_loads_no_jsonschema_and_no_kubernetes_client(
    tmp_path: Path, make_tree: Callable[..., Path]
) -> None:
    modules = loaded(tmp_path, "check-expiration", "--host-root", str(make_tree()))
    assert "cryptography.x509" in modules  # it did run
    assert not modules & {"jsonschema", "referencing", "kubernetes"}


def test_validate_policy_loads_no_cryptography(tmp_path: Path) -> None:
    modules = loaded(tmp_path, "validate-policy", POLICY)
    assert "jsonschema" in modules
    assert not modules & {"cryptography", "kubernetes"}


def test_policy_validation_checks_only_the_formats_the_schema_uses() -> None:
    text = json.dumps(policy.schema())
    used = {f for f in ("go-duration", "cidr") if f'"format": "{f}"' in text}
    assert set(policy._validator().format_checker.checkers) == used


def test_a_pass_that_restarts_nothing_loads_no_tls_or_http_client(
    tmp_path: Path, make_tree: Callable[..., Path]
) -> None:
    now = dt.datetime.now(dt.UTC)  # one renewal due now
    root = make_tree(now=now, key_type="ecdsa", expiries={"apiserver": dt.timedelta(days=5)})
    shutil.rmtree(root / "etc/kubernetes/manifests")  # no static pods: nothing to restart
    argv = ("node", "--once", "--host-root", str(root), "--policy", POLICY, "-o", "json")
    out = tmp_path / "out.json"
    modules = loaded(tmp_path, *argv, "--kubelet-restart-command", "true")
    assert "reconciler.node.probe" in modules and "reconciler.node.transaction" in modules
    assert not modules & {"ssl", "http.client", "http"}
    backups = list((root / "etc/kubernetes/tmp").glob("kucero-backup-*"))
    assert len(backups) == 1 and not out.exists()  # it did renew (one transaction)
