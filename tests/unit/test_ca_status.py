"""What a node says about its CAs: the phase in ``kucero.io/status``, the CA it actually
trusts (``kucero_ca_expiration_timestamp_seconds``), and ``kucero check-expiration`` on how
long handed-out kubeconfigs keep working."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import cli, fabricate, metrics
from reconciler.decide import carenewal, castatus, pki, plan, policy, status
from reconciler.model import hoststate
from reconciler.node import execute, host, observe
from reconciler.run import daemon, once

REAL_NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
CAS = ("ca", "etcd-ca", "front-proxy-ca")
DUE = {"expiries": tuple((n, 100 * DAY) for n in CAS)}
QUIET = {"embedded_kubelet_conf": False, "kubelet_config_rotation": True, "key_type": "ecdsa"}


def _spec(body: str = "spec: {ca: {mode: renew}, kubeadm: {restart: none}}\n") -> Any:
    return policy.resolve(policy.load(HEAD + body, "p.yaml"), {})


def _pass(root: Path, spec: Any) -> once.PassResult:
    return once.run_once(
        host.Host(root),
        spec,
        None,
        lambda: dt.datetime.now(dt.UTC),
        execute.Settings(kubelet_restart_command=("true",)),
    )


def _other_key(root: Path) -> hoststate.Published:
    forged = fabricate.make_ca("kubernetes", REAL_NOW, "ecdsa")[0]
    return hoststate.Published(
        "ConfigMap ns/kucero-ca", {"ca": hoststate.PublishedCA("ca", forged)}
    )


@pytest.mark.parametrize(
    ("tree", "body", "published", "expected"),
    [
        pytest.param(QUIET, "", None, dict.fromkeys(CAS, "Current"), id="not-due-current"),
        pytest.param({**DUE, **QUIET}, "", None, dict.fromkeys(CAS, "Due"), id="report-mode-due"),
        pytest.param(
            {**DUE, **QUIET}, None, lambda r: hoststate.Published("ConfigMap ns/kucero-ca"),
            dict.fromkeys(CAS, "Due"), id="waiting-for-the-leader",
        ),
        pytest.param(
            {**DUE, **QUIET}, None, None, dict.fromkeys(CAS, "Installing"), id="renewal-planned"
        ),
        pytest.param(
            {**DUE, **QUIET}, None, _other_key,
            {"ca": "Refused", "etcd-ca": "Due", "front-proxy-ca": "Due"}, id="published-refused",
        ),
        pytest.param(
            {**DUE, **QUIET, "external_ca": True}, None, None,
            {"ca": "Blocked", "etcd-ca": "Installing", "front-proxy-ca": "Installing"},
            id="key-absent-blocked",
        ),
    ],
)  # fmt: skip
def test_ca_phase_says_what_is_left_and_why(
    make_tree: Callable[..., Path],
    tree: dict[str, Any],
    body: str | None,
    published: Callable[[Path], hoststate.Published] | None,
    expected: dict[str, str],
) -> None:
    root = make_tree(now=REAL_NOW, **tree)
    observed = observe.observe(host.Host(root))
    observed = dataclasses.replace(observed, published=published(root) if published else None)
    spec = _spec(body) if body is not None else _spec()
    phases = castatus.phases(observed, plan.plan(spec, observed, REAL_NOW))
    assert {n: p["phase"] for n, p in phases.items()} == expected


def test_the_trusted_end_is_the_earliest_over_the_anchors(make_tree: Callable[..., Path]) -> None:
    """pki/ca.crt renewed by hand, kubelet.conf left with the old one: the node stops working
    at the old end, and that is what it reports."""
    root = make_tree(now=REAL_NOW, **DUE, **QUIET)
    base = root / "etc/kubernetes/pki"
    old = pki.load_cert((base / "ca.crt").read_bytes())
    key = pki.load_key((base / "ca.key").read_bytes())
    (base / "ca.crt").write_bytes(pki.cert_pem(carenewal.renew(old, key, 2, REAL_NOW, 3650 * DAY)))
    trusted = castatus.trusted(observe.observe(host.Host(root)))
    assert trusted["ca"] == old.not_valid_after_utc


def test_status_carries_the_ca_phases_and_round_trips() -> None:
    value = status.Status(
        "abc", status.Phase.CONVERGED, "ok", None, {},
        {"ca": {"phase": "Current", "notAfter": "2036-01-01T00:00:00Z"}},
    )  # fmt: skip
    text = status.encode(value)
    assert json.loads(text)["ca"] == {
        "ca": {"notAfter": "2036-01-01T00:00:00Z", "phase": "Current"}
    }
    assert status.decode(text) == value
    assert not status.changed(text, value)  # a node at rest writes nothing
    assert status.decode(text.replace('"phase":"Current"', '"phase":7')) is None


def test_metrics_say_what_each_node_trusts_and_its_renew_before(
    make_tree: Callable[..., Path],
) -> None:
    root = make_tree(now=REAL_NOW, **DUE, **QUIET)
    spec = _spec()
    before = pki.load_cert((root / "etc/kubernetes/pki/ca.crt").read_bytes())
    registry = metrics.Metrics()
    observer = daemon.observer(registry, "cp-1")
    observer(_pass(root, _spec("spec: {kubeadm: {restart: none}}\n")), 0.1)  # report mode
    assert (
        float(_series(registry.render().decode(), "ca")) == before.not_valid_after_utc.timestamp()
    )
    observer(_pass(root, spec), 0.1)
    renewed = pki.load_cert((root / "etc/kubernetes/pki/ca.crt").read_bytes())
    assert (
        float(_series(registry.render().decode(), "ca")) == renewed.not_valid_after_utc.timestamp()
    )
    assert 'kucero_ca_renew_before_seconds{node="cp-1"} 3.1536e+07' in registry.render().decode()


def _series(text: str, name: str) -> str:
    prefix = f'kucero_ca_expiration_timestamp_seconds{{name="{name}",node="cp-1"}} '
    (line,) = [ln for ln in text.splitlines() if ln.startswith(prefix)]
    return line.removeprefix(prefix)


def test_check_expiration_says_how_long_handed_out_kubeconfigs_work(
    make_tree: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, **DUE, **QUIET)
    old = pki.load_cert((root / "etc/kubernetes/pki/ca.crt").read_bytes())
    handed_out = yaml.safe_load((root / "etc/kubernetes/admin.conf").read_text())
    assert cli.main(["check-expiration", "--host-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "Kubeconfigs handed out embed the current ca certificate and work until" in out
    assert _pass(root, _spec()).converged
    assert cli.main(["check-expiration", "--host-root", str(root), "-o", "json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["name"] == "ca"]
    end = old.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert row["handedOutUntil"] == row["previousNotAfter"] == end
    assert cli.main(["check-expiration", "--host-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "Kubeconfigs handed out before the CA renewal embed the previous ca certificate" in out
    assert f"{old.not_valid_after_utc:%b %d, %Y %H:%M} UTC" in out
    # and indeed: a kubeconfig handed out before embeds the old certificate, which ends then
    embedded = handed_out["clusters"][0]["cluster"]["certificate-authority-data"]
    assert pki.load_cert(base64.b64decode(embedded)) == old
