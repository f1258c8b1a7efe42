"""``kucero controller``: the leader turns the policy ConfigMap into each Node's desired state.

While it holds the leader Lease (``election``), it watches the policy ConfigMap and the Nodes
and, for every Node, writes ``kucero.io/desired`` (the policy resolved against the Node's labels,
compact JSON from ``decide.desired``) with a merge patch, only when the value differs from what
the Node carries. A label change re-resolves that Node alone; a policy change, every Node.

Edge cases:

- an invalid policy (no ``policy.yaml`` key, YAML that is not a mapping, unknown apiVersion, any
  schema error) is refused: the last valid policy stays in force, ``kucero_policy_valid`` is 0,
  the log says why, and a Warning Event on the ConfigMap carries exactly what
  ``kucero validate-policy`` prints for the same text (file and field), once per ConfigMap
  version;
- an invalid policy at start-up, with no valid one seen yet by this leader: nothing is written,
  so the Nodes keep the desired state the previous leader gave them;
- no ConfigMap when a term starts: built-in defaults and the seed flags (a first install, or
  the drop-in ``kucero run`` with flags only);
- the ConfigMap deleted (or gone from a re-list) after this term has seen it: like a broken
  policy, the one in force stays (or, if none was valid yet, the Nodes keep theirs; deleting
  the policy once rolled the built-in defaults out to every Node), ``kucero_policy_valid`` is
  0, the log says so and a Warning Event ``PolicyDeleted`` on the ConfigMap (once per term);
- API errors (403 included) while writing: logged, counted in ``kucero_api_errors_total``, and
  the Node retried with back-off (``retrying``); watches back off on their own;
- leadership lost: the work stops (threads joined) before the election is entered again;
- fencing: everything a term does (watches, desired-state patches, Events, the components' CSR
  approvals and certificates) goes through the term's door (``election.Term.kube``), which sends
  no request once the term's time is up and no write without ``Term.write_margin`` of it left,
  whatever thread asks: a leader that cannot renew stops writing on its own clock.

Leader-only components (the CSR signer) run beside it while leading; one that says it
``serves_csrs`` makes the desired state tell nodes their serving CSRs will be approved, when the
policy's ``csrSigner.enabled`` is true for the node and its allowlist covers what the node's
kubelet asks for (its current addresses, ``decide.sans.kubelet_covered``); otherwise a node would
switch ``serverTLSBootstrap`` on and its kubelet wait for a certificate that is never signed.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from reconciler import metrics as metrics_
from reconciler import retrying
from reconciler.cluster import configmaps, events, nodes, watching
from reconciler.cluster import kube as kube_
from reconciler.decide import csr, desired, policy
from reconciler.run import election, endpoint, health

log = logging.getLogger(__name__)

POLICY_KEY = "policy.yaml"
REASON_INVALID = "InvalidPolicy"
REASON_APPLIED = "PolicyApplied"
REASON_DELETED = "PolicyDeleted"
STOP_POLL_SECONDS = 0.5
# Nodes whose desired state could not be written are tried again after 0.5 s, doubling to 30 s.
WRITE_BACKOFF_MAX_SECONDS = 30.0
WRITE_BACKOFF = retrying.backoff(first=0.5, cap=WRITE_BACKOFF_MAX_SECONDS)
# Liveness (run.health): the work loop beats each time round and before each Node it writes;
# one write is bounded by the door's timeouts and retries, then comes at most one back-off.
WRITE_WITHIN_SECONDS = (
    kube_.CONNECT_TIMEOUT_SECONDS
    + kube_.READ_TIMEOUT_SECONDS
    + kube_.RETRY_MAX_TOTAL_SECONDS
    + WRITE_BACKOFF_MAX_SECONDS
    + STOP_POLL_SECONDS
)
HEARTBEATS = ("controller-work", "watch-policy", "watch-nodes")


class Component(Protocol):
    """Work that runs only on the leader, in its own thread, until ``stop`` is set."""

    name: str
    serves_csrs: bool

    def run(
        self, kube: kube_.Kube, stop: threading.Event, current: Callable[[], policy.Policy | None]
    ) -> None: ...

    def policy_changed(self) -> None:
        """Another policy revision is in force (or the first one of a term): a component that
        acts on it at its own pace looks again now. Called from the policy watch's thread."""


