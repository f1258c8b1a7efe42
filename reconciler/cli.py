"""The ``kucero`` command line: flags (``flags``) into one frozen ``config.Settings``, then
the command.

Exit codes: 0 success/converged, 1 something failed or is invalid, 2 bad usage.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from reconciler import config, flags, logs
from reconciler.decide import duration

if TYPE_CHECKING:
    from reconciler.model import nodespec

# Each command imports what it needs when it runs (see _check_expiration and the others), not
# here: a process pays for what its command uses. check-expiration never loads jsonschema, and
# `kucero --version` loads neither cryptography nor YAML. tests/unit/test_imports.py checks it.


def main(argv: Sequence[str] | None = None) -> int:
    args = flags.parser().parse_args(argv)
    try:
        settings = config.settings_from(args)
    except config.SettingsError as e:
        print(e, file=sys.stderr)
        return 2
    commands = {
        "check-expiration": _check_expiration,
        "plan": _plan,
        "node": _node,
        "validate-policy": _validate_policy,
        "run": _daemon,
        "controller": _controller,
        "status": _status,
    }
    with logs.setup(args.log_format, args.log_level):
        try:
            return commands[settings.command](settings)
        except BrokenPipeError:  # `kucero status -o json | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1


def _now(settings: config.Settings) -> dt.datetime:
    return getattr(settings.args, "now", None) or dt.datetime.now(dt.UTC)


def _check_root(settings: config.Settings) -> str | None:
    if not os.path.isdir(settings.host_root):
        return f"kucero: host root {settings.host_root} does not exist or is not a directory"
    return None


def _check_expiration(settings: config.Settings) -> int:
    from reconciler.decide import report
    from reconciler.node import host as host_
    from reconciler.node import observe

    if error := _check_root(settings):
        print(report.printable(error), file=sys.stderr)
        return 1
    host = host_.Host(settings.host_root)
    observed = observe.observe(host, settings.node_name)
    previous = observe.read_state(host).get("caPrevious", {})  # CA certificates renewals replaced
    rows = report.expiration(observed, _now(settings), previous)
    if settings.args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(report.expiration_table(rows, _now(settings)), end="")
    return 1 if any(r.get("error") for r in rows) else 0


def _load_spec(settings: config.Settings) -> nodespec.NodeSpec:
    from reconciler.decide import policy

    path = settings.args.policy
    if path:
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as e:
            raise policy.PolicyError(path, [f"cannot read: {e.strerror or e}"]) from e
        loaded = policy.load(text, path, settings.policy_defaults)
    else:
        loaded = policy.from_mapping(
            {"apiVersion": policy.API_VERSION, "kind": policy.KIND},
            "defaults",
            settings.policy_defaults,
        )
    return policy.resolve(loaded, settings.args.node_labels)


def _ca_bundle(settings: config.Settings) -> Any:
    """``--ca-bundle FILE`` as a publication for ``once.run_once`` (None without it): the
    file is read now (OSError), matched to the node's CAs when the pass has observed them."""
    path = getattr(settings.args, "ca_bundle", None)
    if not path:
        return None
    from reconciler.decide import capublished

    with open(path, "rb") as f:
        data = f.read(capublished.MAX_PEM_BYTES + 1)
    source = f"--ca-bundle {path}"
    return lambda observed: capublished.from_bundle(data, source, observed.cas)


def _plan(settings: config.Settings) -> int:
    from reconciler.decide import plan, policy, report
    from reconciler.node import host as host_
    from reconciler.node import observe

    if error := _check_root(settings):
        print(report.printable(error), file=sys.stderr)
        return 1

    try:
        spec = _load_spec(settings)
    except policy.PolicyError as e:
        print("\n".join(map(report.printable, e.errors)), file=sys.stderr)
        return 1
    observed = observe.observe(host_.Host(settings.host_root), settings.node_name)
    try:
        publication = _ca_bundle(settings)
    except OSError as e:
        print(report.printable(f"kucero: --ca-bundle: {e.strerror or e}"), file=sys.stderr)
        return 1
    if publication is not None:
        observed = dataclasses.replace(observed, published=publication(observed))
    the_plan = plan.plan(spec, observed, _now(settings))
    if settings.args.output == "json":
        print(json.dumps({"revision": spec.revision, **the_plan.to_dict()}, indent=2))
    else:
        # the node name may come from a certificate subject: never print it raw
        node = report.printable(observed.node_name or "<unknown>")
        print(f"policy revision {spec.revision}, node {node}\n")
        print(report.plan_table(the_plan), end="")
    return 0


