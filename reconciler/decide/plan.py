"""The plan: a pure function from (node spec, observed host, now) to ordered actions.

``plan`` touches no disk, clock or network; everything it needs is in its arguments, so it is
tested as a table of named cases with a fixed ``now``. It follows cert-manager's shape: a chain
of named checks turns each observed file into either an action with a reason
(``NearingExpiry``, ``EmbeddedClientCert``, ...) or a finding that explains why nothing will be
done (``ExternallyManaged``, ``KeyMismatch``, ...). It never plans anything for an externally
managed certificate, a certificate whose key does not match, or a file it could not parse. CAs
are ``decide.caplan``'s: reported, or with ``ca.mode: renew`` renewed with the same key and
installed in every trust anchor.

Order of actions: CA renewal and trust-anchor installs, renewals (kubeadm order), static pod
restarts (etcd last), then the kubelet repairs and a single kubelet restart at the end. A leaf
whose CA this pass renews is signed for the renewed CA certificate (its end limits the leaf).
"""

from __future__ import annotations

import datetime as dt

from reconciler.decide import caplan, components, duration, kubelet, pki, targets, trustanchors
from reconciler.model import actions, hoststate, kubeadm, nodespec

A = actions.ActionKind


def plan(spec: nodespec.NodeSpec, observed: hoststate.Observed, now: dt.datetime) -> actions.Plan:
    """Decide what one pass does. Pure: no disk, clock or network."""
    planned: list[actions.Action] = []
    findings: list[actions.Finding] = []
    if observed.journal_pending:
        findings.append(
            actions.Finding(
                "journal",
                actions.Reason.JOURNAL_PENDING,
                actions.Severity.WARNING,
                "a pass was interrupted; the next `kucero node` pass completes it first",
            )
        )
    findings += [
        actions.Finding(e.split(":", 1)[0], actions.Reason.UNREADABLE, actions.Severity.ERROR, e)
        for e in observed.errors
    ]
    cas = caplan.plan(spec, observed, now)
    findings += cas.findings

    renewals = _renewals(spec, observed, now, findings, cas.targets) if spec.kubeadm.enabled else []
    renewals = targets.refuse_shared(renewals, observed, findings)
    ca_actions = _ca_actions(cas, renewals, observed, findings)
    planned += ca_actions
    planned += renewals
    ca_restarts = dict(
        caplan.restarts([a.target for a in ca_actions if a.kind == A.INSTALL_CA], observed)
    )
    planned += _static_pod_restarts(spec, observed, renewals, findings, ca_restarts)
    kubelet_actions = targets.refuse_shared(
        _kubelet(spec, observed, now, findings), observed, findings
    )
    planned += kubelet_actions
    planned += _kubelet_restart(
        spec, observed, kubelet_actions, findings, ca_restarts.get(trustanchors.KUBELET)
    )

    if spec.paused and planned:
        findings.append(
            actions.Finding(
                "policy",
                actions.Reason.PAUSED,
                actions.Severity.INFO,
                f"spec.paused is true: {len(planned)} action(s) withheld: "
                + ", ".join(f"{a.kind} {a.target}" for a in planned),
            )
        )
        planned = []
    return actions.Plan(tuple(planned), tuple(findings))


def _ca_actions(
    cas: caplan.CAPlan,
    renewals: list[actions.Action],
    observed: hoststate.Observed,
    findings: list[actions.Finding],
) -> list[actions.Action]:
    """The CA plan's actions, without installs into a kubeconfig this pass renews anyway (its
    renewal embeds the CA it converges to), and without any that would write a shared file."""
    renewed = {kubeadm.LEAF_BY_NAME[a.target].path for a in renewals}
    kept = [a for a in cas.actions if not (a.kind == A.INSTALL_CA and a.target in renewed)]
    return targets.refuse_shared(kept, observed, findings)


def _renewals(
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    now: dt.datetime,
    findings: list[actions.Finding],
    ca_targets: dict[str, caplan.Target],
) -> list[actions.Action]:
    wanted = set(spec.kubeadm.certificates) or set(kubeadm.NAMES)
    out = []
    for name in kubeadm.NAMES:
        leaf = observed.leaves.get(name)
        if leaf is None or name not in wanted:
            continue
        target = ca_targets.get(leaf.ca)
        action = _renewal(spec, observed, leaf, now, findings, target)
        if action is not None:
            out.append(action)
    return out


