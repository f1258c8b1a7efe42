"""What a node says about its CAs: the phase of each (``kucero.io/status``) and the end of the
certificate of it the node actually trusts (``kucero_ca_expiration_timestamp_seconds``).

"Actually trusts" is the earliest end over the CA's trust anchors on the node: a node whose
``pki/ca.crt`` is renewed but whose kubelet.conf still embeds the old certificate stops
working at the old end, and that is what an alert must see. Pure.
"""

from __future__ import annotations

import datetime as dt
import enum

from reconciler.decide import trustanchors
from reconciler.model import actions, hoststate

A = actions.ActionKind
R = actions.Reason


class Phase(enum.StrEnum):
    """A CA's phase on a node, in ``kucero.io/status`` (``ca.<name>.phase``)."""

    CURRENT = "Current"  # every anchor trusts the CA in force, which is not due
    DUE = "Due"  # ends within ca.renewBefore (report mode, or waiting for the publication)
    INSTALLING = "Installing"  # a renewal or install is still to be done
    REFUSED = "Refused"  # the published certificate is not this node's CA
    BLOCKED = "Blocked"  # cannot be renewed here: no usable key, not self-signed, a bad anchor


_PHASE_OF = {
    R.CA_REFUSED: Phase.REFUSED,
    R.KEY_MISMATCH: Phase.BLOCKED,
    R.EXTERNALLY_MANAGED: Phase.BLOCKED,
    R.CA_NOT_SELF_SIGNED: Phase.BLOCKED,
    R.TRUST_ANCHOR_NOT_WRITABLE: Phase.BLOCKED,
    R.CA_AWAITING_PUBLICATION: Phase.DUE,
    R.CA_EXPIRING: Phase.DUE,
    R.CA_EXPIRED: Phase.DUE,
}


def trusted(observed: hoststate.Observed) -> dict[str, dt.datetime]:
    """For each CA of the node: the end of the certificate of it the node trusts, the earliest
    over its trust anchors (the weakest one stops working first)."""
    out: dict[str, dt.datetime] = {}
    for name, ca in observed.cas.items():
        if ca.cert is None:
            continue
        ends = [
            held.not_valid_after_utc
            for anchor in observed.anchors
            if anchor.ca == name
            and (held := trustanchors.trusted_until(anchor, ca.cert)) is not None
        ]
        out[name] = min(ends) if ends else ca.cert.not_valid_after_utc
    return out


def phases(observed: hoststate.Observed, after: actions.Plan) -> dict[str, dict[str, str]]:
    """``{name: {"phase": ..., "notAfter": RFC 3339}}`` for each CA of the node, from the plan
    of what a next pass would do (``after``): what is left to do, and why not."""
    until = trusted(observed)
    anchors = {a.path: a.ca for a in observed.anchors}
    out = {}
    for name, when in until.items():
        phase = Phase.CURRENT
        for f in after.findings:
            mine = f.target == name or anchors.get(f.target) == name
            if mine and f.reason in _PHASE_OF and _PHASE_OF[f.reason] != Phase.DUE:
                phase = _PHASE_OF[f.reason]
                break
            if mine and f.reason in _PHASE_OF:
                phase = Phase.DUE
        if phase in (Phase.CURRENT, Phase.DUE) and any(
            (a.kind == A.RENEW_CA and a.target == name)
            or (a.kind == A.INSTALL_CA and anchors.get(a.target) == name)
            for a in after.actions
        ):
            phase = Phase.INSTALLING
        out[name] = {"phase": str(phase), "notAfter": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
    return out
