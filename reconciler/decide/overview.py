"""``kucero status``: one line per Node from its ``kucero.io/desired`` and ``kucero.io/status``
annotations. Pure: the annotation values and ``now`` come in, rows and text go out.

A row says the phase the node reported, the revision it reached and whether that is the
revision the controller wants for it (``upToDate``), when the next managed certificate enters
its renewal window (``notAfter - renewBefore`` of the desired state, for the kubeadm names the
node reported), the last successful rotation, and the node's message (why it is not
converged).

Edge cases: a Node without either annotation shows ``<none>`` (kucero never ran there, or the
controller has not reached it); a value that is not kucero's (hand-edited, truncated) shows
``<invalid>`` and never stops the others from being shown. The status is written by the node
itself, so it is shown, never trusted: the table escapes control characters
(``report.table``) and cuts the message at ``MESSAGE_WIDTH`` (``-o json`` has all of it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.decide import desired, duration, report, status
from reconciler.model import kubeadm, nodespec

NONE = "<none>"
INVALID = "<invalid>"
# characters of the message in the table: one line of a wide terminal
MESSAGE_WIDTH = 100


@dataclasses.dataclass(frozen=True)
class Row:
    node: str
    phase: str  # a status.Phase, NONE or INVALID
    revision: str | None
    desired_revision: str | None  # None: no usable desired state (see desired_error)
    desired_error: str | None  # why there is none; None when there is one
    next_renewal: dt.datetime | None
    next_renewal_certificate: str | None
    last_rotation: dt.datetime | None
    message: str
    certificates: Mapping[str, str]

    @property
    def up_to_date(self) -> bool | None:
        """Converged (or paused) at the revision it is meant to have; None: not known."""
        if self.desired_revision is None or self.phase in (NONE, INVALID):
            return None
        settled = self.phase in (status.Phase.CONVERGED, status.Phase.PAUSED)
        return settled and self.revision == self.desired_revision


def row(node: str, desired_text: str | None, status_text: str | None) -> Row:
    """The row of one Node from its two annotation values."""
    reported = status.decode(status_text)
    phase = str(reported.phase) if reported else (INVALID if status_text else NONE)
    spec: nodespec.NodeSpec | None = None
    desired_error: str | None = f"{desired.ANNOTATION} is not set"
    if desired_text:
        try:
            spec, desired_error = desired.decode(desired_text), None
        except desired.DesiredError as e:
            desired_error = str(e)
    certificates = dict(reported.certificates) if reported else {}
    next_at, next_name = None, None
    if spec is not None and spec.kubeadm.enabled:
        wanted = set(spec.kubeadm.certificates) or set(kubeadm.NAMES)
        moments = [
            (when - spec.kubeadm.renew_before, name)
            for name, text in certificates.items()
            if name in wanted and (when := status.parse_time(text)) is not None
        ]
        if moments:
            next_at, next_name = min(moments)
    return Row(
        node=node,
        phase=phase,
        revision=reported.revision if reported else None,
        desired_revision=spec.revision if spec else None,
        desired_error=desired_error,
        next_renewal=next_at,
        next_renewal_certificate=next_name,
        last_rotation=reported.last_rotation if reported else None,
        message=reported.message if reported else "",
        certificates=certificates,
    )


def to_dict(r: Row) -> dict[str, Any]:
    """The row for ``-o json``: times in RFC 3339, every field, the whole message."""
    return {
        "node": r.node,
        "phase": r.phase,
        "revision": r.revision,
        "desiredRevision": r.desired_revision,
        "desiredError": r.desired_error,
        "upToDate": r.up_to_date,
        "nextRenewal": status.rfc3339(r.next_renewal) if r.next_renewal else None,
        "nextRenewalCertificate": r.next_renewal_certificate,
        "lastRotation": status.rfc3339(r.last_rotation) if r.last_rotation else None,
        "message": r.message,
        "certificates": dict(sorted(r.certificates.items())),
    }


def table(rows: Sequence[Row], now: dt.datetime) -> str:
    header = ["NODE", "PHASE", "REVISION", "UP-TO-DATE", "NEXT RENEWAL", "LAST ROTATION"]
    lines = [
        [
            r.node,
            r.phase,
            r.revision or NONE,
            {True: "yes", False: "no", None: "-"}[r.up_to_date],
            _next(r.next_renewal, r.next_renewal_certificate, now),
            _ago(r.last_rotation, now),
            _cut(r.message),
        ]
        for r in rows
    ]
    return report.table([*header, "MESSAGE"], lines)


def dumps(rows: Sequence[Row]) -> str:
    return json.dumps([to_dict(r) for r in rows], indent=2)


def _next(moment: dt.datetime | None, name: str | None, now: dt.datetime) -> str:
    """``2027-04-02 (in 304d, apiserver)``; ``due`` once the window has begun."""
    if moment is None:
        return "-"
    when = "due" if moment <= now else f"in {duration.human(moment - now)}"
    return f"{moment:%Y-%m-%d} ({when}, {name})"


def _ago(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return "-"
    return f"{moment:%Y-%m-%d} ({duration.human(max(now - moment, dt.timedelta()))} ago)"


def _cut(message: str) -> str:
    return message if len(message) <= MESSAGE_WIDTH else message[: MESSAGE_WIDTH - 3] + "..."