def _renewal(
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    leaf: hoststate.LeafFile,
    now: dt.datetime,
    findings: list[actions.Finding],
    ca_target: caplan.Target | None = None,
) -> actions.Action | None:
    """``ca_target``: the CA certificate this pass converges the leaf's CA to (a renewal
    planned or published): the leaf is signed for it, so its end is what limits the leaf."""

    def skip(
        reason: actions.Reason, severity: actions.Severity, detail: str
    ) -> actions.Action | None:
        findings.append(actions.Finding(leaf.name, reason, severity, detail))
        return None

    if leaf.error is not None or leaf.cert is None:
        return skip(
            actions.Reason.UNREADABLE,
            actions.Severity.ERROR,
            leaf.error or f"{leaf.path}: no certificate",
        )
    due = leaf.cert.not_valid_after_utc - now < spec.kubeadm.renew_before
    if pki.is_ca(leaf.cert):
        return skip(
            actions.Reason.CA_AT_LEAF_PATH,
            actions.Severity.ERROR,
            f"{leaf.path}: a CA certificate (CA:TRUE) where kubeadm keeps a leaf; never renewed, left untouched",
        )
    creds = leaf.credentials
    if creds is not None and (creds.cert_data is None or creds.key_data is None):
        # kubeadm renews only kubeconfigs with embedded client credentials; a file reference
        # may point anywhere (another kubeconfig's certificate, the CA key): not ours either.
        return skip(
            actions.Reason.NOT_KUBEADM_MANAGED,
            actions.Severity.WARNING if due else actions.Severity.INFO,
            f"{leaf.path}: client certificate and key are not both embedded; kubeadm does not "
            "renew such a kubeconfig and neither does kucero",
        )
    # Broken pairs are reported whether or not they are due: a client using them fails today.
    if not leaf.key_matches:
        return skip(
            actions.Reason.KEY_MISMATCH,
            actions.Severity.ERROR,
            f"{leaf.path}: certificate does not match its key; left untouched",
        )
    ca = observed.cas[leaf.ca]
    if ca.cert is not None and not leaf.issued_by_ca:
        return skip(
            actions.Reason.ISSUER_MISMATCH,
            actions.Severity.ERROR,
            f"{leaf.path}: not signed by {ca.path}; left untouched",
        )
    not_after = leaf.cert.not_valid_after_utc
    left = not_after - now
    if left >= spec.kubeadm.renew_before:
        return None
    if leaf.externally_managed:
        return skip(
            actions.Reason.EXTERNALLY_MANAGED,
            actions.Severity.WARNING,
            f"expires in {duration.human(left)} but the {leaf.ca} key is absent: renew it where the CA is kept",
        )
    if ca.cert is None:
        return skip(
            actions.Reason.CA_UNAVAILABLE,
            actions.Severity.ERROR,
            ca.error or f"{ca.path}: CA certificate missing",
        )
    if ca.key_error is not None:
        return skip(
            actions.Reason.CA_UNAVAILABLE, actions.Severity.ERROR, f"cannot renew: {ca.key_error}"
        )
    if ca.cert.not_valid_before_utc > now:
        return skip(
            actions.Reason.CA_NOT_YET_VALID,
            actions.Severity.ERROR,
            f"cannot renew: {leaf.ca} is not valid before {ca.cert.not_valid_before_utc.isoformat()}",
        )
    ca_end = ca_target.not_after if ca_target is not None else ca.cert.not_valid_after_utc
    if ca_end <= now:
        return skip(
            actions.Reason.CA_UNAVAILABLE,
            actions.Severity.ERROR,
            f"cannot renew: {leaf.ca} has expired",
        )
    if not_after >= ca_end:
        return skip(
            actions.Reason.LIMITED_BY_CA,
            actions.Severity.WARNING,
            f"already valid until its CA {leaf.ca} expires; renew the CA",
        )
    reason = actions.Reason.EXPIRED if left <= dt.timedelta(0) else actions.Reason.NEARING_EXPIRY
    detail = (
        f"expired {duration.human(-left)} ago"
        if reason == actions.Reason.EXPIRED
        else f"expires in {duration.human(left)} (renewBefore {duration.human(spec.kubeadm.renew_before)})"
    )
    return actions.Action(actions.ActionKind.RENEW, leaf.name, reason, detail)


