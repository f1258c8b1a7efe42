"""Carry out a plan on a node: renewals, kubelet repairs and restarts.

Every file change of a pass goes through one ``transaction.apply`` (backup, journal, atomic
writes), together with kucero's state file that records the restarts the change makes owed.
A restart that fails therefore stays owed and is planned again by the next pass, even though
the certificates on disk no longer look due.

Each action is idempotent: renewing re-reads nothing it has not observed, writing content a
file already has is a no-op, and moving back a manifest that is already in place does nothing.
Static pod restarts (``node.restart``) are verified one at a time; the first that fails is
rolled back and stops the pass: no further component is touched, and what was not restarted
stays owed. With ``restart: none`` the components that still run an old certificate are kept
in the state file (``restartRequired``) until a probe shows they restarted.

Immediately before each disruptive step (the renewal transaction, each static pod restart, the
kubelet restart) ``Settings.guard`` is asked (the node daemon: is the rotation slot still held,
with the step's margin left?) and, before restarting etcd, etcd itself (``etcdquorum``: would
the other members keep quorum?), in every mode, ``node --once`` included. A step they refuse is
not started; the pass stops there and what it did not do stays owed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable

from cryptography import x509

from reconciler.decide import caplan, components, kubeconfig, kubelet, pki, slots
from reconciler.model import actions, hoststate, kubeadm, nodespec, paths, staticpod
from reconciler.node import carenew, etcdquorum, interrupt, keys, observe, restart, transaction
from reconciler.node import host as host_

log = logging.getLogger(__name__)


def _no_metric(node: str | None, component: str, result: str) -> None:
    """Default restart hook; the node daemon counts kucero_restarts_total through it."""


def _no_guard(step: str, margin: float) -> str | None:
    """Default step guard: alone on the node (``node --once``), nothing to confirm."""
    return None


@dataclasses.dataclass(frozen=True)
class Settings:
    kubelet_restart_command: tuple[str, ...]
    # Longest wait for a restarted component to stop answering (its manifest stays out that
    # long at most): the kubelet re-reads the directory every 20 s by default
    # (fileCheckFrequency), so anything below 20 s can miss it on a real node.
    manifest_grace_seconds: float = 25.0
    # crash tests only: SIGKILL at this transaction step (0: never)
    failpoint: int = 0
    # set by SIGTERM/SIGINT: finish the step in flight, start no restart, put manifests back
    stop: interrupt.Stop = dataclasses.field(default_factory=interrupt.Stop)
    crictl_command: tuple[str, ...] = ("crictl",)
    # called once per static pod restart with (node, component, result)
    on_restart: Callable[[str | None, str, str], None] = _no_metric
    # (step, seconds it needs) -> None to start it, or why not: the rotation slot check
    guard: Callable[[str, float], str | None] = _no_guard


def recover(host: host_.Host) -> list[str]:
    """Repair what a crashed pass left: an open journal, manifests moved out, a rollback cut
    short. Idempotent."""
    done = transaction.recover(host)
    notes = [done] if done else []
    notes += [
        f"removed {p} left by an interrupted write" for p in transaction.remove_temporaries(host)
    ]
    return notes + restart.recover(host, lambda: dt.datetime.now(dt.UTC))


def execute(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    the_plan: actions.Plan,
    now: dt.datetime,
    settings: Settings,
    built: observe.Written | None = None,
) -> list[actions.Result]:
    """Carry out ``the_plan``; ``built`` (when given) is filled with what the renewals built
    and verified, for ``observe.refresh`` to reuse when it reads those very bytes back."""
    results = _Logged()
    writes: list[transaction.Write] = []
    written: list[actions.Action] = []
    ca_keys: dict[str, pki.PrivateKey] = {}
    # CA renewal first: the trust-anchor writes, and the CA certificates leaves are signed for
    cas = carenew.prepare(host, spec, observed, the_plan, now)
    results += cas.failed
    written += cas.renewed
    for action, write in cas.writes:
        writes.append(write)
        written.append(action)
    new_keys = _new_keys(observed, the_plan)
    for action in the_plan.actions:
        try:
            if action.kind == actions.ActionKind.RENEW:
                writes += _renewal(
                    host, spec, observed, action.target, now, ca_keys, new_keys, built, cas.certs
                )
            elif action.kind == actions.ActionKind.FIX_KUBELET_CONF:
                writes.append(_fix_kubelet_conf(observed))
            elif action.kind == actions.ActionKind.SET_KUBELET_CONFIG:
                writes.append(_set_kubelet_config(spec, observed, the_plan))
            else:
                continue
        except (host_.HostError, pki.PKIError, kubeconfig.KubeconfigError, ValueError) as e:
            results.append(actions.Result(action, False, str(e)))
            continue
        written.append(action)

    # A restart is owed only for what actually landed (or was owed before): restarting the
    # control plane after a failed renewal would disrupt it for nothing, every pass.
    owed = set(observed.pending_restarts)
    before = _served_before(host, spec, observed, written)
    backup: str | None = None
    stopped: str | None = None
    if writes and (stopped := settings.guard("the renewal transaction", slots.STEP_SECONDS)):
        results += [_not_started(a, stopped) for a in written]
        writes = []
    if writes:
        new_owed = owed | _restarts_for(the_plan, written, observed)
        writes.append(_state_write(host, new_owed, cas.replaced))
        installing = set(cas.installed_paths)
        try:
            backup = transaction.apply(
                host,
                writes,
                now,
                spec.kubeadm.backup_retain,
                transaction.Failpoint(settings.failpoint),
                # a CA renewal writes the CA's certificate, never its key
                protected=tuple(p for p in PROTECTED if p not in installing),
            )
        except (transaction.TransactionError, host_.HostError) as e:
            note = _prune(host, spec.kubeadm.backup_retain, getattr(e, "backup", None))
            results.extend(actions.Result(a, False, f"{e}{note}") for a in written)
        else:
            owed = new_owed
            note = _prune(host, spec.kubeadm.backup_retain, backup)
            results.extend(
                actions.Result(a, True, f"done (backup in {backup}{note})") for a in written
            )
    elif not spec.paused:
        # every pass prunes, so a smaller backup.retain or a failed pass's backup is honoured
        _prune(host, spec.kubeadm.backup_retain, None)

    if spec.kubeadm.restart == "none":
        _track_required(host, observed, before, backup is not None)
    for action in the_plan.actions:
        if action.kind not in (
            actions.ActionKind.RESTART_STATIC_POD,
            actions.ActionKind.RESTART_KUBELET,
        ):
            continue
        if settings.stop.requested:
            results.append(
                actions.Result(
                    action,
                    False,
                    f"not started: interrupted by {settings.stop.name}; still owed to the next pass",
                )
            )
            continue
        if action.target not in owed:
            results.append(
                actions.Result(action, False, "skipped: the change it would load was not written")
            )
            continue
        if stopped is not None:
            results.append(actions.Result(action, False, f"skipped: {stopped}; still owed"))
            continue
        if refusal := _before_step(host, spec, observed, action, settings):
            results.append(_not_started(action, refusal))
            stopped = refusal
            continue
        if action.kind == actions.ActionKind.RESTART_STATIC_POD:
            result = _restart_static_pod(host, spec, observed, action, backup, settings)
            results.append(result)
            if not result.ok:
                stopped = f"the pass stopped after {action.target} failed"
                continue
        else:
            try:
                host.run(settings.kubelet_restart_command)
            except host_.HostError as e:
                results.append(actions.Result(action, False, str(e)))
                continue
            results.append(
                actions.Result(action, True, "ran " + " ".join(settings.kubelet_restart_command))
            )
        owed.discard(action.target)
        _save_state(host, owed)
    return list(results)


class _Logged(list[actions.Result]):
    """The pass's results, each logged as it is known (a restart can take minutes: its line
    comes when it is done, not at the end of the pass)."""

    def append(self, result: actions.Result) -> None:
        fields: dict[str, object] = {**result.action.log_fields()}
        if result.restart is not None:
            fields["result"] = result.restart.get("result")
        level = logging.INFO if result.ok else logging.ERROR
        message = result.message or "done"
        log.log(level, "%s %s: %s", result.action.kind, result.action.target, message, extra=fields)
        super().append(result)

    def extend(self, results: Iterable[actions.Result]) -> None:
        for result in results:
            self.append(result)


def _before_step(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    action: actions.Action,
    settings: Settings,
) -> str | None:
    """Why this restart must not start now (etcd's quorum, then the slot's time), or None."""
    if action.kind == actions.ActionKind.RESTART_KUBELET:
        return settings.guard("the kubelet restart", slots.STEP_SECONDS)
    pod = observed.static_pods.get(action.target)
    if pod is None:
        return None  # reported by _restart_static_pod
    if pod.name == "etcd" and (refusal := etcdquorum.check(host, pod)):
        return refusal
    margin = slots.STEP_SECONDS
    if spec.kubeadm.restart == "manifest-move":
        margin += settings.manifest_grace_seconds  # the wait for it to stop is in the step
    return settings.guard(f"the restart of {pod.name}", margin)


def _not_started(action: actions.Action, why: str) -> actions.Result:
    return actions.Result(action, False, f"not started: {why}; still owed to the next pass")


def _restart_static_pod(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    action: actions.Action,
    backup: str | None,
    settings: Settings,
) -> actions.Result:
    """Restart, verify and, on failure, roll back one component; count it."""
    pod = observed.static_pods.get(action.target)
    if pod is None:
        return actions.Result(action, False, f"{action.target}: its manifest could not be read")
    try:
        outcome = _run_restart(host, spec, pod, backup, settings)
    except interrupt.Interrupted as e:
        settings.on_restart(observed.node_name, pod.name, "interrupted")
        return actions.Result(action, False, str(e))
    line = f"{outcome.result} in {outcome.seconds:.1f}s (waited {outcome.waited:.1f}s): {outcome.message}"
    settings.on_restart(observed.node_name, pod.name, outcome.result)
    return actions.Result(action, outcome.ok, line, outcome.to_dict())


def _run_restart(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    pod: staticpod.StaticPod,
    backup: str | None,
    settings: Settings,
) -> restart.Outcome:
    return restart.restart(
        host,
        pod,
        restart.Settings(
            strategy=spec.kubeadm.restart,
            health_timeout=spec.kubeadm.health_timeout.total_seconds(),
            stop_timeout=settings.manifest_grace_seconds,
            crictl=settings.crictl_command,
            stop=settings.stop,
        ),
        backup,
        lambda: dt.datetime.now(dt.UTC),
    )


def _served_before(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    written: list[actions.Action],
) -> dict[str, dict[str, object]]:
    """With ``restart: none``: for each component a renewal will leave running an old
    certificate, what it serves now (a restart later shows as a new in-memory certificate)."""
    if spec.kubeadm.restart != "none":
        return {}
    renewed = [a.target for a in written if a.kind == actions.ActionKind.RENEW]
    out: dict[str, dict[str, object]] = {}
    for component, names in components.affected(renewed, observed.static_pods):
        pod = observed.static_pods[component]
        serving = any(
            e.cert_file and e.cert_file in components.leaf_files(n)
            for n in names
            for e in pod.endpoints
        )
        out[component] = {"fingerprint": restart.fingerprint(host, pod), "serving": serving}
    return out


def _track_required(
    host: host_.Host,
    observed: hoststate.Observed,
    before: dict[str, dict[str, object]],
    landed: bool,
) -> None:
    """Keep in the state file the components that still run an old certificate: those this
    pass just left running one (nothing restarted them: no probe needed), and those of earlier
    passes that a probe does not show restarted yet."""
    state = observe.read_state(host)
    still = {}
    for component, seen in dict(state.get("restartRequired", {})).items():
        pod = observed.static_pods.get(component)
        if pod is None or not isinstance(seen, dict) or (landed and component in before):
            continue
        if seen.get("serving"):
            done = restart.verify(host, pod) is None
        else:
            now = restart.fingerprint(host, pod)
            done = now is not None and now != seen.get("fingerprint")
        if not done:
            still[component] = seen
    if landed:
        still.update(before)
    if still != state.get("restartRequired", {}):
        state["restartRequired"] = still
        host.write_atomic(paths.STATE, json.dumps(state, indent=1).encode(), mode=0o600)


def _restarts_for(
    the_plan: actions.Plan, written: list[actions.Action], observed: hoststate.Observed
) -> set[str]:
    """The planned restarts that load something in ``written``."""
    components = {
        c
        for a in written
        if a.kind == actions.ActionKind.RENEW
        for c in kubeadm.LEAF_BY_NAME[a.target].components
    }
    installed = [a.target for a in written if a.kind == actions.ActionKind.INSTALL_CA]
    components |= {c for c, _ in caplan.restarts(installed, observed)}
    if any(
        a.kind in (actions.ActionKind.FIX_KUBELET_CONF, actions.ActionKind.SET_KUBELET_CONFIG)
        for a in written
    ):
        components.add("kubelet")
    planned = {
        a.target
        for a in the_plan.actions
        if a.kind in (actions.ActionKind.RESTART_STATIC_POD, actions.ActionKind.RESTART_KUBELET)
    }
    return components & planned


# A pass never writes a CA's files: the last guard before any write compares against these.
PROTECTED = tuple(p for ca in kubeadm.CAS for p in (ca.cert, ca.key))


def _prune(host: host_.Host, retain: int, backup: str | None) -> str:
    """Prune old backups; a failure is reported, never fatal (the change has landed)."""
    try:
        transaction.prune(host, retain, keep=backup)
    except host_.HostError as e:
        return f"; pruning old backups failed: {e}"
    return ""


def _new_keys(observed: hoststate.Observed, the_plan: actions.Plan) -> dict[str, pki.PrivateKey]:
    """The new keys of every renewal of the plan, made together so RSA ones use every core."""
    public_keys = {}
    for action in the_plan.of(actions.ActionKind.RENEW):
        leaf = observed.leaves.get(action.target)
        if leaf is not None and leaf.cert is not None:
            public_keys[action.target] = leaf.cert.public_key()
    return keys.new_keys_like(public_keys)  # type: ignore[arg-type]


def _renewal(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    name: str,
    now: dt.datetime,
    ca_keys: dict[str, pki.PrivateKey],
    new_keys: dict[str, pki.PrivateKey],
    built: observe.Written | None = None,
    ca_certs: dict[str, x509.Certificate] | None = None,
) -> list[transaction.Write]:
    """``ca_certs``: the CA certificates this pass converges to (renewed or published): the
    leaf is signed for that one, and a kubeconfig embeds it."""
    leaf = observed.leaves[name]
    ca = kubeadm.CA_BY_NAME[leaf.ca]
    ca_cert = (ca_certs or {}).get(leaf.ca) or observed.cas[leaf.ca].cert
    assert leaf.cert is not None and ca_cert is not None
    if leaf.ca not in ca_keys:
        data = host.read(ca.key)
        if data is None:
            raise host_.HostError(f"{ca.key}: CA key disappeared")
        try:
            ca_keys[leaf.ca] = pki.load_key(data)
        except pki.PKIError as e:
            raise pki.PKIError(f"{ca.key}: {e}") from e  # the message names the file, never the key
    # absent only for an unsupported key type: new_key_like raises the error for this action
    new_key = new_keys.get(name) or keys.new_key_like(leaf.cert.public_key())  # type: ignore[arg-type]
    cert = pki.renew(
        leaf.cert,
        ca_cert,
        ca_keys[leaf.ca],
        new_key,
        keys.new_serial(),
        now,
        spec.kubeadm.certificate_validity,
    )
    _check_renewed(cert, new_key, ca_cert, name)
    cert_pem, key_pem = pki.cert_pem(cert), pki.key_pem(new_key, like=leaf.key_pem)
    if built is not None:
        built.pairs[(cert_pem, key_pem, leaf.ca)] = cert
    if leaf.kind == "certificate":
        key_path = kubeadm.LEAF_BY_NAME[name].key
        assert key_path is not None
        return [
            transaction.Write(leaf.path, cert_pem),
            transaction.Write(key_path, key_pem, mode=0o600),
        ]
    creds = leaf.credentials
    assert creds is not None and leaf.document is not None
    if creds.cert_data is None or creds.key_data is None:
        # the plan refuses these (NotKubeadmManaged); never follow a reference to write a key
        raise kubeconfig.KubeconfigError(
            f"{leaf.path}: client credentials not embedded; not kubeadm's to renew"
        )
    # the file now holds a private key: 0600, whatever it was before
    # kubeadm refreshes the embedded CA too (certs renew: kubeConfigReadWriter.Write)
    document = kubeconfig.embedded(
        leaf.document, creds.user, cert_pem, key_pem, ca_pem=pki.cert_pem(ca_cert)
    )
    data = kubeconfig.dump(document)
    if built is not None:
        built.documents[data] = document
    return [transaction.Write(leaf.path, data, mode=0o600)]


def _check_renewed(
    cert: x509.Certificate, key: pki.PrivateKey, ca: x509.Certificate, name: str
) -> None:
    if not pki.key_matches(cert, key) or not pki.issued_by(cert, ca):
        raise pki.PKIError(f"{name}: renewed certificate failed verification; nothing written")


def _fix_kubelet_conf(observed: hoststate.Observed) -> transaction.Write:
    conf = observed.kubelet.conf
    assert conf is not None and conf.document is not None and conf.credentials is not None
    data = kubeconfig.with_file_references(
        conf.document,
        conf.credentials.user,
        kubeadm.KUBELET_CLIENT_CURRENT,
        kubeadm.KUBELET_CLIENT_CURRENT,
    )
    return transaction.Write(kubeadm.KUBELET_CONF, data)


def _set_kubelet_config(
    spec: nodespec.NodeSpec, observed: hoststate.Observed, the_plan: actions.Plan
) -> transaction.Write:
    state = observed.kubelet
    assert state.config_text is not None and state.config is not None
    fixing = bool(the_plan.of(actions.ActionKind.FIX_KUBELET_CONF))
    edit = kubelet.config_edit(spec, state.config, kubelet.conf_on_rotated_file(state, fixing))
    text = kubelet.set_fields(state.config_text, edit.changes)
    return transaction.Write(kubeadm.KUBELET_CONFIG, text.encode())


def _state_write(
    host: host_.Host, owed: set[str], ca_replaced: dict[str, x509.Certificate] | None = None
) -> transaction.Write:
    """``ca_replaced``: CA certificates a CA renewal replaces; their end is kept (``caPrevious``)
    because kubeconfigs handed out earlier embed them and work until then."""
    state = observe.read_state(host)
    state["pendingRestarts"] = sorted(owed)
    for name, cert in (ca_replaced or {}).items():
        state.setdefault("caPrevious", {})[name] = carenew.previous_entry(cert)
    return transaction.Write(paths.STATE, json.dumps(state, indent=1).encode(), mode=0o600)


def _save_state(host: host_.Host, owed: set[str]) -> None:
    write = _state_write(host, owed)
    host.write_atomic(write.path, write.data, mode=write.mode)
