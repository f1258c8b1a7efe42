"""A node's turn to rotate: the rotation slot taken in the pass's gate, the check before each
disruptive step that the slot still holds, the optional cordon and drain around it, and giving
both back when the pass ends.

``take`` is called under the node lock, after planning (``once.run_once``'s gate), so what
decides whether a slot is needed is the plan the pass will execute. It returns None to go
ahead, or why the pass must wait (the daemon reports ``WaitingForSlot`` and tries again after
``slot_retry``). A control-plane node also waits while another control-plane Node still says
``Rotating`` (``Slots.rotating_peers``), checked again *after* slot 0 is taken: a peer's first
step comes after its ``Rotating`` status and after a renewal of the slot that this node's take
would have made fail, so a forged release or deletion of slot 0 cannot start two
control-plane nodes. And it must manage to say ``Rotating`` itself before it starts.

``guard`` is the check ``execute`` runs immediately before each disruptive step (each renewal
transaction, each static pod restart, the kubelet restart): the slot is renewed once more and
must have the step's margin left (``Slots.confirm``). When it says no the step is not started,
the pass ends there and the daemon reports ``WaitingForSlot`` with the reason.

Recovery path: when the slot cannot be asked for because the API server does not answer, and a
certificate of this control-plane node has already expired (the cluster is most likely down
because of it), the pass goes ahead alone, says so at CRITICAL, and owes the cluster a
``RotatedWithoutSlot`` Event; nothing is fenced then (the etcd quorum check in ``execute`` still
is). Without a cluster at all (``--policy`` alone) a node is alone by definition. A failed
cordon or drain is logged and the rotation goes ahead: certificates that expire hurt more than
pods left on a node. A drain stops as soon as the pass is asked to stop (SIGTERM): the pass
then starts nothing (``once``), and ends like any other, the cordon lifted and the slot given
back, so the next pass (the next pod) starts from a schedulable node.

The drain runs as the node's kubelet (``system:node:<name>``, with the client certificate the
kubelet itself uses, ``kubelet-client-current.pem``), never as kucero's ServiceAccount. RBAC
cannot limit a list of Pods to one node nor an eviction to the pods of one node, so a
ServiceAccount allowed to drain could read every pod spec of the cluster and evict any pod.
The kubelet's identity is limited by the API server itself: the Node authorizer lets it list
only the pods bound to it (``fieldSelector=spec.nodeName=<name>``) and NodeRestriction lets it
evict only those. Root on the node holds that certificate anyway, so kucero widens nothing,
and its ServiceAccounts need no right on Pods at all (docs/deploy.md, "Threat model").
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from reconciler.cluster import cordon, events, light, rotation
from reconciler.cluster import kube as kube_
from reconciler.decide import slots
from reconciler.model import actions, hoststate, kubeadm, nodespec
from reconciler.node import host as host_
from reconciler.node import interrupt
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
        *,
        host: host_.Host | None = None,  # where drain reads the kubelet's client certificate
        manifest_grace: float = 25.0,  # --manifest-grace: part of the longest restart
        stop: interrupt.Stop | None = None,  # the pass's: a drain ends early when it is set
    ) -> None:
        self._kube = kube
        self._stop = stop or interrupt.Stop()
        self._host = host
        self._node = node_name
        self._report = report
        self._clock = clock
        self._grace = manifest_grace
        self._slots = (
            rotation.Slots(kube, namespace, node_name, lease_seconds, clock)
            if kube is not None
            else None
        )
        self._cordoned = False
        self._holding = False  # this pass took a slot: its steps are fenced by it
        self._waiting_since: float | None = None
        self.refused: str | None = None  # why ``guard`` stopped this pass's steps
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
            waiting = self._take(spec, the_plan, control_plane)
        except kube_.KubeError as e:
            self.end()
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
        if waiting is not None:
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
            return waiting
        waited, self._waiting_since = self._waiting_since, None
        self.on_slot_wait(0.0 if waited is None else time.monotonic() - waited)
        if spec.rollout.cordon or spec.rollout.drain:
            self._cordon(spec)
        return None

    def _take(
        self, spec: nodespec.NodeSpec, the_plan: actions.Plan, control_plane: bool
    ) -> str | None:
        assert self._slots is not None
        bound = slots.step_bound(self._grace, spec.kubeadm.health_timeout.total_seconds())
        choice = self._slots.take(spec.rollout.max_concurrent_nodes, control_plane, bound)
        if choice.index is None:
            return choice.detail
        self._holding = True
        said = self._report.rotating(spec, self._slots.held, the_plan)
        if control_plane and not said:
            self.end()
            return "could not say Rotating in kucero.io/status: not rotating unannounced"
        return None

    def guard(self, step: str, margin: float) -> str | None:
        """Before a disruptive ``step`` that needs ``margin`` seconds: None to go ahead, else
        why not (kept in ``refused`` for the pass's report)."""
        if not self._holding or self._slots is None:
            return None  # no slot needed, or the recovery path: nothing to confirm
        refusal = self._slots.confirm(margin)
        if refusal is not None:
            log.error("not starting %s: %s", step, refusal)
            self.refused = self.refused or f"{step} not started: {refusal}"
        return refusal

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
        self._holding = False
        self.refused = None

    def _cordon(self, spec: nodespec.NodeSpec) -> None:
        assert self._kube is not None
        try:
            self._cordoned = cordon.cordon(self._kube, self._node)
            if spec.rollout.drain:
                left = self._drain(spec.kubeadm.health_timeout.total_seconds())
                if self._stop.requested:
                    log.warning("drain of %s cut short by %s", self._node, self._stop.name)
                if left:
                    log.warning("drain left %d pod(s): %s", len(left), ", ".join(left))
        except (kube_.KubeError, host_.HostError) as e:
            log.warning("cordon/drain of %s failed, rotating anyway: %s", self._node, e)

    def _drain(self, timeout: float) -> list[str]:
        """``cordon.drain`` as the node's kubelet (see the module docstring for why)."""
        assert self._kube is not None
        pem = None if self._host is None else self._host.read(kubeadm.KUBELET_CLIENT_CURRENT)
        if pem is None:
            raise kube_.KubeError(
                f"drain evicts as the node's kubelet, whose {kubeadm.KUBELET_CLIENT_CURRENT} "
                "is missing"
            )
        kubelet = light.as_client_certificate(self._kube, pem)
        try:
            return cordon.drain(kubelet, self._node, timeout, self._stop.wait)
        finally:
            kubelet.close()
