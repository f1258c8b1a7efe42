"""The ``kucero.io/status`` annotation a node writes after each pass.

Compact JSON with ``revision`` (the policy revision this node converged to, or is working on),
``phase``, ``message``, ``lastRotation`` (RFC 3339, the last successful renewal),
``certificates`` (kubeadm or CA name -> notAfter, RFC 3339) and ``ca`` (CA name -> its
``phase`` on this node and the ``notAfter`` of the certificate of it the node trusts). Pure.

The node writes it only when it changed (``changed``), so a node at rest costs no writes: the
message must therefore never contain the time or anything else that moves by itself. A value
that is not ours (hand-edited, truncated) decodes to ``None`` and is simply overwritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from collections.abc import Mapping
from typing import Any

from reconciler.model import hoststate

ANNOTATION = "kucero.io/status"
# Annotations share 256 KiB per object; a message is for a human reading `kubectl get -o yaml`.
MAX_MESSAGE = 1024


class Phase(enum.StrEnum):
    CONVERGED = "Converged"
    WAITING_FOR_SLOT = "WaitingForSlot"
    ROTATING = "Rotating"
    FAILED = "Failed"
    PAUSED = "Paused"


@dataclasses.dataclass(frozen=True)
class Status:
    revision: str | None
    phase: Phase
    message: str
    last_rotation: dt.datetime | None = None
    certificates: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # CA name -> {"phase": decide.castatus.Phase, "notAfter": what the node trusts}
    ca: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "revision": self.revision,
            "phase": str(self.phase),
            "message": self.message,
            "lastRotation": rfc3339(self.last_rotation) if self.last_rotation else None,
            "certificates": dict(sorted(self.certificates.items())),
        }
        if self.ca:
            out["ca"] = {name: dict(sorted(v.items())) for name, v in sorted(self.ca.items())}
        return out


def encode(status: Status) -> str:
    return json.dumps(status.to_dict(), sort_keys=True, separators=(",", ":"))


def decode(text: str | None) -> Status | None:
    """The status in an annotation value, or None if there is none or it is not ours."""
    if not text:
        return None
    try:
        data = json.loads(text)
        phase = Phase(data["phase"])
        certificates = data.get("certificates") or {}
        if not isinstance(certificates, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in certificates.items()
        ):
            return None
        last = data.get("lastRotation")
        revision = data.get("revision")
        message = data.get("message", "")
        if not isinstance(revision, str | None) or not isinstance(message, str):
            return None
        ca = data.get("ca") or {}
        if not isinstance(ca, dict) or not all(
            isinstance(k, str)
            and isinstance(v, dict)
            and all(isinstance(a, str) and isinstance(b, str) for a, b in v.items())
            for k, v in ca.items()
        ):
            return None
        return Status(
            revision=revision,
            phase=phase,
            message=message,
            last_rotation=parse_time(last) if isinstance(last, str) else None,
            certificates=certificates,
            ca=ca,
        )
    except (ValueError, KeyError, TypeError):
        return None


def changed(current: str | None, new: Status) -> bool:
    """Whether ``new`` differs from the annotation value ``current`` (formatting aside)."""
    old = decode(current)
    return old is None or encode(old) != encode(new)


def certificates(observed: hoststate.Observed) -> dict[str, str]:
    """name -> notAfter for every readable leaf certificate and CA on the node."""
    out = {
        name: rfc3339(ca.cert.not_valid_after_utc) for name, ca in observed.cas.items() if ca.cert
    }
    for name, leaf in observed.leaves.items():
        if leaf.cert is not None:
            out[name] = rfc3339(leaf.cert.not_valid_after_utc)
    return out


def message(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= MAX_MESSAGE else one_line[: MAX_MESSAGE - 3] + "..."


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime | None:
    """An RFC 3339 time with a zone, in UTC; None for anything else."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.astimezone(dt.UTC) if value.tzinfo else None
