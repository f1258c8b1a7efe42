"""The plan from ``Observed`` values built in memory: no tree on disk, no gatherer.

test_plan.py drives the plan through real trees and ``observe``; these cases pin the pure
function itself, so a change in the gatherer cannot hide a change in the decisions, and each
case states exactly the actions and findings it expects.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

import pytest
from cryptography import x509

from reconciler import fabricate
from reconciler.decide import components, pki, plan, policy
from reconciler.model import hoststate, kubeadm, nodespec

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
ROTATED = kubeadm.KUBELET_CLIENT_CURRENT


@functools.cache
def ca() -> tuple[x509.Certificate, pki.PrivateKey]:
    return fabricate.make_ca("kubernetes", NOW, "ecdsa")


@functools.cache
def leaf_cert(days: int) -> x509.Certificate:
    cert, _ = fabricate.make_leaf(
        ca(), "kube-apiserver", (), fabricate.SERVER, ("cp-1",), NOW, days * DAY, "ecdsa"
    )
    return cert


def cas(key_present: bool = True) -> dict[str, hoststate.CAFile]:
    return {
        c.name: hoststate.CAFile(c.name, c.cert, ca()[0] if c.name == "ca" else None, key_present)
        for c in kubeadm.CAS
    }


def apiserver(days: int, **fields: object) -> hoststate.LeafFile:
    base = hoststate.LeafFile(
        "apiserver",
        "certificate",
        kubeadm.LEAF_BY_NAME["apiserver"].path,
        "ca",
        cert=leaf_cert(days),
        key_matches=True,
        issued_by_ca=True,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def kubelet_state(
    config: dict[str, object] | None, conf_file: str | None = ROTATED
) -> hoststate.Kubelet:
    creds = hoststate.Credentials("node", None, None, conf_file, conf_file)
    conf = hoststate.LeafFile(
        "kubelet.conf", "kubeconfig", kubeadm.KUBELET_CONF, "ca", credentials=creds
    )
    return hoststate.Kubelet(
        conf if conf_file else None, None, False, False, None, "", config, None
    )


KUBELET_OK = {
    "apiVersion": "kubelet.config.k8s.io/v1beta1",
    "kind": "KubeletConfiguration",
    "rotateCertificates": True,
}


def observed(**fields: object) -> hoststate.Observed:
    base = hoststate.Observed(
        node_name="cp-1",
        cas=cas(),
        leaves={},
        kubelet=kubelet_state(KUBELET_OK),
        manifests=frozenset(kubeadm.COMPONENTS),
        pending_restarts=frozenset(),
        journal_pending=False,
        # which static pod loads which file is read from kubeadm-like manifests
        static_pods={
            c: components.parse(c, kubeadm.manifest(c), fabricate._manifest(c))
            for c in kubeadm.COMPONENTS
        },
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def spec(body: str = "", approver: bool = False) -> nodespec.NodeSpec:
    return policy.resolve(policy.load(HEAD + body, "p.yaml"), {}, approver)


CASES = {
    "nothing-observed-plans-nothing": (observed(kubelet=kubelet_state(None, None)), spec(), [], []),
    "leaf-inside-window-is-renewed-and-its-pod-restarted": (
        observed(leaves={"apiserver": apiserver(10)}),
        spec(),
        [("renew", "apiserver"), ("restart-static-pod", "kube-apiserver")],
        [("kubelet", "ServingCSRApproverUnknown")],
    ),
    "leaf-outside-window-is-left": (
        observed(leaves={"apiserver": apiserver(40)}),
        spec("spec: {kubelet: {rotateServerCertificates: false}}"),
        [],
        [],
    ),
    "mismatched-key-is-reported-even-when-not-due": (
        observed(leaves={"apiserver": apiserver(300, key_matches=False)}),
        spec("spec: {kubelet: {rotateServerCertificates: false}}"),
        [],
        [("apiserver", "KeyMismatch")],
    ),
    "absent-ca-key-means-externally-managed": (
        observed(
            cas=cas(key_present=False),
            leaves={"apiserver": apiserver(10, externally_managed=True)},
        ),
        spec("spec: {kubelet: {rotateServerCertificates: false}}"),
        [],
        [("apiserver", "ExternallyManaged")],
    ),
    "gatherer-errors-are-findings": (
        observed(errors=("/etc/kubernetes/tmp/kucero-state.json: cannot read",)),
        spec("spec: {kubelet: {rotateServerCertificates: false}}"),
        [],
        [("/etc/kubernetes/tmp/kucero-state.json", "Unreadable")],
    ),
    "signer-active-switches-server-bootstrap-on": (
        observed(),
        spec(approver=True),
        [("set-kubelet-config", kubeadm.KUBELET_CONFIG), ("restart-kubelet", "kubelet")],
        [],
    ),
    "unset-and-wanted-false-restarts-nothing": (
        observed(kubelet=kubelet_state({**KUBELET_OK, "rotateCertificates": None}, None)),
        spec(
            "spec: {kubelet: {rotateClientCertificates: false, fixKubeletConf: false, "
            "rotateServerCertificates: false}}"
        ),
        [],
        [],
    ),
    "turning-client-rotation-off-under-a-rotated-kubelet-conf-is-refused": (
        observed(),
        spec(
            "spec: {kubelet: {rotateClientCertificates: false, fixKubeletConf: false, "
            "rotateServerCertificates: false}}"
        ),
        [],
        [("kubelet", "ClientRotationRequired")],
    ),
    "turning-client-rotation-off-with-embedded-credentials-is-allowed": (
        observed(kubelet=kubelet_state(KUBELET_OK, None)),
        spec(
            "spec: {kubelet: {rotateClientCertificates: false, fixKubeletConf: false, "
            "rotateServerCertificates: false}}"
        ),
        [("set-kubelet-config", kubeadm.KUBELET_CONFIG), ("restart-kubelet", "kubelet")],
        [],
    ),
}


@pytest.mark.parametrize(
    ("seen", "node_spec", "planned", "findings"), CASES.values(), ids=CASES.keys()
)
def test_plan_of_values(
    seen: hoststate.Observed,
    node_spec: nodespec.NodeSpec,
    planned: list[tuple[str, str]],
    findings: list[tuple[str, str]],
) -> None:
    result = plan.plan(node_spec, seen, NOW)
    assert [(a.kind.value, a.target) for a in result.actions] == planned
    assert [(f.target, f.reason.value) for f in result.findings] == findings
    assert plan.plan(node_spec, seen, NOW) == result  # same values, same plan