@dataclasses.dataclass(frozen=True)
class Settings:
    kubeconfig: str | None
    election: election.Config
    policy_namespace: str
    policy_name: str
    policy_defaults: Mapping[str, Any]  # the seed flags, shaped like ``spec``
    metrics_addr: tuple[str, int] | None
    metrics_secure: bool = True  # see run.endpoint
    metrics_cert_file: str | None = None
    metrics_key_file: str | None = None


@dataclasses.dataclass
class _Node:
    labels: dict[str, str]
    desired: str | None
    # status.addresses: what its kubelet puts in its serving CSR (whether to vouch for approval)
    addresses: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class Controller:
    """The leader's work; ``lead`` may run several times (one per term of leadership)."""

    def __init__(
        self,
        kube: kube_.Kube,
        settings: Settings,
        metrics: metrics_.Metrics,
        components: Sequence[Component] = (),
        heartbeats: health.Heartbeats | None = None,
    ) -> None:
        self.kube, self.settings, self.metrics = kube, settings, metrics
        self._door = kube  # the current term's fenced door (``lead``)
        self.heartbeats = heartbeats or health.Heartbeats()
        self.components = tuple(components)
        self._lock = threading.Condition()
        self.policy: policy.Policy | None = None
        self._nodes: dict[str, _Node] = {}
        self._pending: set[str] = set()
        self._reported: str | None = None  # ConfigMap resourceVersion already refused
        # The policy ConfigMap as this term last saw it: its absence is then a deletion.
        self._seen: dict[str, Any] | None = None

    def current_policy(self) -> policy.Policy | None:
        with self._lock:
            return self.policy

    def lead(self, term: election.Term) -> None:
        stop, door = term.stop, term.kube
        with self._lock:  # a new term starts from what the API says, not from the last one
            self.policy, self._nodes, self._pending, self._reported = None, {}, set(), None
            self._seen = None
            self._door = door
        s = self.settings
        threads = [
            threading.Thread(
                target=_ending_term_on_error(door.watch_forever, stop),
                args=(
                    configmaps.collection(s.policy_namespace),
                    configmaps.watch_params(s.policy_name),
                    self._on_configmap_event,
                    stop,
                    self._on_configmap_list,
                    self._counter("watch-policy"),
                    self._alive("watch-policy", watching.ALIVE_WITHIN_SECONDS),
                ),
                name="watch-policy",
            ),
            threading.Thread(
                target=_ending_term_on_error(door.watch_forever, stop),
                args=(
                    nodes.PATH,
                    None,
                    self._on_node_event,
                    stop,
                    self._on_node_list,
                    self._counter("watch-nodes"),
                    self._alive("watch-nodes", watching.ALIVE_WITHIN_SECONDS),
                ),
                name="watch-nodes",
            ),
        ]
        threads += [
            threading.Thread(
                target=_ending_term_on_error(c.run, stop),
                args=(door, stop, self.current_policy),
                name=c.name,
            )
            for c in self.components
        ]
        for thread in threads:
            thread.start()
        try:
            self._work(stop)
        finally:
            stop.set()
            with self._lock:
                self._lock.notify_all()
            for thread in threads:
                thread.join()
            for name in HEARTBEATS:  # a standby runs none of these loops
                self.heartbeats.retire(name)

    def _alive(self, name: str, within: float) -> Callable[[], None]:
        return lambda: self.heartbeats.beat(name, within)

    def _counter(self, operation: str) -> Callable[[kube_.KubeError], None]:
        return lambda e: self.metrics.api_errors.labels(operation, type(e).__name__).inc()

    # --- the policy ------------------------------------------------------------------------

    def _on_configmap_list(self, items: list[dict[str, Any]]) -> None:
        if items:
            self._read_policy(items[0])
        else:
            self._absent(None)

    def _on_configmap_event(self, event: kube_.WatchEvent) -> None:
        if event.type == "DELETED":
            self._absent(event.obj)
        else:
            self._read_policy(event.obj)

    def _absent(self, gone: dict[str, Any] | None) -> None:
        """No policy ConfigMap: built-in defaults if this term never saw one, else a deletion,
        which keeps what is in force, as a broken policy does."""
        with self._lock:
            seen, in_force = self._seen, self.policy  # ``seen`` stays: still this term's
            first = seen is not None and self._reported != REASON_DELETED
            if seen is not None:
                self._reported = REASON_DELETED
        if seen is None:
            self._use_defaults()
            return
        s = self.settings
        kept = in_force.revision if in_force else "none yet (nodes keep theirs)"
        self.metrics.set_policy(False, None)
        log.error(
            "policy ConfigMap %s/%s deleted: revision in force stays %s (recreate it to change "
            "the policy; the built-in defaults apply only to a leader that starts without one)",
            s.policy_namespace,
            s.policy_name,
            kept,
            extra={"revision": in_force.revision if in_force else None},
        )
        if first:
            note = f"the policy ConfigMap was deleted: revision {kept} stays in force"
            obj = _as_configmap(gone or seen or {})
            events.emit(self._door, obj, REASON_DELETED, note, events.WARNING, "Validate")

    def _use_defaults(self) -> None:
        s = self.settings
        log.info(
            "no ConfigMap %s/%s: built-in defaults and seed flags",
            s.policy_namespace,
            s.policy_name,
        )
        document = {"apiVersion": policy.API_VERSION, "kind": policy.KIND}
        self._accept(policy.from_mapping(document, "defaults", s.policy_defaults), None)

    def _read_policy(self, configmap: dict[str, Any]) -> None:
        s = self.settings
        with self._lock:
            self._seen = configmap
            if self._reported == REASON_DELETED:
                self._reported = None  # recreated: a later deletion is news again
        data = configmap.get("data") or {}
        try:
            if POLICY_KEY not in data:
                keys = ", ".join(sorted(data)) or "none"
                raise policy.PolicyError(
                    f"{s.policy_namespace}/{s.policy_name}",
                    [f"the ConfigMap has no key {POLICY_KEY!r} (keys: {keys})"],
                )
            # bytes, as validate-policy reads a file: the same text in YAML error messages
            loaded = policy.load(data[POLICY_KEY].encode(), POLICY_KEY, s.policy_defaults)
        except policy.PolicyError as e:
            self._refuse(configmap, e)
            return
        self._accept(loaded, configmap)

    def _refuse(self, configmap: dict[str, Any], error: policy.PolicyError) -> None:
        self.metrics.set_policy(False, None)
        with self._lock:
            in_force = self.policy.revision if self.policy else "none yet (nodes keep theirs)"
            version = configmap.get("metadata", {}).get("resourceVersion")
            new = version != self._reported
            self._reported = version
        log.error(
            "policy refused, revision in force: %s: %s",
            in_force,
            "; ".join(error.errors),
            extra={"revision": self.policy.revision if self.policy else None},
        )
        if new:
            events.emit(
                self._door, configmap, REASON_INVALID, str(error), events.WARNING, "Validate"
            )

    def _accept(self, loaded: policy.Policy, configmap: dict[str, Any] | None) -> None:
        self.metrics.set_policy(True, loaded.revision)
        with self._lock:
            changed = self.policy is None or self.policy.revision != loaded.revision
            self.policy = loaded
            self._reported = None
            if changed:
                self._pending.update(self._nodes)
                self._lock.notify_all()
        if changed:
            log.info(
                "policy revision %s in force", loaded.revision, extra={"revision": loaded.revision}
            )
            # the CA publisher otherwise looked again only after its period (up to 10 min):
            # on the real node a `ca.mode: renew` edit waited that long to start
            for component in self.components:
                component.policy_changed()
            if configmap is not None:
                note = f"policy revision {loaded.revision} is in force"
                events.emit(
                    self._door,
                    _as_configmap(configmap),
                    REASON_APPLIED,
                    note,
                    events.NORMAL,
                    "Validate",
                )

    # --- the nodes -------------------------------------------------------------------------

    def _on_node_list(self, items: list[dict[str, Any]]) -> None:
        fresh = {nodes.name(n): _entry(n) for n in items}
        with self._lock:
            self._nodes = fresh
            self._pending = set(fresh)
            self._lock.notify_all()

    def _on_node_event(self, event: kube_.WatchEvent) -> None:
        name = nodes.name(event.obj)
        with self._lock:
            if event.type == "DELETED":
                self._nodes.pop(name, None)
                self._pending.discard(name)
                return
            self._nodes[name] = _entry(event.obj)
            self._pending.add(name)
            self._lock.notify_all()

    def desired_for(
        self,
        labels: Mapping[str, str],
        loaded: policy.Policy,
        name: str = "",
        addresses: Sequence[Mapping[str, Any]] = (),
    ) -> str:
        # Per node: an override may switch the signer off for a pool, or its allowlist may not
        # cover what a node's kubelet asks for, and then that node's kubelet must not be told
        # that its serving CSRs will be approved.
        signer = any(c.serves_csrs for c in self.components) and csr.approves_kubelet(
            csr.signer_spec(loaded, labels), name, addresses
        )
        return desired.encode_for_node(policy.resolve(loaded, labels), signer)

    def _work(self, stop: threading.Event) -> None:
        failures = 0  # write rounds in a row with a Node that could not be written
        alive = self._alive("controller-work", WRITE_WITHIN_SECONDS)
        while not stop.is_set():
            alive()
            with self._lock:
                # the timeout only bounds how long a set ``stop`` goes unnoticed
                self._lock.wait_for(
                    lambda: stop.is_set() or bool(self._pending and self.policy),
                    STOP_POLL_SECONDS,
                )
                if stop.is_set():
                    return
                if not (self._pending and self.policy):
                    continue
                loaded = self.policy
                todo = {n: self._nodes[n] for n in self._pending if n in self._nodes}
                self._pending = set()
            assert loaded is not None
            failed = []
            for name, node in sorted(todo.items()):
                alive()  # each write is bounded; a thousand of them are not
                if not self._write(name, node, loaded):
                    failed.append(name)
            failures = failures + 1 if failed else 0
            if failed:
                with self._lock:
                    self._pending.update(failed)
                stop.wait(retrying.delay(WRITE_BACKOFF, failures))

    def _write(self, name: str, node: _Node, loaded: policy.Policy) -> bool:
        """Patch the Node's desired state if it differs; False when it should be retried."""
        value = self.desired_for(node.labels, loaded, name, node.addresses)
        if value == node.desired:
            return True
        try:
            nodes.patch_annotations(self._door, name, {desired.ANNOTATION: value})
        except kube_.NotFound:
            return True  # the Node is gone; its DELETED event follows
        except kube_.KubeError as e:
            self.metrics.api_errors.labels("write-desired", type(e).__name__).inc()
            log.error(
                "cannot write %s on node %s: %s", desired.ANNOTATION, name, e, extra={"node": name}
            )
            return False
        node.desired = value
        fields = {"node": name, "revision": loaded.revision}
        log.info("node %s: desired revision %s", name, loaded.revision, extra=fields)
        return True


