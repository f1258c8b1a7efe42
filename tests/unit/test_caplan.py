"""The CA part of the plan, as a table of named cases: real node trees (``make_tree``),
observed at a fixed ``now``, the policy's ``ca`` section, and what the cluster publishes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler import fabricate
from reconciler.decide import carenewal, pki, plan, policy
from reconciler.model import hoststate
from reconciler.node import host, observe

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
CAS = ("ca", "etcd-ca", "front-proxy-ca")
DUE = {"expiries": tuple((n, 100 * DAY) for n in CAS)}
QUIET = {"embedded_kubelet_conf": False, "kubelet_config_rotation": True}
PKI = "/etc/kubernetes/pki"
ANCHORS = [
    f"{PKI}/ca.crt",
    f"{PKI}/etcd/ca.crt",
    f"{PKI}/front-proxy-ca.crt",
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/super-admin.conf",
    "/etc/kubernetes/controller-manager.conf",
    "/etc/kubernetes/scheduler.conf",
    "/etc/kubernetes/kubelet.conf",
]
RESTARTS = [
    ("restart-static-pod", "kube-apiserver", "CAInstalled"),
    ("restart-static-pod", "kube-controller-manager", "CAInstalled"),
    ("restart-static-pod", "kube-scheduler", "CAInstalled"),
    ("restart-static-pod", "etcd", "CAInstalled"),
    ("restart-kubelet", "kubelet", "CAInstalled"),
]
INSTALLS = [("install-ca", p, "CARenewed") for p in ANCHORS]
RENEWALS = [("renew-ca", n, "CADue") for n in ("ca", "etcd-ca", "front-proxy-ca")]
# the etcd and front-proxy CAs renewed, the cluster CA not (no usable key)
ALL_BUT_CA = [
    ("renew-ca", "etcd-ca", "CADue"),
    ("renew-ca", "front-proxy-ca", "CADue"),
    ("install-ca", f"{PKI}/etcd/ca.crt", "CARenewed"),
    ("install-ca", f"{PKI}/front-proxy-ca.crt", "CARenewed"),
    ("restart-static-pod", "kube-apiserver", "CAInstalled"),
    ("restart-static-pod", "kube-controller-manager", "CAInstalled"),
    ("restart-static-pod", "etcd", "CAInstalled"),
]


def _spec(body: str = "spec: {ca: {mode: renew}}\n") -> Any:
    return policy.resolve(policy.load(HEAD + body, "p.yaml"), {})


def _published(root: Path, mutate: Callable[[Any, Any], Any] | None = None) -> hoststate.Published:
    """What the leader would publish for this tree's CAs: each renewed from its own key."""
    cas = {}
    for name, base in (("ca", "ca"), ("front-proxy-ca", "front-proxy-ca"), ("etcd-ca", "etcd/ca")):
        cert_path = root / f"etc/kubernetes/pki/{base}.crt"
        if not cert_path.exists():
            continue
        cert = pki.load_cert(cert_path.read_bytes())
        key = pki.load_key((root / f"etc/kubernetes/pki/{base}.key").read_bytes())
        renewed = carenewal.renew(cert, key, 1000, NOW, dt.timedelta(days=3650))
        cas[name] = hoststate.PublishedCA(name, mutate(renewed, cert) if mutate else renewed)
    return hoststate.Published("ConfigMap kube-system/kucero-ca", cas)


def _other_key(renewed: Any, cert: Any) -> Any:
    """A CA certificate with the same subject and another key (what a forger can make)."""
    return fabricate.make_ca(pki.common_name(cert) or "", NOW, "ecdsa")[0]


def _break_key(root: Path, garbage: bool = False) -> None:
    target = root / "etc/kubernetes/pki/ca.key"
    if garbage:
        target.write_bytes(
            b"-----BEGIN EC PRIVATE KEY-----\nnot a key\n-----END EC PRIVATE KEY-----\n"
        )
    else:
        target.write_bytes(pki.key_pem(fabricate.new_key("ecdsa")))


