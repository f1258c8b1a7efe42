"""Every overlay applies to the real API server with `kubectl apply --server-side`, cleanly (no
warning), and a second apply changes nothing: no object's resourceVersion moves (DaemonSets,
whose status the controller manager keeps writing, and ValidatingAdmissionPolicies, whose type
checking the API server writes in their status, by generation and by kubectl's managed
fields), and `kubectl diff --server-side` finds no difference."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import tools


def snapshot(kubeconfig: Path, rendered: str) -> dict[str, dict[str, Any]]:
    """Per object: resourceVersion, generation and kubectl's server-side-apply entry."""
    got = tools.kubectl(
        "get",
        "-f",
        "-",
        "-o",
        "json",
        "--show-managed-fields",
        stdin=rendered,
        kubeconfig=kubeconfig,
    )
    items = json.loads(got.stdout)
    items = items.get("items", [items])
    out = {}
    for item in items:
        meta = item["metadata"]
        applied = [
            m
            for m in meta.get("managedFields", [])
            if m["manager"] == "kubectl" and m["operation"] == "Apply"
        ]
        assert len(applied) == 1, f"{item['kind']}/{meta['name']}: {applied}"
        out[f"{item['kind']}/{meta['name']}"] = {
            "resourceVersion": meta["resourceVersion"],
            "generation": meta.get("generation"),
            "applied": applied[0],
        }
    return out


def test_default_overlay_needs_no_crd() -> None:
    assert "monitoring.coreos.com/" not in tools.render("kustomize/overlays/default")


@pytest.mark.parametrize("overlay", tools.OVERLAYS)
def test_overlay_applies_cleanly_and_a_second_apply_changes_nothing(
    overlay: str, deploy: Callable[[str], Any], kubeconfig: Path
) -> None:
    first = deploy(overlay)
    assert first.stderr == "", first.stderr  # no warning (deprecated API, unknown field...)
    rendered = tools.render(f"kustomize/overlays/{overlay}")
    objects = tools.objects(f"kustomize/overlays/{overlay}")
    assert first.stdout.count("serverside-applied") == len(objects), first.stdout

    before = snapshot(kubeconfig, rendered)
    again = tools.kubectl(
        "apply", "--server-side", "-f", "-", stdin=rendered, kubeconfig=kubeconfig
    )
    assert again.stderr == ""
    after = snapshot(kubeconfig, rendered)

    assert before.keys() == after.keys() and len(before) == len(objects)
    for key in before:
        # status moves (a DaemonSet's rollout, a policy's type checking); spec and our fields
        # must not
        if key.startswith("DaemonSet/"):
            assert before[key]["generation"] == after[key]["generation"], key
            assert before[key]["applied"] == after[key]["applied"], key
        elif key.startswith("ValidatingAdmissionPolicy/"):
            # The API server writes a policy's status with an Apply of its own; when that lands
            # between our two applies, the second one (same content) only re-sorts the managed
            # fields and stamps kubectl's entry with a new time, once (measured on v1.37.2; a
            # third apply changes nothing). Every field we own must be the same.
            assert before[key]["generation"] == after[key]["generation"], key
            assert {**before[key]["applied"], "time": None} == {
                **after[key]["applied"],
                "time": None,
            }, key
        else:
            assert before[key] == after[key], key
    diff = tools.kubectl(
        "diff", "--server-side", "-f", "-", stdin=rendered, kubeconfig=kubeconfig, check=False
    )
    assert diff.returncode == 0, diff.stdout + diff.stderr


def test_monitoring_objects_are_accepted_by_the_prometheus_operator_crds(
    deploy: Callable[[str], Any], kubeconfig: Path
) -> None:
    deploy("custom")
    namespace = tools.NAMESPACES["custom"]
    for kind in ("servicemonitor", "prometheusrule"):
        got = tools.kubectl(
            "get", kind, "kucero", "-n", namespace, "-o", "json", kubeconfig=kubeconfig
        )
        assert json.loads(got.stdout)["spec"], kind
    # The schema the CRD publishes rejects what it does not know: a wrong field is refused.
    bad = tools.render("kustomize/overlays/custom").replace("interval: 60s", "intervall: 60s")
    assert "intervall" in bad
    refused = tools.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        stdin=bad,
        kubeconfig=kubeconfig,
        check=False,
    )
    assert refused.returncode != 0 and "intervall" in refused.stderr, refused.stderr
