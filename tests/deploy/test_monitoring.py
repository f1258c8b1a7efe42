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
    "KuceroNodeTrustsExpiringCA",
    "KuceroHandedOutKubeconfigsExpire",
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


def test_alerts_select_metrics_and_labels_kucero_declares(checked: dict[str, Any]) -> None:
    """A renamed metric or label would leave an alert that never fires: every selector names a
    metric of reconciler.metrics with labels it has."""
    from reconciler import metrics

    declared: dict[str, set[str]] = {}
    registry = metrics.Metrics().registry
    for family in registry.collect():
        for sample in family.samples:
            declared.setdefault(sample.name, set()).update(sample.labels)
        declared.setdefault(family.name, set())
    # Labelled metrics with no series yet expose no labels: take them from the declarations.
    for collector in list(registry._collector_to_names):
        labels = set(getattr(collector, "_labelnames", ()))
        for name in registry._collector_to_names[collector]:
            declared.setdefault(name, set()).update(labels)
    declared["kucero_certificate_expiration_timestamp_seconds"] |= {
        "node",
        "name",
        "kind",
        "issuer",
    }
    for alert in checked["alerts"]:
        for selector in alert["selectors"]:
            (name,) = [m["value"] for m in selector if m["name"] == "__name__"]
            assert name in declared, f"{alert['name']}: {name} is not declared"
            for matcher in selector:
                if matcher["name"] != "__name__":
                    assert matcher["name"] in declared[name], (alert["name"], name, matcher)