def _lagging_anchors(root: Path) -> None:
    """pki/ca.crt renewed by hand, every other anchor of ``ca`` left behind."""
    base = root / "etc/kubernetes/pki"
    cert, key = (
        pki.load_cert((base / "ca.crt").read_bytes()),
        pki.load_key((base / "ca.key").read_bytes()),
    )
    (base / "ca.crt").write_bytes(pki.cert_pem(carenewal.renew(cert, key, 5, NOW, 4000 * DAY)))


@dataclasses.dataclass(frozen=True)
class Case:
    tree: dict[str, Any]
    expected: list[tuple[str, str, str]]
    findings: set[tuple[str, str]] = frozenset()  # type: ignore[assignment]
    policy: str = "spec: {ca: {mode: renew}}\n"
    published: Callable[[Path], hoststate.Published | None] = lambda _root: None
    mutate: Callable[[Path], None] | None = None


CASES = [
    pytest.param(
        Case({**DUE, **QUIET}, [], {(n, "CAExpiring") for n in CAS}, policy=""),
        id="report-mode-only-reports",
    ),
    pytest.param(Case(QUIET, []), id="renew-mode-not-due-does-nothing"),
    pytest.param(Case({**DUE, **QUIET}, RENEWALS + INSTALLS + RESTARTS), id="offline-renews-installs-restarts"),
    pytest.param(
        Case({**DUE, **QUIET}, [], {(n, "CAAwaitingPublication") for n in CAS},
             published=lambda _r: hoststate.Published("ConfigMap kube-system/kucero-ca")),
        id="cluster-waits-for-the-leader",
    ),
    pytest.param(
        Case({**DUE, **QUIET}, INSTALLS + RESTARTS, published=_published),
        id="cluster-installs-what-the-leader-published",
    ),
    pytest.param(
        Case({**DUE, **QUIET}, [], {(n, "CARefused") for n in CAS} | {(n, "CAAwaitingPublication") for n in CAS},
             published=lambda r: _published(r, _other_key)),
        id="published-with-another-key-is-refused",
    ),
    pytest.param(
        Case({**DUE, **QUIET, "control_plane": False, "external_ca": True}, [], {("ca", "CAInstallsOnly")}),
        id="worker-offline-only-installs",
    ),
    pytest.param(
        Case({**DUE, **QUIET, "control_plane": False},
             [("install-ca", f"{PKI}/ca.crt", "CARenewed"), ("install-ca", "/etc/kubernetes/kubelet.conf", "CARenewed"),
              ("restart-kubelet", "kubelet", "CAInstalled")],
             published=_published, mutate=lambda r: (r / "etc/kubernetes/pki/ca.key").unlink()),
        id="worker-installs-the-published-ca",
    ),
    pytest.param(
        Case({**DUE, **QUIET, "external_ca": True}, ALL_BUT_CA, {("ca", "ExternallyManaged")}),
        id="missing-ca-key-is-externally-managed-never-renewed",
    ),
    pytest.param(
        Case({**DUE, **QUIET}, ALL_BUT_CA, {("ca", "KeyMismatch")}, mutate=_break_key),
        id="ca-key-not-matching-its-certificate-renews-nothing-of-it",
    ),
    pytest.param(
        Case({**DUE, **QUIET}, ALL_BUT_CA[2:], {("ca", "KeyMismatch")}, published=_published, mutate=_break_key),
        id="ca-key-not-matching-refuses-even-a-published-ca",
    ),
    pytest.param(
        Case({**DUE, **QUIET}, ALL_BUT_CA, {("ca", "KeyMismatch")}, mutate=lambda r: _break_key(r, garbage=True)),
        id="unreadable-ca-key-renews-nothing-of-it",
    ),
    pytest.param(
        Case({**QUIET, "expiries": tuple((n, -3 * DAY) for n in CAS)}, RENEWALS + INSTALLS + RESTARTS),
        id="expired-ca-still-renews-offline",
    ),
    pytest.param(
        Case({**DUE, **QUIET}, [], {("policy", "Paused")}, policy="spec: {paused: true, ca: {mode: renew}}\n"),
        id="paused-withholds-everything",
    ),
    pytest.param(
        Case({**DUE, **QUIET}, RENEWALS + INSTALLS,
             {("kube-apiserver", "RestartRequired"), ("kube-controller-manager", "RestartRequired"),
              ("kube-scheduler", "RestartRequired"), ("etcd", "RestartRequired"), ("kubelet", "RestartRequired")},
             policy="spec: {ca: {mode: renew}, kubeadm: {restart: none}, kubelet: {restart: none}}\n"),
        id="restart-none-leaves-restarts-to-the-operator",
    ),
    pytest.param(
        Case(QUIET, [("install-ca", p, "CARenewed") for p in ANCHORS[3:]]
             + [("restart-static-pod", "kube-controller-manager", "CAInstalled"),
                ("restart-static-pod", "kube-scheduler", "CAInstalled"), ("restart-kubelet", "kubelet", "CAInstalled")],
             mutate=_lagging_anchors),
        id="anchors-lagging-behind-the-ca-file-catch-up",
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_ca_plan(case: Case, make_tree: Callable[..., Path]) -> None:
    root = make_tree(**case.tree)
    published = case.published(root)  # by the leader, from the CA keys before any damage
    if case.mutate is not None:
        case.mutate(root)
    observed = dataclasses.replace(observe.observe(host.Host(root)), published=published)
    the_plan = plan.plan(_spec(case.policy), observed, NOW)
    got = [(a.kind, a.target, a.reason) for a in the_plan.actions]
    assert got == case.expected
    ca_findings = {
        (f.target, f.reason)
        for f in the_plan.findings
        if f.reason.startswith("CA") or f.reason in ("ExternallyManaged", "KeyMismatch", "Paused", "RestartRequired")
    }  # fmt: skip
    assert ca_findings == set(case.findings)


def test_a_kubeconfig_renewed_in_the_same_pass_is_not_also_installed(
    make_tree: Callable[..., Path],
) -> None:
    root = make_tree(**QUIET, expiries=(*DUE["expiries"], ("admin.conf", 3 * DAY)))
    the_plan = plan.plan(_spec(), observe.observe(host.Host(root)), NOW)
    got = [(a.kind, a.target) for a in the_plan.actions]
    assert ("renew", "admin.conf") in got
    assert ("install-ca", "/etc/kubernetes/admin.conf") not in got
    assert ("install-ca", "/etc/kubernetes/super-admin.conf") in got


def test_a_leaf_capped_by_an_old_ca_is_renewed_for_the_renewed_ca(
    make_tree: Callable[..., Path],
) -> None:
    """A leaf due while its CA ends sooner is LimitedByCA in report mode; with the CA renewed
    in the same pass it is renewed (signed for the renewed CA certificate)."""
    tree = {**QUIET, "expiries": (("ca", 10 * DAY), ("apiserver", 20 * DAY))}
    root = make_tree(**tree)
    observed = observe.observe(host.Host(root))
    report = plan.plan(_spec(""), observed, NOW)
    assert ("apiserver", "LimitedByCA") in {(f.target, f.reason) for f in report.findings}
    renew = plan.plan(_spec(), observed, NOW)
    assert ("renew", "apiserver") in {(a.kind, a.target) for a in renew.actions}


def test_published_ca_refusal_names_the_source_and_the_reason(
    make_tree: Callable[..., Path],
) -> None:
    root = make_tree(**DUE, **QUIET)
    observed = dataclasses.replace(
        observe.observe(host.Host(root)), published=_published(root, _other_key)
    )
    the_plan = plan.plan(_spec(), observed, NOW)
    refused = [f for f in the_plan.findings if f.reason == "CARefused" and f.target == "ca"]
    assert [f.severity for f in refused] == ["error"]
    assert refused[0].detail.startswith("ConfigMap kube-system/kucero-ca: ca refused (KeyMismatch)")
    assert refused[0].detail.endswith("nothing written")