def _static_pod_restarts(
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    renewals: list[actions.Action],
    findings: list[actions.Finding],
    ca_restarts: dict[str, list[str]] | None = None,
) -> list[actions.Action]:
    # read from the manifests: which static pods load a renewed file (see decide.components)
    needed = dict(components.affected([a.target for a in renewals], observed.static_pods))
    ca_restarts = ca_restarts or {}
    ca_only = {c for c in ca_restarts if c in kubeadm.COMPONENTS and c not in needed}
    for component, anchors in ca_restarts.items():
        if component in kubeadm.COMPONENTS:
            needed[component] = needed.get(component, []) + anchors
    pending = [
        c
        for c in observed.pending_restarts
        if c in kubeadm.COMPONENTS and c in observed.static_pods and c not in needed
    ]
    if spec.kubeadm.restart == "none":
        for component in kubeadm.COMPONENTS:
            if component in needed:
                detail = "kubeadm.restart is none: restart it by hand to load " + ", ".join(
                    needed[component]
                )
            elif component in observed.restart_required:
                detail = "kubeadm.restart is none: still runs the certificate it had before renewal"
            else:
                continue
            findings.append(
                actions.Finding(
                    component,
                    actions.Reason.RESTART_REQUIRED,
                    actions.Severity.INFO,
                    detail,
                )
            )
        return []
    out = []
    for component in kubeadm.COMPONENTS:
        if component in needed:
            out.append(
                actions.Action(
                    actions.ActionKind.RESTART_STATIC_POD,
                    component,
                    actions.Reason.CA_INSTALLED
                    if component in ca_only
                    else actions.Reason.CERTIFICATE_RENEWED,
                    "loads " + ", ".join(needed[component]),
                )
            )
        elif component in pending:
            out.append(
                actions.Action(
                    actions.ActionKind.RESTART_STATIC_POD,
                    component,
                    actions.Reason.PENDING_RESTART,
                    "an earlier restart did not complete",
                )
            )
    return out


def _kubelet(
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    now: dt.datetime,
    findings: list[actions.Finding],
) -> list[actions.Action]:
    state = observed.kubelet
    out = []
    conf = state.conf
    if conf is not None and conf.error is not None:
        findings.append(
            actions.Finding(
                "kubelet.conf", actions.Reason.UNREADABLE, actions.Severity.ERROR, conf.error
            )
        )
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
                actions.Action(
                    actions.ActionKind.FIX_KUBELET_CONF,
                    kubeadm.KUBELET_CONF,
                    actions.Reason.EMBEDDED_CLIENT_CERT,
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
                actions.Finding(
                    "kubelet.conf",
                    actions.Reason.KUBELET_CLIENT_CERT_UNUSABLE,
                    actions.Severity.WARNING,
                    "embedded client certificate kept: " + detail,
                )
            )
    if state.config_error is not None:
        findings.append(
            actions.Finding(
                "kubelet-config",
                actions.Reason.UNREADABLE,
                actions.Severity.ERROR,
                state.config_error,
            )
        )
    elif state.config is not None:
        fixing = any(a.kind == actions.ActionKind.FIX_KUBELET_CONF for a in out)
        edit = kubelet.config_edit(spec, state.config, kubelet.conf_on_rotated_file(state, fixing))
        findings += edit.findings
        if edit.changes:
            detail = ", ".join(
                f"{k}: {_yaml_word(state.config.get(k))} -> {_yaml_word(v)}"
                for k, v in edit.changes.items()
            )
            out.append(
                actions.Action(
                    actions.ActionKind.SET_KUBELET_CONFIG,
                    kubeadm.KUBELET_CONFIG,
                    actions.Reason.KUBELET_CONFIG_DIFFERS,
                    detail,
                )
            )
    elif conf is not None:
        findings.append(
            actions.Finding(
                "kubelet-config",
                actions.Reason.KUBELET_CONFIG_MISSING,
                actions.Severity.WARNING,
                f"{kubeadm.KUBELET_CONFIG}: missing; kubelet settings not managed",
            )
        )
    return out


def _yaml_word(value: object) -> str:
    if value is None:
        return "unset"
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


def _kubelet_restart(
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    kubelet_actions: list[actions.Action],
    findings: list[actions.Finding],
    ca_anchors: list[str] | None = None,
) -> list[actions.Action]:
    """``ca_anchors``: the kubelet's trust anchors this pass rewrites (kubelet.conf, its
    clientCAFile); the kubelet loads its kubeconfig's CA only when it starts."""
    pending = "kubelet" in observed.pending_restarts
    if not kubelet_actions and not pending and not ca_anchors:
        return []
    if spec.kubelet.restart == "none":
        if ca_anchors:
            findings.append(
                actions.Finding(
                    "kubelet",
                    actions.Reason.RESTART_REQUIRED,
                    actions.Severity.INFO,
                    "kubelet.restart is none: restart the kubelet by hand to load the renewed "
                    "CA from " + ", ".join(ca_anchors),
                )
            )
        if kubelet_actions:
            findings.append(
                actions.Finding(
                    "kubelet",
                    actions.Reason.RESTART_REQUIRED,
                    actions.Severity.INFO,
                    "kubelet.restart is none: restart the kubelet by hand to apply the change",
                )
            )
        return []
    reason = (
        actions.Reason.KUBELET_CONFIG_CHANGED
        if kubelet_actions
        else actions.Reason.CA_INSTALLED
        if ca_anchors
        else actions.Reason.PENDING_RESTART
    )
    return [
        actions.Action(
            actions.ActionKind.RESTART_KUBELET, "kubelet", reason, "once, after all kubelet changes"
        )
    ]
