"""The CA part of a node's plan: report, renew, install in every trust anchor, restart.

With ``ca.mode: report`` (the default) the CAs are only reported: a CA certificate that ends
within ``ca.renewBefore``, has ended or is not valid yet is a finding. With ``renew``, for each
CA (``ca``, ``front-proxy-ca``, ``etcd-ca``) this node has:

1. the **target**: the latest-ending of the CA certificate on disk and the one the cluster
   publishes, if ``carenewal.check_published`` accepts it (anything else is a ``CARefused``
   finding and nothing of that CA is written). If even the target is due:
   - offline (``observed.published is None``: no cluster), a node holding the CA key renews it
     itself (``renew-ca``, same key and subject), and the target is that renewal;
   - in a cluster, only the leader renews (once, so every node trusts the same certificate):
     the node waits for the publication (``CAAwaitingPublication``);
   - a node without the key (a worker, or an external CA: ``ExternallyManaged``), with a key
     that does not match its certificate, or a CA that is not self-signed, renews nothing;
2. ``install-ca`` for every trust anchor (``decide.trustanchors``) that holds this CA only in a
   certificate ending before the target; an anchor that cannot be read, or lies outside the
   directories kucero writes (where its links and ``..`` lead, not how its path starts), is a
   finding and stays as it is;
3. the restarts: every static pod whose manifest names a rewritten anchor, and the kubelet for
   kubelet.conf and its clientCAFile (conservative: see docs/deploy.md for which components
   would reload a CA file by themselves).

A CA whose key does not match its certificate is reported and nothing of it is written, even
a published certificate: the node is broken, and guessing which half is right is not ours.

Pure: no disk, clock or network.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from cryptography import x509

from reconciler.decide import carenewal, duration, ownfiles, pki, trustanchors
from reconciler.model import actions, hoststate, kubeadm, nodespec

A = actions.ActionKind
R = actions.Reason
S = actions.Severity
Action = actions.Action
Finding = actions.Finding


@dataclasses.dataclass(frozen=True)
class Target:
    """The CA certificate a CA's anchors converge to. ``cert`` is None when this pass makes it
    (``renew-ca``); ``not_after`` is then the end it will have."""

    ca: str
    source: str
    cert: x509.Certificate | None
    not_after: dt.datetime


@dataclasses.dataclass
class CAPlan:
    actions: list[Action] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    targets: dict[str, Target] = dataclasses.field(default_factory=dict)

    def installs(self) -> list[str]:
        return [a.target for a in self.actions if a.kind == A.INSTALL_CA]


def control_plane(observed: hoststate.Observed) -> bool:
    """A node with static pods or kubeadm leaves: it may hold CA keys."""
    return bool(observed.manifests) or bool(observed.leaves)


def plan(spec: nodespec.NodeSpec, observed: hoststate.Observed, now: dt.datetime) -> CAPlan:
    """The CA actions and findings of one pass. Pure."""
    out = CAPlan()
    if spec.ca.mode == "renew" and observed.published is not None:
        out.findings += [
            actions.Finding("published", R.CA_REFUSED, S.ERROR, line)
            for line in observed.published.refused
        ]
        out.findings += [
            actions.Finding("published", R.CA_REFUSED, S.INFO, line)
            for line in observed.published.ignored
        ]
    for ca in observed.cas.values():
        if ca.error:
            out.findings.append(actions.Finding(ca.name, R.UNREADABLE, S.ERROR, ca.error))
        elif ca.cert is not None and ca.cert.not_valid_before_utc > now:
            out.findings.append(_not_yet_valid(ca.name, ca.cert))
        elif ca.cert is not None and spec.ca.mode != "renew":
            out.findings += _reported(spec, ca, now)
        elif ca.cert is not None:
            _renew(spec, observed, ca, now, out)
    # renewals first, then the installs in the table's order (the CA files, the kubeconfigs)
    order = {a.path: i for i, a in enumerate(observed.anchors)}
    out.actions.sort(key=lambda a: (a.kind != A.RENEW_CA, order.get(a.target, -1)))
    return out


def restarts(installed: list[str], observed: hoststate.Observed) -> list[tuple[str, list[str]]]:
    """``(component, [anchors it loads])`` for the static pods (restart order) and the kubelet
    that load any of ``installed``."""
    paths = set(installed)
    out = []
    for component in kubeadm.COMPONENTS:
        pod = observed.static_pods.get(component)
        loads = sorted(paths & pod.files) if pod is not None else []
        if loads:
            out.append((component, loads))
    kubelet = sorted(p for p in paths if trustanchors.loaded_by_kubelet(p, observed.kubelet.config))
    if kubelet:
        out.append((trustanchors.KUBELET, kubelet))
    return out


def other_nodes(renewed: list[str]) -> str:
    """What an operator must do on the other nodes after an offline renewal here."""
    files = " ".join(kubeadm.CA_BY_NAME[n].cert for n in renewed)
    return (
        f"renewed {', '.join(renewed)} on this node only. On every other node (control plane "
        f"and workers) install the same certificates: copy them into one file "
        f"(`cat {files} > kucero-ca-bundle.pem`) and run `kucero node --once --host-root / --policy FILE "
        "--ca-bundle kucero-ca-bundle.pem` there (it accepts only certificates with its CAs' "
        "subjects and keys); or, once the API server answers, let the leader publish them "
        "(docs/runbook.md, CA renewal)"
    )


# --- internals ---------------------------------------------------------------------------


def _not_yet_valid(name: str, cert: x509.Certificate) -> actions.Finding:
    return actions.Finding(
        name,
        R.CA_NOT_YET_VALID,
        S.ERROR,
        f"CA not valid before {cert.not_valid_before_utc.isoformat()}; nothing it signs is "
        "renewed (check the clock)",
    )


def _reported(
    spec: nodespec.NodeSpec, ca: hoststate.CAFile, now: dt.datetime
) -> list[actions.Finding]:
    assert ca.cert is not None
    left = ca.cert.not_valid_after_utc - now
    hint = "set spec.ca.mode: renew to renew it with the same key (docs/runbook.md)"
    if left <= dt.timedelta(0):
        return [actions.Finding(ca.name, R.CA_EXPIRED, S.ERROR, f"CA expired; {hint}")]
    if left < spec.ca.renew_before:
        detail = f"CA expires in {duration.human(left)}; {hint}"
        return [actions.Finding(ca.name, R.CA_EXPIRING, S.WARNING, detail)]
    return []


def _renew(
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    ca: hoststate.CAFile,
    now: dt.datetime,
    out: CAPlan,
) -> None:
    assert ca.cert is not None
    if ca.key_error is not None:
        detail = f"{ca.key_error}; nothing of {ca.name} is renewed or installed"
        out.findings.append(actions.Finding(ca.name, R.KEY_MISMATCH, S.ERROR, detail))
        return
    target = _target(spec, observed, ca, now, out)
    if target is None:
        return
    out.targets[ca.name] = target
    planned: set[str] = set()
    for anchor in observed.anchors:
        if anchor.ca != ca.name:
            continue
        if anchor.error is not None:
            out.findings.append(actions.Finding(anchor.path, R.UNREADABLE, S.ERROR, anchor.error))
            continue
        held = trustanchors.trusted_until(anchor, ca.cert)
        if held is None or held.not_valid_after_utc >= target.not_after:
            continue
        if _same_file_as(anchor.path, planned, observed):
            continue  # a link to an anchor already planned: installed through that path
        where = _resolved(anchor.path, observed)
        if not where.startswith(ownfiles.WRITABLE_PREFIXES):
            detail = (
                f"{'' if where == anchor.path else f'resolves to {where}, '}outside "
                f"{' and '.join(ownfiles.WRITABLE_PREFIXES)}, where kucero does not write: "
                f"replace its {ca.name} certificate by hand"
            )
            out.findings.append(
                actions.Finding(anchor.path, R.TRUST_ANCHOR_NOT_WRITABLE, S.ERROR, detail)
            )
            continue
        planned.add(anchor.path)
        detail = (
            f"{ca.name}: {held.not_valid_after_utc:%Y-%m-%d} -> {target.not_after:%Y-%m-%d} "
            f"({target.source})"
        )
        out.actions.append(actions.Action(A.INSTALL_CA, anchor.path, R.CA_RENEWED, detail))


def _target(
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    ca: hoststate.CAFile,
    now: dt.datetime,
    out: CAPlan,
) -> Target | None:
    assert ca.cert is not None
    best = Target(ca.name, ca.path, ca.cert, ca.cert.not_valid_after_utc)
    published = observed.published
    offered = published.cas.get(ca.name) if published is not None else None
    if published is not None and offered is not None:
        verdict = (
            carenewal.check_published(offered.cert, ca.cert, now)
            if offered.cert is not None
            else carenewal.Verdict(
                carenewal.Refusal(offered.refusal or carenewal.Refusal.UNPARSEABLE),
                offered.error or "no certificate",
            )
        )
        if verdict.refusal is not None:
            detail = (
                f"{published.source}: {ca.name} refused ({verdict.refusal}): {verdict.detail}; "
                "nothing written"
            )
            out.findings.append(actions.Finding(ca.name, R.CA_REFUSED, S.ERROR, detail))
        elif offered.cert is not None and offered.cert.not_valid_after_utc > best.not_after:
            source = f"published in {published.source}"
            best = Target(ca.name, source, offered.cert, offered.cert.not_valid_after_utc)
    assert best.cert is not None
    if not carenewal.due(best.cert, now, spec.ca.renew_before):
        return best
    left = best.not_after - now
    when = (
        f"ended {duration.human(-left)} ago"
        if left <= dt.timedelta(0)
        else (f"ends in {duration.human(left)}")
    )
    if published is not None:
        detail = (
            f"{ca.name} {when} (ca.renewBefore {duration.human(spec.ca.renew_before)}): "
            f"waiting for the leader to publish its renewal in {published.source}"
        )
        severity = S.ERROR if left <= dt.timedelta(0) else S.WARNING
        out.findings.append(actions.Finding(ca.name, R.CA_AWAITING_PUBLICATION, severity, detail))
        return best
    problem = _cannot_renew(ca, control_plane(observed))
    if problem is not None:
        out.findings.append(problem)
        return best
    out.actions.append(
        actions.Action(
            A.RENEW_CA,
            ca.name,
            R.CA_DUE,
            f"{when}: same key ({kubeadm.CA_BY_NAME[ca.name].key}) and subject, valid "
            f"{duration.human(spec.ca.certificate_validity)}",
        )
    )
    renewed_until = now + spec.ca.certificate_validity
    return Target(ca.name, f"renewed from {kubeadm.CA_BY_NAME[ca.name].key}", None, renewed_until)


def _cannot_renew(ca: hoststate.CAFile, is_control_plane: bool) -> actions.Finding | None:
    assert ca.cert is not None
    key = kubeadm.CA_BY_NAME[ca.name].key
    if not ca.key_present and is_control_plane:
        return actions.Finding(
            ca.name,
            R.EXTERNALLY_MANAGED,
            S.WARNING,
            f"{key} is absent (an external CA): kucero never renews it; renew it where its key "
            "is kept, then install it with --ca-bundle",
        )
    if not ca.key_present:
        return actions.Finding(
            ca.name,
            R.CA_INSTALLS_ONLY,
            S.INFO,
            f"this node has no {ca.name} key (a worker): it only installs the renewed CA the "
            "leader publishes, or one given with --ca-bundle",
        )
    if not pki.is_ca(ca.cert) or not carenewal.self_signed(ca.cert):
        return actions.Finding(
            ca.name,
            R.CA_NOT_SELF_SIGNED,
            S.ERROR,
            f"{ca.path} is not a self-signed CA (issuer {ca.cert.issuer.rfc4514_string()}): "
            "renew it where its issuer's key is kept",
        )
    return None


def _resolved(path: str, observed: hoststate.Observed) -> str:
    """Where an anchor's path really leads, every link and ``..`` resolved (as the write
    would follow them), so a kubelet ``clientCAFile`` of ``/var/lib/kubelet/../../srv/ca.crt``
    or one reached through a planted link is judged by where it ends, not by how it starts:
    the literal prefix once let kucero rewrite any host file holding the CA certificate.
    A path that could not be resolved is judged literally, ``..`` and all (never writable)."""
    found = observed.identities.get(path)
    if found is not None:
        return found.resolved
    return path if "/../" not in f"{path}/" else "/.."


def _same_file_as(path: str, planned: set[str], observed: hoststate.Observed) -> bool:
    """Whether ``path`` is, through a link, the same file as an anchor already planned."""
    found = observed.identities.get(path)
    if found is None:
        return False
    for other in planned:
        seen = observed.identities.get(other)
        if seen is not None and (
            found.resolved == seen.resolved
            or (found.device, found.inode) == (seen.device, seen.inode)
        ):
            return True
    return False
