"""``kucero node``: the node reconciler as a long-running process.

It runs the same pass as ``--once`` (``once.run_once``) whenever something may have changed:
a new ``kucero.io/desired`` on its own Node (one watch, field-selected by name), or with
``--policy FILE`` a new content of that file; a change of the CA certificates the leader
publishes (the ``kucero-ca`` ConfigMap, watched by name: ``decide.caplan`` installs what it
accepts); a change under the host's ``etc/kubernetes`` or ``var/lib/kubelet`` (``filewatch``);
and a timer at the moment the next certificate enters its renewal window, never later than
``checkInterval`` (``decide.wakeup``). Between wake-ups it sleeps on one ``threading.Event``:
an idle node makes no API requests beyond its two watches.

Before anything disruptive (``decide.slots.needs_slot``) the pass takes a rotation slot through
the gate of ``run_once``, under the node lock, after planning; the slot is released at the end
of the pass. When no slot is free the pass changes nothing and reports ``WaitingForSlot``, and
the daemon tries again after ``slot_retry``. Immediately before each disruptive step the pass
asks ``Turn.guard`` whether the slot still holds with the step's margin left; when it does not
(the slot was lost, or could not be renewed) the pass stops before that step and reports
``WaitingForSlot`` with the reason, and the rest stays owed to a later pass. Recovery path:
when the API server cannot be reached and a certificate of this control-plane node has already
expired (the cluster is most likely down because of it), the pass proceeds without a slot,
alone, logs it at CRITICAL and records an Event once the API answers again.

After each pass it writes ``kucero.io/status`` only when its value changed and records Events
on its Node for renewals, restarts and failures. A ``kucero.io/desired`` that cannot be decoded
leaves the last good desired state in force and shows ``Failed`` with the reason. A failed pass
is tried again after ``failure_retry``, doubling (jittered) with each failure in a row up to
the desired ``checkInterval`` (``retrying``): a restart that keeps failing is not retried every
minute for ever.

The host commands a pass may run (``node.hostcommands``) are decided for each desired state,
before its pass: the daemon starts whatever the policy says, and when the state in force needs
the default kubelet restart (or crictl) but ``--host-root`` is not PID 1's root, that pass
changes nothing (it only finishes an interrupted one), reports ``Failed`` with what to give,
and records a ``HostCommandRefused`` Event once; a desired state with ``kubelet.restart:
none`` then simply runs. SIGTERM lets the pass in flight finish (its journal makes that the
safe choice), releases a held slot and exits 0.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler import logs, retrying
from reconciler.cluster import configmaps, nodes, watching
from reconciler.cluster import kube as kube_
from reconciler.decide import capublished, desired, policy, status, wakeup
from reconciler.model import actions, hoststate, nodespec
from reconciler.node import execute, hostcommands
from reconciler.node import host as host_
from reconciler.run import filewatch, health, node_report, once, turn

log = logging.getLogger(__name__)

# How long the first pass waits for the Node watch's first answer before going on with what it
# has (the last good desired state, or the recovery path when the API server is down).
FIRST_LIST_WAIT_SECONDS = 10.0
# Failures in a row with no desired state to take checkInterval from back off up to 5 min: a
# new kucero.io/desired wakes the daemon at once anyway.
NO_SPEC_RETRY_CAP = dt.timedelta(minutes=5)
# Liveness (run.health): the idle wait is cut into slices of this many seconds, each a heartbeat
# due within the slice plus the grace; a pass is given ``pass_budget`` seconds.
IDLE_SLICE_SECONDS = 30.0
HEARTBEAT_GRACE_SECONDS = 30.0
# A pass restarts at most the four static pods and the kubelet, each possibly rolled back (a
# second wait), each wait up to healthTimeout plus the manifest grace; the margin covers the
# rest (API calls with their retries, key generation, file I/O).
RESTARTS_PER_PASS = 5
PASS_MARGIN_SECONDS = 600.0
HEARTBEAT_PASS = "node-pass"
HEARTBEAT_WATCH = "node-watch"


def pass_budget(spec: nodespec.NodeSpec | None, manifest_grace: float) -> float:
    """Seconds a healthy pass may take before ``/healthz`` calls the node loop wedged."""
    health_timeout = spec.kubeadm.health_timeout.total_seconds() if spec else 300.0
    waits = 2 * RESTARTS_PER_PASS * (health_timeout + manifest_grace)
    return PASS_MARGIN_SECONDS + waits


@dataclasses.dataclass(frozen=True)
class Config:
    node_name: str
    host_root: str
    namespace: str  # where the rotation slot Leases live (--ds-namespace)
    policy_file: str | None  # local policy instead of kucero.io/desired
    policy_defaults: Mapping[str, Any]  # seed flags
    node_labels: Mapping[str, str]  # for --policy without a cluster
    lease_seconds: int  # rotation slot lease duration
    slot_retry: dt.timedelta  # between two tries for a slot
    failure_retry: dt.timedelta  # after a failed pass (then doubling up to checkInterval)
    execute: execute.Settings  # its host commands are decided for each desired state
    commands: hostcommands.Given


class NodeDaemon:
    def __init__(
        self,
        config: Config,
        kube: kube_.Kube | None,
        observer: Callable[[once.PassResult, float], None] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        heartbeats: health.Heartbeats | None = None,
    ) -> None:
        self.config = config
        self.heartbeats = heartbeats or health.Heartbeats()
        self._kube = kube
        self._observer = observer  # metrics
        self._clock = clock
        self._host = host_.Host(config.host_root)
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._node: dict[str, Any] | None = None
        self._listed = threading.Event()
        self._desired_text: str | None = None
        self._policy_text: bytes | None = None
        self._good: nodespec.NodeSpec | None = None
        self._spec_error: str | None = None
        self._report = node_report.Reporter(kube, config.node_name)
        self.turn = turn.Turn(
            kube,
            config.node_name,
            config.namespace,
            config.lease_seconds,
            self._report,
            clock,
            host=self._host,
            manifest_grace=config.execute.manifest_grace_seconds,
            stop=config.execute.stop,
        )
        self._pass_spec: nodespec.NodeSpec | None = None
        self._failures = 0  # passes in a row that failed or could not run
        # the leader's published CA certificates (ConfigMap kucero-ca data; None: none yet)
        self._ca_data: dict[str, Any] | None = None
        self.passes = 0
        self.ready = threading.Event()  # the first pass is done

    # --- wake-up sources ----------------------------------------------------------------

    def wake(self, why: str) -> None:
        log.debug("wake-up: %s", why)
        self._wake.set()

    def _on_node_list(self, items: list[dict[str, Any]]) -> None:
        if not items:
            log.warning("Node %s does not exist (yet)", self.config.node_name)
            with self._lock:
                self._node = None
        for item in items:
            self._on_node(kube_.WatchEvent("ADDED", item))
        self._listed.set()

    def _on_node(self, event: kube_.WatchEvent) -> None:
        if event.type == "DELETED":
            log.warning(
                "Node %s was deleted; keeping the last desired state", self.config.node_name
            )
            with self._lock:
                self._node = None
            return
        with self._lock:
            before = self._node
            self._node = event.obj
        self._report.seen(
            nodes.annotation(event.obj, status.ANNOTATION), event.obj["metadata"].get("uid", "")
        )
        text = nodes.annotation(event.obj, desired.ANNOTATION)
        labels_changed = before is None or nodes.labels(before) != nodes.labels(event.obj)
        if self.config.policy_file is None and text != self._desired_text:
            self.wake("new kucero.io/desired")
        elif self.config.policy_file is not None and labels_changed:
            self.wake("node labels changed")

    def _on_file_change(self, kind: str) -> None:
        if self._in_pass_or_quiet():
            return
        self.wake(f"{kind} files changed")

    _quiet_until = 0.0
    _in_pass = False

    def _in_pass_or_quiet(self) -> bool:
        return self._in_pass or time.monotonic() < self._quiet_until

    # --- main loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        with logs.fields(node=self.config.node_name):  # every line of this role names its node
            return self._run(stop)

    def _run(self, stop: threading.Event) -> int:
        threads = []
        if self._kube is not None:
            params = {"fieldSelector": f"metadata.name={self.config.node_name}"}
            threads.append(
                threading.Thread(
                    target=logs.carried(self._kube.watch_forever),
                    args=(nodes.PATH, params, self._on_node, stop, self._on_node_list),
                    kwargs={"on_alive": self._watch_alive},
                    name="node-watch",
                    daemon=True,
                )
            )
        if self._kube is not None:
            threads.append(
                threading.Thread(
                    target=logs.carried(self._kube.watch_forever),
                    args=(
                        configmaps.collection(self.config.namespace),
                        configmaps.watch_params(capublished.NAME),
                        self._on_ca_event,
                        stop,
                        self._on_ca_list,
                    ),
                    name="ca-watch",
                    daemon=True,
                )
            )
        policy_file = Path(self.config.policy_file) if self.config.policy_file else None
        watcher = filewatch.Watcher(
            Path(self.config.host_root), policy_file, self._on_file_change, stop
        )
        threads.append(
            threading.Thread(target=logs.carried(watcher.run), name="filewatch", daemon=True)
        )
        for thread in threads:
            thread.start()
        if self._kube is not None:
            self._listed.wait(FIRST_LIST_WAIT_SECONDS)
        # a signal handler only sets ``stop``; mirror it into the wake-up event
        threading.Thread(target=self._wake_on, args=(stop,), daemon=True).start()
        next_at = self._clock()
        while not stop.is_set():
            delay = (next_at - self._clock()).total_seconds()
            if delay > 0:
                chunk = min(delay, IDLE_SLICE_SECONDS)
                self.heartbeats.beat(HEARTBEAT_PASS, chunk + HEARTBEAT_GRACE_SECONDS)
                if not self._wake.wait(chunk) and delay > IDLE_SLICE_SECONDS:
                    continue  # one slice of a longer wait: beat again
            if stop.is_set():
                break
            self._wake.clear()
            budget = pass_budget(self._good, self.config.execute.manifest_grace_seconds)
            self.heartbeats.beat(HEARTBEAT_PASS, budget)
            next_at = self._one_pass()
        self.turn.end()
        self.heartbeats.retire(HEARTBEAT_PASS)
        self.heartbeats.retire(HEARTBEAT_WATCH)
        log.info("stopped")
        return 0

    def _watch_alive(self) -> None:
        self.heartbeats.beat(HEARTBEAT_WATCH, watching.ALIVE_WITHIN_SECONDS)

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()
        self._wake.set()

    def _one_pass(self) -> dt.datetime:
        """Run one pass and report it; returns when the next one is due."""
        started = time.monotonic()
        spec = self._current_spec()
        if spec is None:
            error = self._spec_error or "no desired state"
            # no Event while the controller has not written one yet (every node, at install)
            event = self._desired_text is not None or self.config.policy_file is not None
            return self._not_run(None, actions.Reason.INVALID_DESIRED, error, event)
        try:
            commands = hostcommands.for_spec(self.config.commands, spec)
        except hostcommands.Refused as e:
            return self._not_run(spec, actions.Reason.HOST_COMMAND_REFUSED, str(e))
        settings = dataclasses.replace(
            self.config.execute,
            kubelet_restart_command=commands.kubelet_restart,
            crictl_command=commands.crictl,
            guard=self.turn.guard,
        )
        self._in_pass = True
        self._pass_spec = spec
        try:
            result = once.run_once(
                self._host,
                spec,
                self.config.node_name,
                self._clock,
                settings,
                self._gate,
                self._publication if self._kube is not None else None,
            )
            if self.turn.refused and result.withheld is None:
                # a step was not started: the slot no longer held (reported as a wait)
                result = dataclasses.replace(result, withheld=self.turn.refused)
            self.passes += 1
            if self._observer is not None:  # metrics before status: a reader sees both agree
                self._observer(result, time.monotonic() - started)
            self.turn.uncordon()  # a node reported Converged is schedulable
            # the final status before the slot goes: a watcher never sees two nodes Rotating
            self._report.after_pass(result, self._spec_error, self._clock())
        finally:
            self.turn.end()
            self._in_pass = False
            self._quiet_until = time.monotonic() + 2 * filewatch.DEBOUNCE_MS / 1000
        self.ready.set()
        retry: dt.timedelta | None = None
        if result.withheld:  # a poll for a free slot, not a failure
            retry = self.config.slot_retry * random.uniform(0.8, 1.2)
        elif not result.converged:
            retry = self._failed(spec)
        else:
            self._failures = 0
            retry = self.config.failure_retry if self._report.pending else None
        moments = wakeup.renewal_moments(spec, result.observed) if result.observed else []
        return wakeup.next_wake((m for _, m in moments), spec.check_interval, self._clock(), retry)

    def _not_run(
        self,
        spec: nodespec.NodeSpec | None,
        reason: actions.Reason,
        message: str,
        event: bool = True,
    ) -> dt.datetime:
        """A pass that cannot run: no usable desired state, or one whose host commands would
        act on another machine. Finish an interrupted pass only, say why (``Failed``, a Warning
        Event per new message), and try again later (at once when the desired state changes)."""
        for note in once.recover_only(self._host):
            log.warning("recovered: %s", note)
        revision = spec.revision if spec is not None else None
        log.error("pass not run: %s", message, extra={"revision": revision, "reason": reason})
        self._report.not_run(revision, reason, message, event)
        self.ready.set()
        return self._clock() + self._failed(spec)

    def _failed(self, spec: nodespec.NodeSpec | None) -> dt.timedelta:
        """The wait before the next try after one more failure in a row."""
        self._failures += 1
        first = self.config.failure_retry.total_seconds()
        cap = spec.check_interval if spec is not None else NO_SPEC_RETRY_CAP
        wait = retrying.backoff(first, max(first, cap.total_seconds()))
        return dt.timedelta(seconds=retrying.delay(wait, self._failures))

    # --- the published CAs ---------------------------------------------------------------

    def _on_ca_list(self, items: list[dict[str, Any]]) -> None:
        self._set_ca(dict(items[0].get("data") or {}) if items else None)

    def _on_ca_event(self, event: kube_.WatchEvent) -> None:
        self._set_ca(None if event.type == "DELETED" else dict(event.obj.get("data") or {}))

    def _set_ca(self, data: dict[str, Any] | None) -> None:
        with self._lock:
            changed, self._ca_data = data != self._ca_data, data
        if changed:
            self.wake("published CA certificates changed")

    def _publication(self, observed: hoststate.Observed) -> hoststate.Published:
        """What the leader publishes, for a pass: in a cluster only the leader renews a CA,
        a node installs what it accepts (``decide.caplan``)."""
        with self._lock:
            data = self._ca_data
        source = f"ConfigMap {self.config.namespace}/{capublished.NAME}"
        return capublished.decode(data or {}, source)

    # --- desired state ------------------------------------------------------------------

    def _current_spec(self) -> nodespec.NodeSpec | None:
        """The spec to converge to: the new one if valid, else the last good one (with the
        reason kept in ``_spec_error``), else None."""
        if self.config.policy_file is not None:
            self._load_policy_file()
        else:
            with self._lock:
                node = self._node
            if node is not None:
                self._decode_desired(nodes.annotation(node, desired.ANNOTATION))
            elif self._good is None and self._spec_error is None:
                self._spec_error = f"Node {self.config.node_name} not found: no kucero.io/desired"
        if self._good is None and self._kube is None:
            self._spec_error = self._spec_error or "no policy"
        if self._good is None and self._spec_error and self._recovery_defaults():
            # API unreachable from the start: the seed flags are the best desired state known
            loaded = policy.from_mapping(
                {"apiVersion": policy.API_VERSION, "kind": policy.KIND},
                "defaults",
                self.config.policy_defaults,
            )
            return policy.resolve(loaded, self.config.node_labels)
        return self._good

    def _recovery_defaults(self) -> bool:
        return self._kube is not None and not self._listed.is_set()

    def _decode_desired(self, text: str | None) -> None:
        if text == self._desired_text and (self._good is not None or self._spec_error):
            return
        self._desired_text = text
        try:
            self._good = desired.decode(text)
            self._spec_error = None
        except desired.DesiredError as e:
            if self._good is None:  # no pass runs: _not_run says why
                self._spec_error = str(e)
                return
            self._spec_error = f"{e}; keeping revision {self._good.revision}"
            log.error("%s", self._spec_error)

    def _load_policy_file(self) -> None:
        path = self.config.policy_file
        assert path is not None
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as e:
            self._spec_error = f"{path}: cannot read: {e.strerror or e}"
            return
        with self._lock:
            node = self._node
        labels = nodes.labels(node) if node is not None else dict(self.config.node_labels)
        try:
            loaded = policy.load(text, path, self.config.policy_defaults)
            self._good = policy.resolve(loaded, labels)
            self._spec_error = None
        except policy.PolicyError as e:
            kept = f"; keeping revision {self._good.revision}" if self._good else ""
            self._spec_error = " ".join(e.errors) + kept
            if text != self._policy_text:
                log.error("%s", self._spec_error)
        self._policy_text = text

    # --- the slot gate ------------------------------------------------------------------

    def _control_plane(self, observed: hoststate.Observed) -> bool:
        with self._lock:
            node = self._node
        labelled = node is not None and nodes.is_control_plane(node)
        return labelled or bool(observed.manifests) or bool(observed.leaves)

    def _gate(self, the_plan: actions.Plan, observed: hoststate.Observed) -> str | None:
        control_plane = self._control_plane(observed)
        return self.turn.take(self._pass_spec, the_plan, observed, control_plane)
