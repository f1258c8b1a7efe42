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
    ) -> None:
        self._kube = kube
        self._host = host
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
                left = self._drain(spec.kubeadm.health_timeout.total_seconds())
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
            return cordon.drain(kubelet, self._node, timeout)
        finally:
            kubelet.close()
