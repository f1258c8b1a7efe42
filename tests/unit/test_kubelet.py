"""Kubelet repairs: when kubelet-client-current.pem may be used, and config edits that keep
every other byte."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from reconciler import fabricate
from reconciler.decide import kubelet

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
CA = fabricate.make_ca("kubernetes", NOW, "ecdsa")


def _cert(
    cn: str,
    orgs: tuple[str, ...] = ("system:nodes",),
    start: dt.timedelta = dt.timedelta(0),
    life: dt.timedelta = dt.timedelta(days=100),
):  # type: ignore[no-untyped-def]
    cert, _ = fabricate.make_leaf(CA, cn, orgs, fabricate.CLIENT, (), NOW + start, life, "ecdsa")
    return cert


@pytest.mark.parametrize(
    ("cert", "matches", "node", "now", "problem"),
    [
        pytest.param(_cert("system:node:cp-1"), True, "cp-1", NOW, None, id="valid-for-this-node"),
        pytest.param(None, False, "cp-1", NOW, "holds no certificate", id="no-cert"),
        pytest.param(
            _cert("system:node:cp-1"),
            False,
            "cp-1",
            NOW,
            "does not match its key",
            id="key-mismatch",
        ),
        pytest.param(
            _cert("system:node:cp-2"),
            True,
            "cp-1",
            NOW,
            "is for 'system:node:cp-2'",
            id="other-node",
        ),
        pytest.param(
            _cert("system:node:cp-1", ("system:masters",)),
            True,
            "cp-1",
            NOW,
            "not in group 'system:nodes'",
            id="wrong-group",
        ),
        pytest.param(
            _cert("system:node:cp-1"),
            True,
            "cp-1",
            NOW + dt.timedelta(days=101),
            "expired",
            id="expired",
        ),
        pytest.param(
            _cert("system:node:cp-1", start=dt.timedelta(days=400)),
            True,
            "cp-1",
            NOW,
            "not valid before",
            id="not-yet-valid",
        ),
        pytest.param(
            _cert("system:node:cp-1"), True, None, NOW, "node name is unknown", id="unknown-node"
        ),
    ],
)
def test_client_cert_problem(cert, matches, node, now, problem) -> None:  # type: ignore[no-untyped-def]
    got = kubelet.client_cert_problem(cert, matches, node, now)
    assert got is None if problem is None else (got is not None and problem in got)


CONFIG = """\
apiVersion: kubelet.config.k8s.io/v1beta1
# managed by kubeadm
kind: KubeletConfiguration
rotateCertificates: false   # was off
cgroupDriver: systemd
"""


def test_set_fields_replaces_in_place_and_appends_missing_keeping_comments() -> None:
    out = kubelet.set_fields(CONFIG, {"rotateCertificates": True, "serverTLSBootstrap": True})
    assert (
        out
        == CONFIG.replace("rotateCertificates: false", "rotateCertificates: true")
        + "serverTLSBootstrap: true\n"
    )


def test_set_fields_ignores_nested_keys_of_the_same_name() -> None:
    text = "kind: KubeletConfiguration\nnested:\n  rotateCertificates: false\n"
    out = yaml.safe_load(kubelet.set_fields(text, {"rotateCertificates": True}))
    assert out == {
        "kind": "KubeletConfiguration",
        "nested": {"rotateCertificates": False},
        "rotateCertificates": True,
    }


def test_set_fields_falls_back_to_a_full_dump_for_flow_style() -> None:
    text = "{kind: KubeletConfiguration, rotateCertificates: false, authentication: {x509: {clientCAFile: /ca}}}\n"
    out = yaml.safe_load(
        kubelet.set_fields(text, {"rotateCertificates": True, "serverTLSBootstrap": False})
    )
    assert out == {
        "kind": "KubeletConfiguration",
        "rotateCertificates": True,
        "authentication": {"x509": {"clientCAFile": "/ca"}},
        "serverTLSBootstrap": False,
    }


def test_set_fields_on_file_without_trailing_newline() -> None:
    out = kubelet.set_fields("kind: KubeletConfiguration", {"serverTLSBootstrap": True})
    assert out == "kind: KubeletConfiguration\nserverTLSBootstrap: true\n"


@pytest.mark.parametrize(
    ("config", "changes"),
    [
        ({}, {"rotateCertificates": True, "serverTLSBootstrap": True}),
        ({"rotateCertificates": True, "serverTLSBootstrap": True}, {}),
        ({"rotateCertificates": "true", "serverTLSBootstrap": True}, {"rotateCertificates": True}),
        ({"rotateCertificates": True, "serverTLSBootstrap": False}, {"serverTLSBootstrap": True}),
    ],
    ids=["unset", "equal", "string-is-not-bool", "one-differs"],
)
def test_config_changes(config: dict[str, object], changes: dict[str, bool]) -> None:
    assert kubelet.config_changes(config, kubelet.desired_config(True, True)) == changes


@pytest.mark.parametrize("text", ["- a\n", "a: [\n"], ids=["list", "broken"])
def test_parse_config_rejects_non_mappings(text: str) -> None:
    with pytest.raises(ValueError):
        kubelet.parse_config(text)
