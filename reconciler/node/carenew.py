"""Carry out the CA part of a plan: make the renewed CA certificates, and the writes that put
them in every trust anchor, for ``execute`` to apply in the pass's one transaction.

``renew-ca`` loads the CA key (it never leaves this function, is never logged and never
written), re-issues the CA certificate with it (``decide.carenewal.renew``: same key, subject
and extensions; it verifies the result is the same CA) and keeps the certificate for the
installs. ``install-ca`` rewrites one anchor with the certificate its CA converges to: the one
just renewed, or the one the plan accepted (published, or the CA file itself when an anchor
lags behind it), checked again here against the CA on disk.

A failed renewal fails the installs of that CA too (they have nothing to install), and nothing
of that CA is written; the other CAs go on. Idempotent: a pass that finds every anchor current
plans nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from cryptography import x509

from reconciler.decide import caplan, carenewal, pki
from reconciler.model import actions, hoststate, kubeadm, nodespec
from reconciler.node import host as host_
from reconciler.node import keys, transaction, trustanchors

A = actions.ActionKind


@dataclasses.dataclass
class Prepared:
    """What the CA actions of a plan come to before anything is written."""

    certs: dict[str, x509.Certificate] = dataclasses.field(default_factory=dict)  # CA name ->
    writes: list[tuple[actions.Action, transaction.Write]] = dataclasses.field(default_factory=list)
    renewed: list[actions.Action] = dataclasses.field(default_factory=list)
    failed: list[actions.Result] = dataclasses.field(default_factory=list)
    # CA name -> the certificate its own file held before (for kucero's state file)
    replaced: dict[str, x509.Certificate] = dataclasses.field(default_factory=dict)

    @property
    def installed_paths(self) -> list[str]:
        return [w.path for _, w in self.writes]


def prepare(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    the_plan: actions.Plan,
    now: dt.datetime,
) -> Prepared:
    out = Prepared()
    targets = caplan.plan(spec, observed, now).targets
    for action in the_plan.of(A.RENEW_CA):
        try:
            out.certs[action.target] = _renew(host, spec, observed, action.target, now)
        except (host_.HostError, pki.PKIError) as e:
            out.failed.append(actions.Result(action, False, str(e)))
            continue
        out.renewed.append(action)
    for name, target in targets.items():
        if name not in out.certs and target.cert is not None:
            out.certs[name] = target.cert
    by_path = {a.path: a for a in observed.anchors}
    for action in the_plan.of(A.INSTALL_CA):
        anchor = by_path.get(action.target)
        cert = out.certs.get(anchor.ca) if anchor is not None else None
        if anchor is None or cert is None:
            why = "no trust anchor observed there" if anchor is None else "its CA was not renewed"
            out.failed.append(actions.Result(action, False, f"not installed: {why}"))
            continue
        local = observed.cas[anchor.ca].cert
        verdict = carenewal.check_published(cert, local, now) if local else None
        if verdict is None or not verdict.accepted:
            detail = verdict.detail if verdict else "no CA certificate on this node"
            out.failed.append(actions.Result(action, False, f"not installed: {detail}"))
            continue
        out.writes.append((action, trustanchors.write(anchor, cert)))
        if action.target == kubeadm.CA_BY_NAME[anchor.ca].cert and local is not None:
            out.replaced[anchor.ca] = local
    return out


def _renew(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    name: str,
    now: dt.datetime,
) -> x509.Certificate:
    ca = kubeadm.CA_BY_NAME[name]
    cert = observed.cas[name].cert
    if cert is None:
        raise pki.PKIError(f"{ca.cert}: CA certificate disappeared")
    data = host.read(ca.key)
    if data is None:
        raise host_.HostError(f"{ca.key}: CA key disappeared")
    try:
        key = pki.load_key(data)
    except pki.PKIError as e:
        raise pki.PKIError(f"{ca.key}: {e}") from None  # names the file, never the key
    try:
        return carenewal.renew(cert, key, keys.new_serial(), now, spec.ca.certificate_validity)
    except carenewal.CARenewalError as e:
        raise pki.PKIError(f"{name}: {e}; nothing written") from None


def previous_entry(cert: x509.Certificate) -> dict[str, str]:
    """What kucero's state file keeps of a CA certificate a renewal replaced: its end (until
    which kubeconfigs handed out before the renewal keep working) and its fingerprint."""
    return {
        "notAfter": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256": carenewal.fingerprint(cert),
    }