def _node(settings: config.Settings) -> int:
    if not settings.args.once:
        return _daemon(settings)
    from reconciler.decide import caplan, policy, report
    from reconciler.node import execute, hostcommands, interrupt
    from reconciler.node import host as host_
    from reconciler.run import once

    try:
        spec = _load_spec(settings)
    except policy.PolicyError as e:
        print("\n".join(map(report.printable, e.errors)), file=sys.stderr)
        # Finishing an interrupted pass needs no policy: never leave a torn pair waiting for
        # someone to fix a typo in Git.
        for note in once.recover_only(host_.Host(settings.host_root)):
            print(report.printable(f"recovered: {note}"), file=sys.stderr)
        return 1
    try:
        commands = hostcommands.for_spec(_given_commands(settings), spec)
        publication = _ca_bundle(settings)
    except hostcommands.Refused as e:
        print(f"kucero: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(report.printable(f"kucero: --ca-bundle: {e.strerror or e}"), file=sys.stderr)
        return 1
    with interrupt.on_signals(interrupt.Stop()) as stop:
        exec_settings = execute.Settings(
            kubelet_restart_command=commands.kubelet_restart,
            manifest_grace_seconds=settings.args.manifest_grace,
            failpoint=settings.args.failpoint,
            stop=stop,
            crictl_command=commands.crictl,
        )
        result = once.run_once(
            host_.Host(settings.host_root),
            spec,
            settings.node_name,
            lambda: dt.datetime.now(dt.UTC),
            exec_settings,
            publication=publication,
        )
    if settings.args.output == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for note in result.recovered:
            print(report.printable(f"recovered: {note}"))
        print(report.results_table(result.results), end="")
        print(report.findings_table(result.findings), end="")
        failures = result.failures
        if failures:
            print("\nFAILED:\n" + "\n".join(f"  {report.printable(f)}" for f in failures))
        elif result.converged:
            print(f"\nconverged to policy revision {spec.revision}")
        if result.ca_renewed:
            print("\n" + report.printable(f"OTHER NODES: {caplan.other_nodes(result.ca_renewed)}"))
    if stop.requested:
        print(report.printable(f"kucero: {result.error}"), file=sys.stderr)
    return 0 if result.converged else 1


def _given_commands(settings: config.Settings) -> Any:
    from reconciler.node import hostcommands

    return hostcommands.Given(
        settings.host_root, settings.args.kubelet_restart_command, settings.args.crictl_command
    )


def _daemon(settings: config.Settings) -> int:
    """``kucero node`` (and ``kucero run``): the long-running node reconciler. The host
    commands are decided for each desired state, before each pass (``node_daemon``)."""
    from reconciler.decide import slots
    from reconciler.node import execute, interrupt
    from reconciler.run import daemon  # the cluster layer: only daemons pay for it

    args = settings.args
    if not settings.node_name:
        print("kucero: --node-name (or $NODE_NAME) is required", file=sys.stderr)
        return 2
    lease = duration.parse_timedelta(args.rotation_lease_duration)
    if why := slots.lease_fits(lease.total_seconds(), args.manifest_grace):
        print(f"kucero: {why}", file=sys.stderr)
        return 2
    exec_settings = execute.Settings(
        kubelet_restart_command=(),
        manifest_grace_seconds=args.manifest_grace,
        failpoint=args.failpoint,
        stop=interrupt.Stop(),
    )
    return daemon.main(
        daemon.Options(
            command=settings.command,
            node_name=settings.node_name,
            host_root=settings.host_root,
            namespace=args.ds_namespace,
            policy_file=args.policy,
            policy_defaults=settings.policy_defaults,
            node_labels=args.node_labels,
            kubeconfig=args.kubeconfig,
            metrics_addr=args.metrics_addr,
            metrics_secure=args.metrics_secure,
            metrics_cert_file=args.metrics_cert_file,
            metrics_key_file=args.metrics_key_file,
            lease_duration=lease,
            slot_retry=duration.parse_timedelta(args.slot_retry_period),
            failure_retry=duration.parse_timedelta(args.retry_period),
            execute=exec_settings,
            commands=_given_commands(settings),
            controller=settings.controller if settings.command == "run" else None,
            components=_leader_components(settings),
        )
    )


def _validate_policy(settings: config.Settings) -> int:
    from reconciler.decide import policy, report

    ok = True
    for path in settings.args.files:
        try:
            with open(path, "rb") as f:
                loaded = policy.load(f.read(), path)
        except OSError as e:
            print(report.printable(f"{path}: cannot read: {e.strerror or e}"))
            ok = False
        except policy.PolicyError as e:
            print("\n".join(map(report.printable, e.errors)))
            ok = False
        else:
            print(report.printable(f"{path}: valid (revision {loaded.revision})"))
    return 0 if ok else 1


def _status(settings: config.Settings) -> int:
    """One line per Node from its kucero annotations (``decide.overview``)."""
    from reconciler.cluster import kube as kube_
    from reconciler.cluster import nodes
    from reconciler.decide import desired, overview, report, status

    args = settings.args
    try:
        door = kube_.connect(args.kubeconfig)
        try:
            listed = nodes.list_all(door, args.selector)
        finally:
            door.close()
    except kube_.KubeError as e:
        print(report.printable(f"kucero: {e}"), file=sys.stderr)
        return 1
    rows = [
        overview.row(
            nodes.name(n),
            nodes.annotation(n, desired.ANNOTATION),
            nodes.annotation(n, status.ANNOTATION),
        )
        for n in sorted(listed, key=nodes.name)
    ]
    if args.output == "json":
        print(overview.dumps(rows))
    elif rows:
        print(overview.table(rows, _now(settings)), end="")
    else:
        print("No Nodes found.", file=sys.stderr)
    return 0


def _controller(settings: config.Settings) -> int:
    from reconciler.run import controller

    return controller.main(settings.controller, _leader_components(settings))


def _leader_components(settings: config.Settings) -> Callable[[Any], tuple[Any, ...]]:
    """What only the leader runs besides the policy loop: the kubelet serving CSR signer,
    reading the CA and the API server's certificate under ``--host-root`` (``--node-name`` is
    the node those files belong to), and the CA publisher. Made with the process's metrics."""

    def make(metrics: Any) -> tuple[Any, ...]:
        from reconciler.run import capublisher, signer

        made = signer.Signer(settings.host_root, metrics, node_name=settings.node_name)
        # with ca.mode renew: renews the CAs once and publishes the certificates
        publisher = capublisher.CAPublisher(settings.host_root, settings.args.ds_namespace, metrics)
        return (made, publisher)

    return make
