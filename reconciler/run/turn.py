"""A node's turn to rotate: the rotation slot taken in the pass's gate, the optional cordon and
drain around it, and giving both back when the pass ends.

Called under the node lock, after planning (``once.run_once``'s gate), so what decides whether
a slot is needed is the plan the pass will execute. Returns None to go ahead, or why the pass
must wait (the daemon reports ``WaitingForSlot`` and tries again after ``slot_retry``).

Recovery path: when the slot cannot be asked for because the API server does not answer, and a
certificate of this control-plane node has already expired (the cluster is most likely down
because of it), the pass goes ahead alone, says so at CRITICAL, and owes the cluster a
``RotatedWithoutSlot`` Event. Without a cluster at all (``--policy`` alone) a node is alone by
definition. A failed cordon or drain is logged and the rotation goes ahead: certificates that
expire hurt more than pods left on a node.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from reconciler.cluster import cordon, events, rotation
from reconciler.cluster import kube as kube_
from reconciler.decide import slots
from reconciler.model import actions, hoststate, nodespec
from reconciler.run import node_report

log = logging.getLogger(__name__)


class Turn:
    def __init__(
        self,
        kube: kube_.Kube | None,
        node_name: str,
        namespace: str,  # of the slot Leases
        lease_seconds: int,
        report: node_report.Reporter,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._kube = kube
        self._node = node_name
        self._report = report
        self._clock = clock
        self._slots = (
            rotation.Slots(kube, namespace, node_name, lease_seconds, clock)
            if kube is not None
            else None
        )
        self._cordoned = False
        self._waiting_since: float | None = None
        self.on_slot_wait: Callable[[float], None] = lambda _seconds: None

    def take(
        self,
        spec: nodespec.NodeSpec | None,
        the_plan: actions.Plan,
        observed: hoststate.Observed,
        control_plane: bool,
    ) -> str | None:
        """None: go ahead (with a slot if one is needed); else why the pass must wait."""
        if not slots.needs_slot(the_plan, control_plane):
            return None
        if self._slots is None or spec is None:
            return None  # no cluster: a local --policy run is alone by definition
        try:
            choice = self._slots.take(spec.rollout.max_concurrent_nodes, control_plane)
        except kube_.KubeError as e:
            expired = slots.expired_certificates(observed, self._clock())
            if control_plane and expired and isinstance(e, kube_.Unavailable):
                note = (
                    f"API server unreachable ({e}) and {', '.join(expired)} already expired: "
                    "rotating WITHOUT a rotation slot (recovery path)"
                )
                log.critical("%s", note)
                self._report.owe(actions.Reason.ROTATED_WITHOUT_SLOT, note, events.WARNING)
                return None
            return f"cannot take a rotation slot: {e}"
        if choice.index is None:
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
            return choice.detail
        waited, self._waiting_since = self._waiting_since, None
        self.on_slot_wait(0.0 if waited is None else time.monotonic() - waited)
        self._report.rotating(spec, self._slots.held, the_plan)
        if spec.rollout.cordon or spec.rollout.drain:
            self._cordon(spec)
        return None

    def uncordon(self) -> None:
        """Undo kucero's own cordon (never an administrator's); never raises. Called before
        the pass's final status, so a node reported ``Converged`` is schedulable again."""
        if self._cordoned and self._kube is not None:
            try:
                cordon.uncordon(self._kube, self._node)
                self._cordoned = False
            except kube_.KubeError as e:
                log.error("could not uncordon %s: %s", self._node, e)

    def end(self) -> None:
        """Uncordon if not done yet and release the slot; never raises."""
        self.uncordon()
        if self._slots is not None:
            self._slots.release()

    def _cordon(self, spec: nodespec.NodeSpec) -> None:
        assert self._kube is not None
        try:
            self._cordoned = cordon.cordon(self._kube, self._node)
            if spec.rollout.drain:
                timeout = spec.kubeadm.health_timeout.total_seconds()
                left = cordon.drain(self._kube, self._node, timeout)
                if left:
                    log.warning("drain left %d pod(s): %s", len(left), ", ".join(left))
        except kube_.KubeError as e:
            log.warning("cordon/drain of %s failed, rotating anyway: %s", self._node, e)