def _ending_term_on_error(
    target: Callable[..., None], stop: threading.Event
) -> Callable[..., None]:
    """A leader thread that dies (a bug) ends the term instead of leaving a leader that no longer
    watches: the elector releases the Lease and the next term starts afresh."""

    def run(*args: Any) -> None:
        try:
            target(*args)
        except Exception:
            log.exception(
                "leader work %s failed; ending this term", getattr(target, "__name__", target)
            )
            stop.set()

    return run


def _as_configmap(obj: dict[str, Any]) -> dict[str, Any]:
    """List items come without kind and apiVersion; an Event's reference needs them."""
    return {**obj, "apiVersion": "v1", "kind": "ConfigMap"}


def _entry(node: Mapping[str, Any]) -> _Node:
    addresses = (node.get("status") or {}).get("addresses") or []
    return _Node(
        labels=nodes.labels(node),
        desired=nodes.annotation(node, desired.ANNOTATION),
        addresses=[a for a in addresses if isinstance(a, dict)],
    )


def main(
    settings: Settings,
    components: Callable[[metrics_.Metrics], Sequence[Component]] = lambda _: (),
) -> int:
    """The ``kucero controller`` process: serve metrics, elect, lead until SIGTERM/SIGINT,
    then release the Lease and exit 0."""
    metrics = metrics_.Metrics()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        kube = kube_.connect(settings.kubeconfig)
    except kube_.KubeError as e:
        log.error("%s", e)
        return 1
    elector = election.Elector(kube, settings.election, metrics)
    controller = Controller(kube, settings, metrics, components(metrics))
    server = None
    if settings.metrics_addr is not None:
        s = settings
        served = endpoint.Options(
            settings.metrics_addr, s.metrics_secure, s.metrics_cert_file, s.metrics_key_file
        )
        ready = lambda: elector.leader is not None  # noqa: E731
        try:
            server = endpoint.serve(served, metrics, ready, controller.heartbeats, kube)
        except (OSError, ValueError) as e:
            log.error("cannot serve metrics on %s:%d: %s", *settings.metrics_addr, e)
            kube.close()
            return 1
    log.info(
        "kucero controller %s: election on lease %s/%s",
        settings.election.identity,
        settings.election.namespace,
        settings.election.name,
    )
    try:
        elector.run(stop, controller.lead)
    finally:
        if server is not None:
            server.close()
        kube.close()
    return 0
