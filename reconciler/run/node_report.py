"""What the node daemon tells the cluster about itself: ``kucero.io/status`` and Events.

The status is patched only when its value changed (``decide.status.changed``): a node at rest
writes nothing. Events whose write fails (the API server is down: the recovery path) are kept
and sent after a later pass, oldest first, so the cluster learns what happened while it could
not listen. They are bounded (``MAX_OWED``): a node cut off for days runs a pass every few
minutes and owes Events each time, and the list once grew without end in a pod limited to
128 MiB; past the bound the oldest go, and an ``EventsDropped`` Warning says how many once the
API server answers again. Without a cluster (``--policy`` alone) both are only logged.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading

from reconciler.cluster import events, nodes
from reconciler.cluster import kube as kube_
from reconciler.decide import castatus, status
from reconciler.model import actions, nodespec
from reconciler.run import once

log = logging.getLogger(__name__)

# Events kept while the API server does not answer. A pass owes about one per action and
# failure (a full control-plane rotation about 20); 200 hold the last several passes' worth,
# the newest being what an operator needs, in well under 100 KiB.
MAX_OWED = 200
# A published CA refusal is told once per content; at most this many contents are remembered.
MAX_CA_REFUSED = 16
REASON_DROPPED = "EventsDropped"


class Reporter:
    def __init__(self, kube: kube_.Kube | None, node_name: str) -> None:
        self._kube = kube
        self._node_name = node_name
        self._lock = threading.Lock()
        self._status_text: str | None = None
        self._uid = ""
        self._owed: collections.deque[tuple[str, str, str]] = collections.deque()
        self._dropped = 0  # owed Events dropped (the oldest) since the API server last answered
        self._reported_error: str | None = None
        self._unsent = False  # the last status write failed: the API server did not answer
        self.last_rotation: dt.datetime | None = None
        self.ca_refused: set[str] = set()  # refusals of a published CA already told

    @property
    def pending(self) -> bool:
        """Something could not be told (status or Events): the daemon tries again soon."""
        return self._unsent or bool(self._owed)

    def seen(self, status_text: str | None, uid: str) -> None:
        """The Node as the watch last saw it (the status there may be someone else's edit)."""
        with self._lock:
            self._status_text = status_text
            self._uid = uid

    def owe(self, reason: str, note: str, type_: str = events.NORMAL) -> None:
        """Keep an Event for the next ``flush``; past ``MAX_OWED`` the oldest is dropped."""
        self._owed.append((reason, note, type_))
        while len(self._owed) > MAX_OWED:
            dropped = self._owed.popleft()
            if not self._dropped:
                log.warning(
                    "more than %d Events owed while the API server does not answer: dropping "
                    "the oldest (first %s)",
                    MAX_OWED,
                    dropped[0],
                )
            self._dropped += 1

    def rotating(self, spec: nodespec.NodeSpec, slot: str | None, the_plan: actions.Plan) -> bool:
        """Say ``Rotating``; False when the API did not take it (a control-plane node then
        does not rotate: its peers could not see it)."""
        targets = ", ".join(f"{a.kind} {a.target}" for a in the_plan.actions)
        with self._lock:
            previous = status.decode(self._status_text)
        return self.write(
            status.Status(
                spec.revision,
                status.Phase.ROTATING,
                status.message(f"{slot or 'no slot'}: {targets}"),
                self.last_rotation,
                previous.certificates if previous else {},
                previous.ca if previous else {},
            )
        )

    def after_pass(self, result: once.PassResult, spec_error: str | None, now: dt.datetime) -> None:
        if any(r.ok and r.action.kind == actions.ActionKind.RENEW for r in result.results):
            self.last_rotation = now.replace(microsecond=0)
        elif self.last_rotation is None:
            with self._lock:
                previous = status.decode(self._status_text)
            self.last_rotation = previous.last_rotation if previous else None
        for r in result.results:
            note = f"{r.action.kind} {r.action.target}: {r.message or 'done'}"
            if r.ok:
                self.owe(r.action.reason, note)
            else:
                self.owe(r.action.reason, f"FAILED {note}", events.WARNING)
        if result.error:
            self.owe(actions.Reason.PASS_FAILED, result.error, events.WARNING)
        for f in result.findings:
            # a refused published CA: told once per content (it stays refused every pass)
            refusal = f.reason == actions.Reason.CA_REFUSED and f.severity == "error"
            if refusal and f.detail not in self.ca_refused:
                if len(self.ca_refused) >= MAX_CA_REFUSED:  # contents long replaced
                    self.ca_refused.clear()
                self.ca_refused.add(f.detail)
                self.owe(f.reason, f"{f.target}: {f.detail}", events.WARNING)
        if spec_error and spec_error != self._reported_error:
            self.owe(actions.Reason.INVALID_DESIRED, spec_error, events.WARNING)
        self._reported_error = spec_error
        # Events first: whoever sees the new status (an operator, a test, a dashboard) finds
        # the Events that explain it already recorded.
        self.flush()
        self.write(status_of(result, spec_error, self.last_rotation))

    def not_run(self, revision: str | None, reason: str, message: str, event: bool) -> None:
        """A pass that could not run: ``Failed`` with ``message``, and (``event``) a Warning
        Event the first time this message is seen. The certificates and last rotation stay as
        last reported: nothing was changed."""
        if event and message != self._reported_error:
            self.owe(reason, message, events.WARNING)
        self._reported_error = message
        self.flush()
        with self._lock:
            previous = status.decode(self._status_text)
        if self.last_rotation is None and previous is not None:
            self.last_rotation = previous.last_rotation
        certificates = previous.certificates if previous else {}
        failed = status.Status(
            revision, status.Phase.FAILED, status.message(message), self.last_rotation, certificates
        )
        self.write(failed)

    def write(self, value: status.Status) -> bool:
        """Patch the status if it changed; True when the Node now carries it."""
        if self._kube is None:
            return False
        with self._lock:
            current = self._status_text
        if not status.changed(current, value):
            self._unsent = False
            return True
        text = status.encode(value)
        try:
            nodes.patch_annotations(self._kube, self._node_name, {status.ANNOTATION: text})
        except kube_.NotFound:
            log.warning("Node %s is gone: status not written", self._node_name)
            return False
        except kube_.KubeError as e:
            log.warning("could not write %s: %s", status.ANNOTATION, e)
            self._unsent = True
            return False
        self._unsent = False
        with self._lock:
            self._status_text = text
        return True

    def flush(self) -> None:
        """Send the Events owed, oldest first; keep the rest when the API does not answer."""
        if self._kube is None:
            self._owed.clear()
            self._dropped = 0
            return
        meta = {"name": self._node_name}
        with self._lock:
            if self._uid:
                meta["uid"] = self._uid
        ref = {"apiVersion": "v1", "kind": "Node", "metadata": meta}
        while self._owed or self._dropped:
            summary = bool(self._dropped)
            if summary:  # said first: the Events that follow are not all there were
                reason, type_ = REASON_DROPPED, events.WARNING
                note = (
                    f"{self._dropped} older Event(s) of this node were dropped while the API "
                    f"server did not answer (at most {MAX_OWED} are kept); its log has them"
                )
            else:
                reason, note, type_ = self._owed[0]
            event = events.body(ref, str(reason), note, type_, instance=self._node_name)
            try:
                events.record(self._kube, event)  # a repeat counts in the Event's series
            except kube_.TRANSIENT as e:
                log.info("Event %s kept for later: %s", reason, e)
                return
            except kube_.KubeError as e:  # refused for good (RBAC, invalid): say it, drop it
                log.warning("could not record event %s %s: %s", reason, note[:200], e)
            if summary:
                self._dropped = 0
            else:
                self._owed.popleft()


def status_of(
    result: once.PassResult, spec_error: str | None, last_rotation: dt.datetime | None
) -> status.Status:
    """The ``kucero.io/status`` a pass leads to."""
    spec = result.spec
    certs = status.certificates(result.observed) if result.observed else {}
    ca = castatus.phases(result.observed, result.after) if result.observed else {}
    failures = result.failures
    if spec_error:
        phase, text = status.Phase.FAILED, spec_error
    elif spec.paused:
        withheld = [f.detail for f in result.findings if f.reason == actions.Reason.PAUSED]
        phase = status.Phase.PAUSED
        text = "; ".join(withheld + failures) or "spec.paused is true: observing only"
    elif result.withheld:
        phase, text = status.Phase.WAITING_FOR_SLOT, result.withheld
    elif failures:
        phase, text = status.Phase.FAILED, "; ".join(failures)
    elif result.converged:
        phase, text = status.Phase.CONVERGED, f"converged to revision {spec.revision}"
    else:
        remaining = ", ".join(f"{a.kind} {a.target}" for a in result.after.actions)
        phase, text = status.Phase.FAILED, f"not converged: still to do: {remaining}"
    return status.Status(spec.revision, phase, status.message(text), last_rotation, certs, ca)
