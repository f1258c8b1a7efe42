"""The plan: a pure function from (node spec, observed host, now) to ordered actions.

``plan`` touches no disk, clock or network; everything it needs is in its arguments, so it is
tested as a table of named cases with a fixed ``now``. It follows cert-manager's shape: a chain
of named checks turns each observed file into either an action with a reason
(``NearingExpiry``, ``EmbeddedClientCert``, ...) or a finding that explains why nothing will be
done (``ExternallyManaged``, ``KeyMismatch``, ...). It never plans anything for an externally
managed certificate, a CA, a certificate whose key does not match, or a file it could not parse.

Order of actions: renewals (kubeadm order), static pod restarts (etcd last), then the kubelet
repairs and a single kubelet restart at the end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum

from reconciler import duration, kubeadm, kubelet, policy
from reconciler.observe import LeafFile, Observed


class ActionKind(enum.StrEnum):
    RENEW = "renew"
    RESTART_STATIC_POD = "restart-static-pod"
    FIX_KUBELET_CONF = "fix-kubelet-conf"
    SET_KUBELET_CONFIG = "set-kubelet-config"
    RESTART_KUBELET = "restart-kubelet"


class Reason(enum.StrEnum):
    # why an action is planned
    NEARING_EXPIRY = "NearingExpiry"
    EXPIRED = "Expired"
    CERTIFICATE_RENEWED = "CertificateRenewed"
    PENDING_RESTART = "PendingRestart"
    EMBEDDED_CLIENT_CERT = "EmbeddedClientCert"
    KUBELET_CONFIG_DIFFERS = "KubeletConfigDiffers"
    KUBELET_CONFIG_CHANGED = "KubeletConfigChanged"
    # why nothing is done (findings)
    EXTERNALLY_MANAGED = "ExternallyManaged"
    KEY_MISMATCH = "KeyMismatch"
    UNREADABLE = "Unreadable"
    CA_UNAVAILABLE = "CAUnavailable"
    ISSUER_MISMATCH = "IssuerMismatch"
    CA_EXPIRING = "CAExpiring"
    CA_EXPIRED = "CAExpired"
    LIMITED_BY_CA = "LimitedByCA"
    KUBELET_CLIENT_CERT_UNUSABLE = "KubeletClientCertUnusable"
    KUBELET_CONFIG_MISSING = "KubeletConfigMissing"
    RESTART_REQUIRED = "RestartRequired"
    SERVING_CSR_APPROVER_NEEDED = "ServingCSRApproverNeeded"
    JOURNAL_PENDING = "InterruptedPassPending"
    PAUSED = "Paused"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclasses.dataclass(frozen=True)
class Action:
    kind: ActionKind
    target: str  # kubeadm name, host file or component
    reason: Reason
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "action": self.kind,
            "target": self.target,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclasses.dataclass(frozen=True)
class Finding:
    target: str
    reason: Reason
    severity: Severity
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {
            "target": self.target,
            "reason": self.reason,
            "severity": self.severity,
            "detail": self.detail,
        }


@dataclasses.dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    findings: tuple[Finding, ...]

    def of(self, kind: ActionKind) -> list[Action]:
        return [a for a in self.actions if a.kind == kind]

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        return {
            "actions": [a.to_dict() for a in self.actions],
            "findings": [f.to_dict() for f in self.findings],
        }


def plan(spec: policy.NodeSpec, observed: Observed, now: dt.datetime) -> Plan:
    """Decide what one pass does. Pure: no disk, clock or network."""
    actions: list[Action] = []
    findings: list[Finding] = []
    if observed.journal_pending:
        findings.append(
            Finding(
                "journal",
                Reason.JOURNAL_PENDING,
                Severity.WARNING,
                "a pass was interrupted; the next `kucero node` pass completes it first",
            )
        )
    findings += [
        Finding(e.split(":", 1)[0], Reason.UNREADABLE, Severity.ERROR, e) for e in observed.errors
    ]
    findings += _ca_findings(spec, observed, now)

    renewals = _renewals(spec, observed, now, findings) if spec.kubeadm.enabled else []
    actions += renewals
    actions += _static_pod_restarts(spec, observed, renewals, findings)
    kubelet_actions = _kubelet(spec, observed, now, findings)
    actions += kubelet_actions
    actions += _kubelet_restart(spec, observed, kubelet_actions, findings)

    if spec.paused and actions:
        findings.append(
            Finding(
                "policy",
                Reason.PAUSED,
                Severity.INFO,
                f"spec.paused is true: {len(actions)} action(s) withheld: "
                + ", ".join(f"{a.kind} {a.target}" for a in actions),
            )
        )
        actions = []
    return Plan(tuple(actions), tuple(findings))


def _ca_findings(spec: policy.NodeSpec, observed: Observed, now: dt.datetime) -> list[Finding]:
    out = []
    for ca in observed.cas.values():
        if ca.error:
            out.append(Finding(ca.name, Reason.UNREADABLE, Severity.ERROR, ca.error))
        elif ca.cert is not None:
            left = ca.cert.not_valid_after_utc - now
            if left <= dt.timedelta(0):
                out.append(
                    Finding(
                        ca.name,
                        Reason.CA_EXPIRED,
                        Severity.ERROR,
                        "CA expired; kucero never renews CAs, renew it by hand",
                    )
                )
            elif left < spec.kubeadm.renew_before:
                out.append(
                    Finding(
                        ca.name,
                        Reason.CA_EXPIRING,
                        Severity.WARNING,
                        f"CA expires in {duration.human(left)}; kucero never renews CAs, renew it by hand",
                    )
                )
    return out


def _renewals(
    spec: policy.NodeSpec, observed: Observed, now: dt.datetime, findings: list[Finding]
) -> list[Action]:
    wanted = set(spec.kubeadm.certificates) or set(kubeadm.NAMES)
    out = []
    for name in kubeadm.NAMES:
        leaf = observed.leaves.get(name)
        if leaf is None or name not in wanted:
            continue
        action = _renewal(spec, observed, leaf, now, findings)
        if action is not None:
            out.append(action)
    return out


def _renewal(
    spec: policy.NodeSpec,
    observed: Observed,
    leaf: LeafFile,
    now: dt.datetime,
    findings: list[Finding],
) -> Action | None:
    def skip(reason: Reason, severity: Severity, detail: str) -> Action | None:
        findings.append(Finding(leaf.name, reason, severity, detail))
        return None

    if leaf.error is not None or leaf.cert is None:
        return skip(Reason.UNREADABLE, Severity.ERROR, leaf.error or f"{leaf.path}: no certificate")
    # Broken pairs are reported whether or not they are due: a client using them fails today.
    if not leaf.key_matches:
        return skip(
            Reason.KEY_MISMATCH,
            Severity.ERROR,
            f"{leaf.path}: certificate does not match its key; left untouched",
        )
    ca = observed.cas[leaf.ca]
    if ca.cert is not None and not leaf.issued_by_ca:
        return skip(
            Reason.ISSUER_MISMATCH,
            Severity.ERROR,
            f"{leaf.path}: not signed by {ca.path}; left untouched",
        )
    not_after = leaf.cert.not_valid_after_utc
    left = not_after - now
    if left >= spec.kubeadm.renew_before:
        return None
    if leaf.externally_managed:
        return skip(
            Reason.EXTERNALLY_MANAGED,
            Severity.WARNING,
            f"expires in {duration.human(left)} but the {leaf.ca} key is absent: renew it where the CA is kept",
        )
    if ca.cert is None:
        return skip(
            Reason.CA_UNAVAILABLE, Severity.ERROR, ca.error or f"{ca.path}: CA certificate missing"
        )
    if ca.key_error is not None:
        return skip(Reason.CA_UNAVAILABLE, Severity.ERROR, f"cannot renew: {ca.key_error}")
    if ca.cert.not_valid_after_utc <= now:
        return skip(Reason.CA_UNAVAILABLE, Severity.ERROR, f"cannot renew: {leaf.ca} has expired")
    if not_after >= ca.cert.not_valid_after_utc:
        return skip(
            Reason.LIMITED_BY_CA,
            Severity.WARNING,
            f"already valid until its CA {leaf.ca} expires; renew the CA",
        )
    reason = Reason.EXPIRED if left <= dt.timedelta(0) else Reason.NEARING_EXPIRY
    detail = (
        f"expired {duration.human(-left)} ago"
        if reason == Reason.EXPIRED
        else f"expires in {duration.human(left)} (renewBefore {duration.human(spec.kubeadm.renew_before)})"
    )
    return Action(ActionKind.RENEW, leaf.name, reason, detail)


def _static_pod_restarts(
    spec: policy.NodeSpec, observed: Observed, renewals: list[Action], findings: list[Finding]
) -> list[Action]:
    needed: dict[str, list[str]] = {}
    for action in renewals:
        for component in kubeadm.LEAF_BY_NAME[action.target].components:
            if component in observed.manifests:
                needed.setdefault(component, []).append(action.target)
    pending = [
        c
        for c in observed.pending_restarts
        if c in kubeadm.COMPONENTS and c in observed.manifests and c not in needed
    ]
    if spec.kubeadm.restart == "none":
        for component in sorted(needed, key=kubeadm.COMPONENTS.index):
            findings.append(
                Finding(
                    component,
                    Reason.RESTART_REQUIRED,
                    Severity.INFO,
                    "kubeadm.restart is none: restart it by hand to load "
                    + ", ".join(needed[component]),
                )
            )
        return []
    out = []
    for component in kubeadm.COMPONENTS:
        if component in needed:
            out.append(
                Action(
                    ActionKind.RESTART_STATIC_POD,
                    component,
                    Reason.CERTIFICATE_RENEWED,
                    "loads " + ", ".join(needed[component]),
                )
            )
        elif component in pending:
            out.append(
                Action(
                    ActionKind.RESTART_STATIC_POD,
                    component,
                    Reason.PENDING_RESTART,
                    "an earlier restart did not complete",
                )
            )
    return out


def _kubelet(
    spec: policy.NodeSpec, observed: Observed, now: dt.datetime, findings: list[Finding]
) -> list[Action]:
    state = observed.kubelet
    out = []
    conf = state.conf
    if conf is not None and conf.error is not None:
        findings.append(Finding("kubelet.conf", Reason.UNREADABLE, Severity.ERROR, conf.error))
    elif (
        conf is not None
        and conf.credentials is not None
        and conf.credentials.embedded
        and spec.kubelet.fix_kubelet_conf
    ):
        problem = state.client_current_error or (
            "missing"
            if state.client_current is None
            else kubelet.client_cert_problem(
                state.client_current,
                state.client_current_key_matches,
                observed.node_name,
                now,
                state.client_current_issued_by_ca,
            )
        )
        if problem is None:
            out.append(
                Action(
                    ActionKind.FIX_KUBELET_CONF,
                    kubeadm.KUBELET_CONF,
                    Reason.EMBEDDED_CLIENT_CERT,
                    f"use {kubeadm.KUBELET_CLIENT_CURRENT} instead of embedded data",
                )
            )
        else:
            detail = (
                problem
                if problem.startswith("/")
                else f"{kubeadm.KUBELET_CLIENT_CURRENT}: {problem}"
            )
            findings.append(
                Finding(
                    "kubelet.conf",
                    Reason.KUBELET_CLIENT_CERT_UNUSABLE,
                    Severity.WARNING,
                    "embedded client certificate kept: " + detail,
                )
            )
    if state.config_error is not None:
        findings.append(
            Finding("kubelet-config", Reason.UNREADABLE, Severity.ERROR, state.config_error)
        )
    elif state.config is not None:
        desired = kubelet.desired_config(
            spec.kubelet.rotate_client_certificates, spec.kubelet.rotate_server_certificates
        )
        changes = kubelet.config_changes(state.config, desired)
        if changes:
            detail = ", ".join(
                f"{k}: {state.config.get(k)!s} -> {v}".replace("True", "true")
                .replace("False", "false")
                .replace("None", "unset")
                for k, v in changes.items()
            )
            out.append(
                Action(
                    ActionKind.SET_KUBELET_CONFIG,
                    kubeadm.KUBELET_CONFIG,
                    Reason.KUBELET_CONFIG_DIFFERS,
                    detail,
                )
            )
            if changes.get("serverTLSBootstrap"):
                # Nothing in core Kubernetes approves kubelet-serving CSRs: without an
                # approver the kubelet has no serving certificate (kubectl logs/exec break).
                findings.append(
                    Finding(
                        "kubelet",
                        Reason.SERVING_CSR_APPROVER_NEEDED,
                        Severity.WARNING,
                        "serverTLSBootstrap: the kubelet's serving CSRs must be approved "
                        "(kucero controller with csrSigner.enabled, or another approver)",
                    )
                )
    elif conf is not None:
        findings.append(
            Finding(
                "kubelet-config",
                Reason.KUBELET_CONFIG_MISSING,
                Severity.WARNING,
                f"{kubeadm.KUBELET_CONFIG}: missing; kubelet settings not managed",
            )
        )
    return out


def _kubelet_restart(
    spec: policy.NodeSpec,
    observed: Observed,
    kubelet_actions: list[Action],
    findings: list[Finding],
) -> list[Action]:
    pending = "kubelet" in observed.pending_restarts
    if not kubelet_actions and not pending:
        return []
    if spec.kubelet.restart == "none":
        if kubelet_actions:
            findings.append(
                Finding(
                    "kubelet",
                    Reason.RESTART_REQUIRED,
                    Severity.INFO,
                    "kubelet.restart is none: restart the kubelet by hand to apply the change",
                )
            )
        return []
    reason = Reason.KUBELET_CONFIG_CHANGED if kubelet_actions else Reason.PENDING_RESTART
    return [
        Action(ActionKind.RESTART_KUBELET, "kubelet", reason, "once, after all kubelet changes")
    ]
