"""What operators read: expiration rows, plan and result tables, JSON documents.

Pure formatting: values in, strings and JSON-ready dicts out. The expiration table reads like
``kubeadm certs check-expiration`` (name, expires, residual time, CA, externally managed) so an
operator used to kubeadm finds the same columns.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.decide import duration
from reconciler.model import actions, hoststate, kubeadm


def expiration(
    observed: hoststate.Observed,
    now: dt.datetime,
    previous: Mapping[str, Mapping[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """One entry per certificate, kubeconfig and CA present on the node. ``previous``: CA name
    -> the certificate a CA renewal replaced (kucero's state file, ``caPrevious``): a CA row
    then says until when kubeconfigs handed out before the renewal work (``handedOutUntil``)."""
    rows = [_leaf_row(leaf, now, _leaf_renewer(leaf)) for leaf in observed.leaves.values()]
    if observed.kubelet.conf is not None:
        rows.append(_leaf_row(observed.kubelet.conf, now, "kubelet"))
    current = observed.kubelet.client_current
    if current is not None or observed.kubelet.client_current_error:
        rows.append(
            {
                "name": "kubelet-client-current",
                "kind": "certificate",
                "path": kubeadm.KUBELET_CLIENT_CURRENT,
                **_dates(current.not_valid_after_utc if current else None, now),
                "issuer": "ca",
                "externallyManaged": False,
                "renewedBy": "kubelet",
                "error": observed.kubelet.client_current_error,
            }
        )
    for ca in observed.cas.values():
        if ca.cert is None and ca.error is None:
            continue
        rows.append(
            {
                "name": ca.name,
                "kind": "ca",
                "path": ca.path,
                **_dates(ca.cert.not_valid_after_utc if ca.cert else None, now),
                "issuer": ca.name
                if ca.cert is None or ca.cert.issuer == ca.cert.subject
                else ca.cert.issuer.rfc4514_string(),
                "externallyManaged": not ca.key_present,
                "renewedBy": (
                    "kucero with ca.mode: renew (same key and subject), else nobody"
                    if ca.key_present
                    else f"nobody here: {kubeadm.CA_BY_NAME[ca.name].key} is absent (an "
                    "external CA: renew it where its key is kept)"
                ),
                "error": ca.error,
                **_handed_out(ca, (previous or {}).get(ca.name)),
            }
        )
    return rows


def _handed_out(ca: hoststate.CAFile, previous: Mapping[str, str] | None) -> dict[str, Any]:
    """Kubeconfigs handed out embed the CA certificate of their day: the one a renewal replaced
    (until its end), or before any renewal the current one."""
    if previous is not None:
        return {
            "handedOutUntil": previous.get("notAfter"),
            "previousNotAfter": previous.get("notAfter"),
        }
    end = ca.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ") if ca.cert else None
    return {"handedOutUntil": end, "previousNotAfter": None}


def handed_out_lines(rows: Sequence[dict[str, Any]], now: dt.datetime) -> list[str]:
    """What an operator must know about kubeconfigs handed out to people and other systems:
    kucero cannot reach them; they keep working until the CA certificate they embed ends."""
    out = []
    for r in rows:
        if r["kind"] != "ca" or r["name"] != "ca" or not r.get("handedOutUntil"):
            continue
        until = dt.datetime.strptime(r["handedOutUntil"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.UTC
        )
        left = (
            duration.human(until - now)
            if until > now
            else f"ended {duration.human(now - until)} ago"
        )
        when = f"{until:%b %d, %Y %H:%M} UTC ({left})"
        if r.get("previousNotAfter"):
            out.append(
                f"Kubeconfigs handed out before the CA renewal embed the previous ca certificate "
                f"and work until {when}. Give their users the renewed one: "
                "/etc/kubernetes/pki/ca.crt, or the ca.crt key of the kucero-ca ConfigMap."
            )
        else:
            out.append(
                f"Kubeconfigs handed out embed the current ca certificate and work until {when}, "
                "or, once kucero renews the CA (ca.mode: renew), until then with the old one "
                "(the renewed CA is published in the kucero-ca ConfigMap)."
            )
    return out


def _leaf_renewer(leaf: hoststate.LeafFile) -> str:
    """Who renews a kubeadm leaf: kucero, unless it is one kucero never renews (the plan's
    ``ExternallyManaged`` and ``NotKubeadmManaged``), as an external etcd's client
    certificate, once reported as kucero's."""
    if leaf.externally_managed:
        return f"nobody here: the {leaf.ca} key is absent (externally managed)"
    creds = leaf.credentials
    if creds is not None and (creds.cert_data is None or creds.key_data is None):
        return "nobody: its client certificate and key are not both embedded (not kubeadm's)"
    return "kucero"


def _leaf_row(leaf: hoststate.LeafFile, now: dt.datetime, renewed_by: str) -> dict[str, Any]:
    return {
        "name": leaf.name,
        "kind": leaf.kind,
        "path": leaf.path,
        **_dates(leaf.cert.not_valid_after_utc if leaf.cert else None, now),
        "issuer": leaf.ca,
        "externallyManaged": leaf.externally_managed,
        "keyMatches": leaf.key_matches,
        "renewedBy": renewed_by,
        "error": leaf.error,
    }


def _dates(not_after: dt.datetime | None, now: dt.datetime) -> dict[str, Any]:
    if not_after is None:
        return {"notAfter": None, "residualSeconds": None}
    return {
        "notAfter": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "residualSeconds": int((not_after - now).total_seconds()),
    }


def expiration_table(rows: Sequence[dict[str, Any]], now: dt.datetime | None = None) -> str:
    leaves = [r for r in rows if r["kind"] != "ca"]
    cas = [r for r in rows if r["kind"] == "ca"]
    out = table(
        ["CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", "EXTERNALLY MANAGED"],
        [[r["name"], *_expires(r), r["issuer"], _yes(r["externallyManaged"])] for r in leaves],
    )
    out += "\n" + table(
        ["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", "EXTERNALLY MANAGED"],
        [[r["name"], *_expires(r), _yes(r["externallyManaged"])] for r in cas],
    )
    notes = handed_out_lines(rows, now) if now is not None else []
    if notes:
        out += "\n" + "\n".join(printable(n) for n in notes) + "\n"
    errors = [printable(f"{r['name']}: {r['error']}") for r in rows if r.get("error")]
    if errors:
        out += "\nERRORS\n" + "\n".join(errors) + "\n"
    return out


def _expires(row: dict[str, Any]) -> list[str]:
    if row["notAfter"] is None:
        return ["<unreadable>", "-"]
    when = dt.datetime.strptime(row["notAfter"], "%Y-%m-%dT%H:%M:%SZ")
    return [
        when.strftime("%b %d, %Y %H:%M UTC"),
        duration.human(dt.timedelta(seconds=row["residualSeconds"])),
    ]


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def plan_table(the_plan: actions.Plan) -> str:
    if the_plan.actions:
        out = table(
            ["ACTION", "TARGET", "REASON", "DETAIL"],
            [[a.kind, a.target, a.reason, a.detail] for a in the_plan.actions],
        )
    else:
        out = "Nothing to do: the node is converged.\n"
    return out + findings_table(the_plan.findings)


def findings_table(findings: Sequence[actions.Finding]) -> str:
    if not findings:
        return ""
    return "\n" + table(
        ["FINDING", "TARGET", "SEVERITY", "DETAIL"],
        [[f.reason, f.target, f.severity, f.detail] for f in findings],
    )


def results_table(results: Sequence[actions.Result]) -> str:
    if not results:
        return "Nothing to do: the node is converged.\n"
    return table(
        ["ACTION", "TARGET", "RESULT", "MESSAGE"],
        [[r.action.kind, r.action.target, "ok" if r.ok else "FAILED", r.message] for r in results],
    )


# Characters a terminal acts on instead of showing: C0 and C1 controls (ESC starts colour,
# cursor and title sequences), DEL, line separators, and the format characters that reorder
# or hide text (bidi overrides, zero-width). A certificate subject, a file name or a YAML
# key can carry any of them.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def printable(text: object) -> str:
    """``text`` safe to print on a terminal: every control or invisible formatting character
    is shown as an escape (``\\x1b``, ``\\u202e``); everything else is unchanged."""
    return _UNPRINTABLE.sub(_escape, str(text))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(printable, header))] + [[printable(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines) + "\n"
