"""When the node daemon wakes up next if nothing else wakes it first.

The moment the next managed certificate enters its renewal window (``notAfter -
renewBefore``), never later than ``checkInterval`` from now. Pure: ``now`` comes in.

Edge cases: a certificate already inside its window does not pull the wake-up to "now" (the pass
that just ran either renewed it or reported why it could not; waking at once would spin);
``retry`` (a failed or withheld pass) brings the moment closer; a certificate excluded by
``kubeadm.certificates``, or all of them when ``kubeadm.enabled`` is false, is not waited for;
an unreadable one cannot be.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from reconciler.model import hoststate, kubeadm, nodespec


def renewal_moments(
    spec: nodespec.NodeSpec, observed: hoststate.Observed
) -> list[tuple[str, dt.datetime]]:
    """(kubeadm name, moment it enters its renewal window) for each managed certificate."""
    if not spec.kubeadm.enabled:
        return []
    wanted = set(spec.kubeadm.certificates) or set(kubeadm.NAMES)
    out = []
    for name, leaf in observed.leaves.items():
        if name in wanted and leaf.cert is not None:
            out.append((name, leaf.cert.not_valid_after_utc - spec.kubeadm.renew_before))
    return out


def next_wake(
    moments: Iterable[dt.datetime],
    check_interval: dt.timedelta,
    now: dt.datetime,
    retry: dt.timedelta | None = None,
) -> dt.datetime:
    """The earliest future moment, ``now + retry`` if given, capped at ``now + check_interval``."""
    candidates = [now + check_interval]
    candidates += [m for m in moments if m > now]
    if retry is not None:
        candidates.append(now + retry)
    return min(candidates)
