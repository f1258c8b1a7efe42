"""The plan as a table of named cases, each a real node tree observed at a fixed ``now``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import fabricate
from reconciler.decide import plan, policy
from reconciler.model import paths
from reconciler.node import host, observe

DAY = dt.timedelta(days=1)
CONVERGED = {"embedded_kubelet_conf": False, "kubelet_config_rotation": True}
HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"


def _write(path: str, data: bytes) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        (root / path.lstrip("/")).write_bytes(data)

    return mutate


def _swap_key(root: Path) -> None:
    other = (root / "etc/kubernetes/pki/front-proxy-client.key").read_bytes()
    (root / "etc/kubernetes/pki/apiserver.key").write_bytes(other)


def _no_users(root: Path) -> None:
    path = root / "etc/kubernetes/admin.conf"
    path.write_text(path.read_text().split("users:")[0] + "users: []\n")


def _foreign_kubelet_cert(root: Path) -> None:
    ca_cert = (root / "etc/kubernetes/pki/ca.crt").read_bytes()
    from reconciler.decide import pki

    ca = (pki.load_cert(ca_cert), pki.load_key((root / "etc/kubernetes/pki/ca.key").read_bytes()))
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    cert, key = fabricate.make_leaf(
        ca, "system:node:other", ("system:nodes",), fabricate.CLIENT, (), now, 100 * DAY, "ecdsa"
    )
    target = root / "var/lib/kubelet/pki/kubelet-client-2026-01-01-00-00-00.pem"
    target.write_bytes(pki.cert_pem(cert) + pki.key_pem(key))


def _state(pending: list[str]) -> Callable[[Path], None]:
    return _write(paths.STATE, json.dumps({"pendingRestarts": pending}).encode())


def _external_etcd_client(root: Path) -> None:
    pki_dir = root / "etc/kubernetes/pki"
    for ext in ("crt", "key"):  # provided by the operator for an external etcd; no etcd CA here
        (pki_dir / f"apiserver-etcd-client.{ext}").write_bytes(
            (pki_dir / f"front-proxy-client.{ext}").read_bytes()
        )


def _malformed_context(root: Path) -> None:
    path = root / "etc/kubernetes/admin.conf"
    doc = yaml.safe_load(path.read_text())
    doc["contexts"][0]["context"] = "oops"
    path.write_text(yaml.safe_dump(doc))


def _kubelet_cert_from_foreign_ca(root: Path) -> None:
    from reconciler.decide import pki

    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    foreign = fabricate.make_ca("kubernetes", now, "ecdsa")
    cert, key = fabricate.make_leaf(
        foreign,
        "system:node:cp-1",
        ("system:nodes",),
        fabricate.CLIENT,
        (),
        now,
        100 * DAY,
        "ecdsa",
    )
    target = root / "var/lib/kubelet/pki/kubelet-client-2026-01-01-00-00-00.pem"
    target.write_bytes(pki.cert_pem(cert) + pki.key_pem(key))


def _foreign_ca_key(root: Path) -> None:
    from reconciler.decide import pki

    key = fabricate.new_key("ecdsa")
    (root / "etc/kubernetes/pki/front-proxy-ca.key").write_bytes(pki.key_pem(key))


def _config_links_to_admin_conf(root: Path) -> None:
    config = root / "var/lib/kubelet/config.yaml"
    config.unlink()
    config.symlink_to("/etc/kubernetes/admin.conf")


@dataclasses.dataclass
class Case:
    tree: dict[str, Any] = dataclasses.field(default_factory=dict)
    policy: str = ""
    mutate: Callable[[Path], None] | None = None
    later: dt.timedelta = dt.timedelta(0)  # plan at now + later (a what-if date)
    approver: bool = False  # kucero's CSR signer is active (cluster mode)
    actions: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    findings: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # exactly these


UNKNOWN_APPROVER = ("kubelet", "ServingCSRApproverUnknown")
KUBELET_FIX = [
    ("fix-kubelet-conf", "/etc/kubernetes/kubelet.conf", "EmbeddedClientCert"),
    ("set-kubelet-config", "/var/lib/kubelet/config.yaml", "KubeletConfigDiffers"),
    ("restart-kubelet", "kubelet", "KubeletConfigChanged"),
]

CASES = {
    "converged-node-plans-nothing": Case(tree=CONVERGED),
    "fresh-kubeadm-node-gets-kubelet-repairs-but-no-server-bootstrap": Case(
        actions=KUBELET_FIX, findings=[UNKNOWN_APPROVER]
    ),
    "policy-setting-server-rotation-switches-it-on-with-a-warning": Case(
        policy="spec: {kubelet: {rotateServerCertificates: true}}",
        actions=KUBELET_FIX,
        findings=[("kubelet", "ServingCSRApproverNeeded")],
    ),
    "override-setting-server-rotation-counts-too": Case(
        policy="spec: {overrides: [{nodeSelector: {}, spec: {kubelet: {rotateServerCertificates: true}}}]}",
        actions=KUBELET_FIX,
        findings=[("kubelet", "ServingCSRApproverNeeded")],
    ),
    "kucero-signer-active-switches-server-bootstrap-on-silently": Case(
        approver=True, actions=KUBELET_FIX
    ),
    "server-bootstrap-already-on-is-left-on-without-a-finding": Case(
        tree={"kubelet_config_rotation": True}, actions=[KUBELET_FIX[0], KUBELET_FIX[2]]
    ),
    "client-rotation-off-with-kubelet-conf-on-the-rotated-file-is-refused": Case(
        tree=CONVERGED,
        policy="spec: {kubelet: {rotateClientCertificates: false, fixKubeletConf: false}}",
        findings=[("kubelet", "ClientRotationRequired")],
    ),
    "unset-and-wanted-false-is-not-a-change": Case(
        policy="spec: {kubelet: {rotateClientCertificates: false, fixKubeletConf: false, "
        "rotateServerCertificates: false}}",
    ),
    "config-yaml-that-is-not-a-kubelet-configuration-is-never-edited": Case(
        mutate=_config_links_to_admin_conf,
        actions=[KUBELET_FIX[0], KUBELET_FIX[2]],
        findings=[("kubelet-config", "Unreadable")],
    ),
    "cert-inside-window-is-renewed-and-its-pod-restarted": Case(
        tree={**CONVERGED, "expiries": {"apiserver": 10 * DAY}},
        actions=[
            ("renew", "apiserver", "NearingExpiry"),
            ("restart-static-pod", "kube-apiserver", "CertificateRenewed"),
        ],
    ),
    "cert-just-outside-window-is-left": Case(
        tree={**CONVERGED, "expiries": {"apiserver": 31 * DAY}}
    ),
    "expired-kubeconfig-is-renewed-without-restart": Case(
        tree={**CONVERGED, "expiries": {"admin.conf": -DAY}},
        actions=[("renew", "admin.conf", "Expired")],
    ),
    "etcd-restarts-last": Case(
        tree={
            **CONVERGED,
            "expiries": {
                "etcd-server": 5 * DAY,
                "scheduler.conf": 5 * DAY,
                "front-proxy-client": 5 * DAY,
            },
        },
        actions=[
            ("renew", "etcd-server", "NearingExpiry"),
            ("renew", "front-proxy-client", "NearingExpiry"),
            ("renew", "scheduler.conf", "NearingExpiry"),
            ("restart-static-pod", "kube-apiserver", "CertificateRenewed"),
            ("restart-static-pod", "kube-scheduler", "CertificateRenewed"),
            ("restart-static-pod", "etcd", "CertificateRenewed"),
        ],
    ),
    "healthcheck-client-needs-no-restart": Case(
        tree={**CONVERGED, "expiries": {"etcd-healthcheck-client": 5 * DAY}},
        actions=[("renew", "etcd-healthcheck-client", "NearingExpiry")],
    ),
    "what-if-date-makes-everything-due": Case(
        tree=CONVERGED,
        later=340 * DAY,
        actions=[
            ("renew", n, "NearingExpiry")
            for n in sorted(
                [
                    "admin.conf",
                    "apiserver",
                    "apiserver-etcd-client",
                    "apiserver-kubelet-client",
                    "controller-manager.conf",
                    "etcd-healthcheck-client",
                    "etcd-peer",
                    "etcd-server",
                    "front-proxy-client",
                    "scheduler.conf",
                    "super-admin.conf",
                ]
            )
        ]
        + [
            ("restart-static-pod", c, "CertificateRenewed")
            for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
        ],
    ),
    "longer-window-from-policy": Case(
        tree={**CONVERGED, "expiries": {"apiserver-kubelet-client": 40 * DAY}},
        policy="spec: {kubeadm: {renewBefore: 1440h}}",
        actions=[
            ("renew", "apiserver-kubelet-client", "NearingExpiry"),
            ("restart-static-pod", "kube-apiserver", "CertificateRenewed"),
        ],
    ),
    "certificates-list-limits-renewals": Case(
        tree={**CONVERGED, "expiries": {"apiserver": 5 * DAY, "admin.conf": 5 * DAY}},
        policy="spec: {kubeadm: {certificates: [admin.conf]}}",
        actions=[("renew", "admin.conf", "NearingExpiry")],
    ),
    "kubeadm-disabled-renews-nothing": Case(
        tree={**CONVERGED, "expiries": {"apiserver": 5 * DAY}},
        policy="spec: {kubeadm: {enabled: false}}",
    ),
    "restart-none-leaves-a-finding": Case(
        tree={**CONVERGED, "expiries": {"apiserver": 5 * DAY}},
        policy="spec: {kubeadm: {restart: none}}",
        actions=[("renew", "apiserver", "NearingExpiry")],
        findings=[("kube-apiserver", "RestartRequired")],
    ),
    "paused-policy-withholds-everything": Case(
        tree={"expiries": {"apiserver": 5 * DAY}},
        policy="spec: {paused: true}",
        findings=[UNKNOWN_APPROVER, ("policy", "Paused")],
    ),
    "kubelet-restart-none": Case(
        policy="spec: {kubelet: {restart: none}}",
        actions=KUBELET_FIX[:2],
        findings=[UNKNOWN_APPROVER, ("kubelet", "RestartRequired")],
    ),
    "kubelet-settings-already-as-policy-says": Case(
        tree={"kubelet_config_rotation": True}, actions=[KUBELET_FIX[0], KUBELET_FIX[2]]
    ),
    "kubelet-rotation-turned-off-by-policy": Case(
        tree=CONVERGED,
        policy="spec: {kubelet: {rotateServerCertificates: false}}",
        actions=[
            ("set-kubelet-config", "/var/lib/kubelet/config.yaml", "KubeletConfigDiffers"),
            KUBELET_FIX[2],
        ],
    ),
    "worker-node-only-kubelet": Case(
        tree={"control_plane": False},
        later=340 * DAY,
        actions=KUBELET_FIX,
        findings=[UNKNOWN_APPROVER],
    ),
    "external-etcd-has-no-etcd-names": Case(
        tree={**CONVERGED, "etcd": False},
        later=340 * DAY,
        actions=[
            ("renew", n, "NearingExpiry")
            for n in [
                "admin.conf",
                "apiserver",
                "apiserver-kubelet-client",
                "controller-manager.conf",
                "front-proxy-client",
                "scheduler.conf",
                "super-admin.conf",
            ]
        ]
        + [
            ("restart-static-pod", c, "CertificateRenewed")
            for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
        ],
    ),
    "external-ca-is-never-renewed": Case(
        tree={
            **CONVERGED,
            "external_ca": True,
            "expiries": {"apiserver": 5 * DAY, "front-proxy-client": 5 * DAY},
        },
        actions=[
            ("renew", "front-proxy-client", "NearingExpiry"),
            ("restart-static-pod", "kube-apiserver", "CertificateRenewed"),
        ],
        findings=[("apiserver", "ExternallyManaged")],
    ),
    "key-mismatch-is-reported-not-renewed": Case(
        tree={**CONVERGED, "expiries": {"apiserver": 5 * DAY}},
        mutate=_swap_key,
        findings=[("apiserver", "KeyMismatch")],
    ),
    "garbage-certificate-is-reported": Case(
        tree={**CONVERGED, "expiries": {"apiserver": 5 * DAY}},
        mutate=_write("/etc/kubernetes/pki/apiserver.crt", b"not a certificate\n"),
        findings=[("apiserver", "Unreadable")],
    ),
    "kubeconfig-without-users-is-reported": Case(
        tree={**CONVERGED, "expiries": {"admin.conf": 5 * DAY}},
        mutate=_no_users,
        findings=[("admin.conf", "Unreadable")],
    ),
    "kubelet-cert-of-another-node-keeps-embedded-data": Case(
        mutate=_foreign_kubelet_cert,
        actions=KUBELET_FIX[1:],
        findings=[("kubelet.conf", "KubeletClientCertUnusable"), UNKNOWN_APPROVER],
    ),
    "expired-kubelet-cert-keeps-embedded-data": Case(
        tree={"expiries": {"kubelet-client": 5 * DAY}},
        later=6 * DAY,
        actions=KUBELET_FIX[1:],
        findings=[("kubelet.conf", "KubeletClientCertUnusable"), UNKNOWN_APPROVER],
    ),
    "missing-kubelet-config-is-a-finding": Case(
        tree={"embedded_kubelet_conf": False},
        mutate=lambda r: (r / "var/lib/kubelet/config.yaml").unlink(),
        findings=[("kubelet-config", "KubeletConfigMissing")],
    ),
    "ca-near-its-end-is-reported-and-limits-leaves": Case(
        tree={**CONVERGED, "expiries": {"apiserver": 3650 * DAY}},  # as long as its CA
        later=3640 * DAY,
        policy="spec: {kubeadm: {certificates: [apiserver]}}",
        findings=[
            ("ca", "CAExpiring"),
            ("etcd-ca", "CAExpiring"),
            ("front-proxy-ca", "CAExpiring"),
            ("apiserver", "LimitedByCA"),
        ],
    ),
    "external-etcd-client-without-its-ca-is-not-ours": Case(
        tree={**CONVERGED, "etcd": False, "expiries": {"apiserver": 400 * DAY}},
        mutate=_external_etcd_client,
        later=340 * DAY,
        policy="spec: {kubeadm: {certificates: [apiserver, apiserver-etcd-client]}}",
        findings=[("apiserver-etcd-client", "ExternallyManaged")],
    ),
    "malformed-kubeconfig-is-reported-not-fatal": Case(
        tree={**CONVERGED, "expiries": {"admin.conf": 5 * DAY, "scheduler.conf": 5 * DAY}},
        mutate=_malformed_context,
        actions=[
            ("renew", "scheduler.conf", "NearingExpiry"),
            ("restart-static-pod", "kube-scheduler", "CertificateRenewed"),
        ],
        findings=[("admin.conf", "Unreadable")],
    ),
    "kubelet-cert-from-a-foreign-ca-keeps-embedded-data": Case(
        mutate=_kubelet_cert_from_foreign_ca,
        actions=KUBELET_FIX[1:],
        findings=[("kubelet.conf", "KubeletClientCertUnusable"), UNKNOWN_APPROVER],
    ),
    "corrupt-ca-key-blocks-its-renewals": Case(
        tree={
            **CONVERGED,
            "expiries": {"front-proxy-client": 5 * DAY, "apiserver-kubelet-client": 5 * DAY},
        },
        mutate=_write(
            "/etc/kubernetes/pki/front-proxy-ca.key",
            b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        ),
        actions=[
            ("renew", "apiserver-kubelet-client", "NearingExpiry"),
            ("restart-static-pod", "kube-apiserver", "CertificateRenewed"),
        ],
        findings=[("front-proxy-client", "CAUnavailable")],
    ),
    "ca-key-of-another-ca-blocks-its-renewals": Case(
        tree={**CONVERGED, "expiries": {"front-proxy-client": 5 * DAY}},
        mutate=_foreign_ca_key,
        findings=[("front-proxy-client", "CAUnavailable")],
    ),
    "owed-restart-from-an-earlier-pass": Case(
        tree=CONVERGED,
        mutate=_state(["kube-scheduler", "kubelet"]),
        actions=[
            ("restart-static-pod", "kube-scheduler", "PendingRestart"),
            ("restart-kubelet", "kubelet", "PendingRestart"),
        ],
    ),
    "interrupted-pass-is-reported": Case(
        tree=CONVERGED,
        mutate=_write("/etc/kubernetes/tmp/kucero-journal.json", b"{}"),
        findings=[("journal", "InterruptedPassPending")],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_plan(case: Case, make_tree: Any, now: dt.datetime) -> None:
    tree = dict(case.tree)
    tree.setdefault("key_type", "ecdsa")
    root = make_tree(**tree)
    if case.mutate:
        (root / "etc/kubernetes/tmp").mkdir(parents=True, exist_ok=True)
        case.mutate(root)
    spec = policy.resolve(policy.load(HEAD + case.policy, "p.yaml"), {}, case.approver)
    result = plan.plan(spec, observe.observe(host.Host(root)), now + case.later)
    assert [(a.kind.value, a.target, a.reason.value) for a in result.actions] == case.actions
    assert [(f.target, f.reason.value) for f in result.findings] == case.findings, result.findings
