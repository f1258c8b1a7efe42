"""What a pass decides and what came of it: actions with reasons, findings, results.

Reasons are ``str`` enums so one value reads the same in a log line, an Event, an annotation
and a metric label.
"""

from __future__ import annotations

import dataclasses
import enum


class ActionKind(enum.StrEnum):
    RENEW = "renew"
    RESTART_STATIC_POD = "restart-static-pod"
    FIX_KUBELET_CONF = "fix-kubelet-conf"
    SET_KUBELET_CONFIG = "set-kubelet-config"
    RESTART_KUBELET = "restart-kubelet"
    # CA renewal (policy ca.mode: renew): make the renewed CA certificate from this node's CA
    # key (offline only; in a cluster the leader does it once), then put it in a trust anchor
    RENEW_CA = "renew-ca"
    INSTALL_CA = "install-ca"


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
    SERVING_CSR_APPROVER_UNKNOWN = "ServingCSRApproverUnknown"
    CLIENT_ROTATION_REQUIRED = "ClientRotationRequired"
    JOURNAL_PENDING = "InterruptedPassPending"
    # a renewal or edit that would write through shared or foreign files (issue 6)
    SHARED_FILE = "SharedFile"  # a file another certificate, kubeconfig or CA also uses
    CA_FILE = "WouldWriteCAFile"  # a target resolves to a CA's certificate or key
    NOT_KUBEADM_MANAGED = "NotKubeadmManaged"  # kubeconfig without embedded client cert/key
    CA_AT_LEAF_PATH = "CACertificateAtLeafPath"  # CA:TRUE where kubeadm keeps a leaf
    CA_NOT_YET_VALID = "CANotYetValid"
    PAUSED = "Paused"
    # CA renewal (decide.caplan)
    CA_DUE = "CADue"  # renew-ca: the CA certificate ends within ca.renewBefore
    CA_RENEWED = "CARenewed"  # install-ca: a trust anchor holds an older certificate of the CA
    CA_INSTALLED = "CAInstalled"  # a restart that loads a trust anchor just rewritten
    CA_REFUSED = "CARefused"  # a published CA certificate that is not this node's CA
    CA_AWAITING_PUBLICATION = "CAAwaitingPublication"  # due; the leader has not published yet
    CA_INSTALLS_ONLY = "CAInstallsOnly"  # no CA key here (a worker): it only installs
    CA_NOT_SELF_SIGNED = "CANotSelfSigned"  # an intermediate: renewed where its issuer is
    TRUST_ANCHOR_NOT_WRITABLE = "TrustAnchorNotWritable"  # outside kucero's directories, or shared
    # what the node daemon says in Events about itself
    INVALID_DESIRED = "InvalidDesiredState"
    ROTATED_WITHOUT_SLOT = "RotatedWithoutSlot"
    PASS_FAILED = "PassFailed"
    HOST_COMMAND_REFUSED = "HostCommandRefused"  # a default host command would act elsewhere


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

    def log_fields(self) -> dict[str, str]:
        """What a log line about this action carries: a log search asks for a certificate, a
        component or a file by that name."""
        target = _TARGET_FIELD.get(self.kind, "file")
        return {target: self.target, "action": str(self.kind), "reason": str(self.reason)}


_TARGET_FIELD = {
    ActionKind.RENEW: "certificate",
    ActionKind.RESTART_STATIC_POD: "component",
    ActionKind.RESTART_KUBELET: "component",
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


@dataclasses.dataclass(frozen=True)
class Result:
    action: Action
    ok: bool
    message: str
    # for a static pod restart: component, result (restarted, rolled-back, rollback-failed),
    # seconds, waited, message
    restart: dict[str, object] | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {**self.action.to_dict(), "ok": self.ok, "message": self.message}
        if self.restart is not None:
            out["restart"] = self.restart
        return out
