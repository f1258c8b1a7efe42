"""Each command loads only what it uses: a guard on start-up cost that counts modules, not time.

Importing jsonschema costs about 45 ms, cryptography.x509 about 35 ms and the kubernetes client
about 190 ms and 44 MiB (docs/pitfalls.md). Each case runs the command in a fresh interpreter and
lists the modules it loaded. Commands that read no policy load no jsonschema; a policy is
validated by jsonschema alone. (test_offline_imports.py
checks ``node --once`` and ``check-expiration`` for the kubernetes client, and that its probe
can fail.)
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


def run(tmp_path: Path, *argv: str) -> tuple[int, bytes, set[str]]:
    """Exit code, output and the modules (top-level packages too) a fresh interpreter has
    loaded after ``kucero argv``, run in ``tmp_path``."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *argv],
        capture_output=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
    )
    report = json.loads(out.read_text())
    modules = {name.split(".")[0] for name in report["modules"]} | set(report["modules"])
    return report["code"], done.stdout + done.stderr, modules


def loaded(tmp_path: Path, *argv: str) -> set[str]:
    code, _, modules = run(tmp_path, *argv)
    assert code in (0, 1), code
    return modules


def test_version_loads_neither_cryptography_nor_yaml_nor_jsonschema(tmp_path: Path) -> None:
    modules = loaded(tmp_path, "--version")
    assert not modules & {"cryptography", "yaml", "jsonschema", "kubernetes"}


def test_check_expiration_loads_no_jsonschema_and_no_kubernetes_client(
    tmp_path: Path, make_tree: Callable[..., Path]
) -> None:
    modules = loaded(tmp_path, "check-expiration", "--host-root", str(make_tree()))
    assert "cryptography.x509" in modules  # it did run
    assert not modules & {"jsonschema", "referencing", "kubernetes"}


def test_valid_policy_loads_jsonschema_but_neither_cryptography_nor_kubernetes(
    tmp_path: Path,
) -> None:
    code, output, modules = run(tmp_path, "validate-policy", POLICY)
    assert code == 0 and b": valid (revision " in output
    assert "jsonschema" in modules  # it did check, with jsonschema
    assert not modules & {"cryptography", "kubernetes"}


# An invalid policy and what `kucero validate-policy` printed for it (commit 31c0163): the
# errors are worded the same, byte for byte.
INVALID = """\
apiVersion: kucero.io/v1alpha1
kind: RotationPolicy
spec:
  checkInterval: 5
  kubeadm: {renewBefore: -3h, backup: {retain: 2.5}, certificates: [apiserver, apiserver]}
  rollout: {maxConcurrentNodes: true}
  csrSigner: {allowedIPRanges: [10.0.0.1/8]}
  bogus: 1
  overrides:
  - nodeSelector: {matchExpressions: [{key: "", operator: Maybe}]}
"""
INVALID_OUTPUT = b"""\
bad.yaml: spec: unknown field 'bogus'
bad.yaml: spec.checkInterval: 5 is not a valid duration (write it as a string with a unit, e.g. 720h)
bad.yaml: spec.csrSigner.allowedIPRanges[0]: '10.0.0.1/8' is not a CIDR (e.g. 10.0.0.0/8)
bad.yaml: spec.kubeadm.backup.retain: 2.5 is not of type integer
bad.yaml: spec.kubeadm.certificates: ['apiserver', 'apiserver'] has non-unique elements
bad.yaml: spec.kubeadm.renewBefore: '-3h' is not a valid duration (must be positive)
bad.yaml: spec.overrides[0]: 'spec' is a required property
bad.yaml: spec.overrides[0].nodeSelector.matchExpressions[0].key: '' should be non-empty
bad.yaml: spec.overrides[0].nodeSelector.matchExpressions[0].operator: 'Maybe' is not one of: In, NotIn, Exists, DoesNotExist
bad.yaml: spec.rollout.maxConcurrentNodes: True is not of type integer
"""


def test_invalid_policy_is_reported_as_before(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(INVALID)
    code, output, modules = run(tmp_path, "validate-policy", "bad.yaml")
    assert code == 1
    assert output == INVALID_OUTPUT
    assert "jsonschema" in modules  # the probe can see it


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
