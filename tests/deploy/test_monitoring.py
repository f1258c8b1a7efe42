"""The monitoring component's alerts: each rule parses with Prometheus's own code (rulefmt
through tests/deploy/tools/rulecheck, and `promtool check rules`), the issue's alerts are all
there with a summary, a description and a runbook section, and the metrics they select are
the ones kucero declares. Applying the component to the API server with the
prometheus-operator's CRDs is in test_apply.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import tools

ALERTS = {
    "KuceroCertificateExpiresIn14Days",
    "KuceroCertificateExpiresIn7Days",
    "KuceroRenewalFailed",
    "KuceroRollback",
    "KuceroPolicyInvalid",
    "KuceroNodeNotConverged",
    "KuceroCAExpiresWithinAYear",
    "KuceroCSRDenialsSpiking",
}
# Checking a dozen rules takes milliseconds; a minute is stuck.
CHECK_TIMEOUT_SECONDS = 60


def rulecheck(manifests: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [tools.tool("rulecheck"), "-"],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_SECONDS,
    )
    return done.returncode, json.loads(done.stdout)


@pytest.fixture(scope="module")
def checked() -> dict[str, Any]:
    code, report = rulecheck(tools.render("kustomize/overlays/custom"))
    assert code == 0 and report["errors"] == [], report["errors"]
    return report


def test_every_alert_of_the_issue_is_there_and_parses(checked: dict[str, Any]) -> None:
    assert checked["objects"] == 1
    assert {a["name"] for a in checked["alerts"]} == ALERTS


def test_rulecheck_reports_a_broken_expression_and_a_broken_template() -> None:
    """The checker is not vacuous: Prometheus's parser refuses these."""
    rendered = tools.render("kustomize/overlays/custom")
    broken = rendered.replace("kucero_policy_valid == 0", "kucero_policy_valid ==", 1)
    code, report = rulecheck(broken)
    assert code == 1 and any("KuceroPolicyInvalid" in e or "parse" in e for e in report["errors"])
    broken = rendered.replace("{{ $labels.node }}", "{{ $labels.node", 1)
    code, report = rulecheck(broken)
    assert code == 1 and report["errors"]


def test_promtool_check_rules_accepts_the_rule_file(tmp_path: Path) -> None:
    (rule,) = [
        o for o in tools.objects("kustomize/overlays/custom") if o["kind"] == "PrometheusRule"
    ]
    path = tmp_path / "kucero.rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    done = subprocess.run(
        [tools.tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout, done.stdout


def test_every_alert_has_summary_description_and_a_runbook_section(
    checked: dict[str, Any],
) -> None:
    runbook = (tools.REPO / "docs/runbook.md").read_text()
    headings = {h.lower() for h in re.findall(r"^## (\S+)$", runbook, re.M)}
    for alert in checked["alerts"]:
        notes = alert["annotations"]
        assert notes.get("summary") and notes.get("description"), alert["name"]
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["name"]
        anchor = notes["runbook_url"].rpartition("#")[2]
        assert notes["runbook_url"].split("#")[0].endswith("docs/runbook.md")
        assert anchor == alert["name"].lower() and anchor in headings, alert["name"]
