"""The ``kucero`` command line: parse flags into one frozen settings object, then dispatch.

Flag names and defaults of the original kucero DaemonSet are kept (``--renew-before=720h``,
``--enable-kucero-controller=false`` as Go's pflag spells booleans), so its manifests keep
working; they are defaults for the policy fields a policy leaves out. Every bad value is
reported at once, naming the flag, before anything runs.

Exit codes: 0 success/converged, 1 something failed or is invalid, 2 bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from reconciler import __version__
from reconciler.decide import duration

if TYPE_CHECKING:
    from reconciler.model import nodespec

# Each command imports what it needs when it runs (see _check_expiration and the others), not
# here: a process pays for what its command uses. check-expiration never loads jsonschema, and
# `kucero --version` loads neither cryptography nor YAML. tests/unit/test_imports.py checks it.

# PID 1's view of /: the default kubelet restart (nsenter --target 1) acts on its machine.
PID1_ROOT = "/proc/1/root"
NSENTER = ("nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--")


def _go_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r} (use true or false)")


def _go_duration(text: str) -> str:
    try:
        if duration.parse(text) <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be a positive duration")
    except duration.DurationError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def _rfc3339(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time (e.g. 2027-01-01T00:00:00Z)"
        ) from e
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +00:00)")
    try:
        # 9999-12-31T23:59:59-23:59 is a valid time whose UTC value is past year 9999
        return value.astimezone(dt.UTC)
    except OverflowError as e:
        raise argparse.ArgumentTypeError(
            f"{text!r} is outside the times Python can represent in UTC (years 1 to 9999)"
        ) from e


def _grace_seconds(text: str) -> float:
    """A finite, non-negative number of seconds: ``nan`` would make the restart's sleep
    raise after the manifest was moved out, ``inf`` would keep it out forever."""
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from e
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds, 0 or more")
    return value


def _labels(text: str) -> dict[str, str]:
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def _seed_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "flags of the original kucero (defaults for fields the policy leaves out)"
    )
    g.add_argument(
        "--ca-cert-path",
        default="/etc/kubernetes/pki/ca.crt",
        help="sign CSR with this certificate file",
    )
    g.add_argument(
        "--ca-key-path",
        default="/etc/kubernetes/pki/ca.key",
        help="sign CSR with this private key file",
    )
    g.add_argument("--ds-name", default="kucero", help="name of daemonset on which to place lock")
    g.add_argument(
        "--ds-namespace",
        default="kube-system",
        help="namespace containing daemonset on which to place lock",
    )
    g.add_argument(
        "--enable-kucero-controller",
        type=_go_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
    )
    g.add_argument("--leader-election-id", default="kucero-leader-election")
    g.add_argument("--lock-annotation", default="caasp.suse.com/kucero-node-lock")
    g.add_argument("--metrics-addr", default=":8080")
    g.add_argument(
        "--polling-period",
        type=_go_duration,
        default="1h",
        help="certificate rotation check period",
    )
    g.add_argument(
        "--renew-before",
        type=_go_duration,
        default="720h",
        help="rotate certificates whose residual time is below this",
    )
    g.add_argument(
        "--enable-kubelet-client-cert-rotation",
        type=_go_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
    )
    g.add_argument(
        "--enable-kubelet-server-cert-rotation",
        type=_go_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
    )


def _host_flags(p: argparse.ArgumentParser, policy_flag: bool = True) -> None:
    p.add_argument("--host-root", default="/", help="where the node's / is mounted (default /)")
    p.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME"),
        help="this node's name (default $NODE_NAME, else from the kubelet's certificate)",
    )
    if policy_flag:
        p.add_argument(
            "--policy", help="policy file (default: the built-in defaults and seed flags)"
        )
        p.add_argument(
            "--node-labels", type=_labels, default={}, help="k=v,... to resolve overrides offline"
        )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")


def _node_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--kubelet-restart-command",
        help="command that restarts the kubelet (default: systemctl restart kubelet, through nsenter into PID 1 when in a container or --host-root is not /)",
    )
    s.add_argument(
        "--manifest-grace",
        type=_grace_seconds,
        default=25.0,
        help="longest wait (seconds) for a restarted static pod to stop answering; keep it "
        "above the kubelet's 20 s file-check period on a real node",
    )
    s.add_argument(
        "--crictl-command",
        help="crictl for restart: crictl (default: crictl, through nsenter into PID 1 like the kubelet restart)",
    )
    # crash tests only: SIGKILL this process at the n-th transaction step
    s.add_argument("--failpoint", type=int, default=0, help=argparse.SUPPRESS)
    g = s.add_argument_group("node daemon")
    g.add_argument(
        "--rotation-lease-duration",
        type=_go_duration,
        default="60s",
        help="a rotation slot whose holder stopped renewing this long can be taken over",
    )
    g.add_argument(
        "--slot-retry-period",
        type=_go_duration,
        default="10s",
        help="time between two attempts to take a rotation slot (jittered)",
    )
    g.add_argument(
        "--retry-period",
        type=_go_duration,
        default="1m",
        help="time before a failed pass is retried (never later than checkInterval)",
    )


def _election_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("leader election (client-go's defaults)")
    g.add_argument(
        "--leader-election-lease-duration",
        type=_go_duration,
        default="15s",
        help="a standby takes over after the leader has not renewed for this long",
    )
    g.add_argument(
        "--leader-election-renew-deadline",
        type=_go_duration,
        default="10s",
        help="the leader steps down when it could not renew for this long",
    )
    g.add_argument(
        "--leader-election-retry-period",
        type=_go_duration,
        default="2s",
        help="time between two attempts to acquire or renew",
    )
    g.add_argument(
        "--leader-election-identity",
        help="this process's name in the Lease (default: node name or host name, plus a random suffix)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kucero", description="Keeps kubeadm control-plane certificates from expiring."
    )
    p.add_argument("--version", action="version", version=f"kucero {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "check-expiration", help="every certificate, kubeconfig and CA with its expiry"
    )
    _host_flags(s, policy_flag=False)
    s.add_argument("--now", type=_rfc3339, help="pretend it is this time (RFC 3339)")

    s = sub.add_parser("plan", help="what one pass would do, changing nothing")
    _host_flags(s)
    _seed_flags(s)
    s.add_argument("--now", type=_rfc3339, help="plan as if it were this time (RFC 3339)")

    s = sub.add_parser("node", help="the node reconciler (--once: one offline pass)")
    _host_flags(s)
    _seed_flags(s)
    s.add_argument(
        "--once", action="store_true", help="run one pass and exit: 0 converged, 1 failed"
    )
    _node_flags(s)

    s = sub.add_parser(
        "validate-policy", help="validate policy files; exit 1 on the first invalid one"
    )
    s.add_argument("files", nargs="+")

    s = sub.add_parser("run", help="node reconciler and leader-elected controller in one process")
    _host_flags(s)
    _seed_flags(s)
    _node_flags(s)
    _election_flags(s)
    s = sub.add_parser(
        "controller", help="leader-elected: writes each Node's desired state from the policy"
    )
    _host_flags(s)
    _seed_flags(s)
    _election_flags(s)
    for s in (sub.choices["run"], sub.choices["controller"], sub.choices["node"]):
        s.add_argument(
            "--policy-configmap",
            default="kube-system/kucero-policy",
            help="namespace/name of the policy ConfigMap (cluster mode)",
        )
        s.add_argument(
            "--kubeconfig",
            help="default: in-cluster, then $KUBECONFIG, then ~/.kube/config (cluster mode)",
        )
    return p


@dataclasses.dataclass(frozen=True)
class Settings:
    command: str
    args: argparse.Namespace
    host_root: str
    node_name: str | None
    policy_defaults: dict[str, Any]
    controller: Any = None  # run.controller.Settings for `kucero controller`


class SettingsError(ValueError):
    """Bad flag values, one line each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(f"kucero: {e}" for e in errors))


def settings_from(args: argparse.Namespace) -> Settings:
    defaults: dict[str, Any] = {}
    if hasattr(args, "renew_before"):
        defaults = {
            "checkInterval": args.polling_period,
            "kubeadm": {"renewBefore": args.renew_before},
            "kubelet": {
                "rotateClientCertificates": args.enable_kubelet_client_cert_rotation,
                "rotateServerCertificates": args.enable_kubelet_server_cert_rotation,
            },
            "csrSigner": {
                "enabled": args.enable_kucero_controller,
                "caCertPath": args.ca_cert_path,
                "caKeyPath": args.ca_key_path,
            },
        }
    settings = Settings(
        command=args.command,
        args=args,
        host_root=getattr(args, "host_root", "/"),
        node_name=getattr(args, "node_name", None),
        policy_defaults=defaults,
    )
    if args.command == "controller" or (args.command == "run" and args.enable_kucero_controller):
        settings = dataclasses.replace(settings, controller=_controller_settings(settings))
    return settings


def _controller_settings(settings: Settings) -> Any:
    """Every bad value at once; the cluster modules load only for cluster commands."""
    import socket
    import uuid

    from reconciler import metrics
    from reconciler.cluster import configmaps
    from reconciler.decide import policy
    from reconciler.run import controller, election

    args, errors = settings.args, []
    lease = duration.parse(args.leader_election_lease_duration) / duration.SECOND
    renew = duration.parse(args.leader_election_renew_deadline) / duration.SECOND
    retry = duration.parse(args.leader_election_retry_period) / duration.SECOND
    if not retry < renew < lease:
        errors.append(
            "--leader-election-retry-period < --leader-election-renew-deadline < "
            f"--leader-election-lease-duration is required (got {retry:g}s, {renew:g}s, {lease:g}s)"
        )
    if lease < 1:
        errors.append("--leader-election-lease-duration must be at least 1s (Lease granularity)")
    try:
        cm_namespace, cm_name = configmaps.parse_ref(args.policy_configmap, args.ds_namespace)
    except ValueError as e:
        errors.append(f"--policy-configmap: {e}")
        cm_namespace = cm_name = ""
    try:
        addr = metrics.parse_addr(args.metrics_addr)
    except ValueError as e:
        errors.append(f"--metrics-addr: {e}")
        addr = None
    try:
        policy.from_mapping(
            {"apiVersion": policy.API_VERSION, "kind": policy.KIND},
            "flags",
            settings.policy_defaults,
        )
    except policy.PolicyError as e:
        errors += e.errors
    if errors:
        raise SettingsError(errors)
    identity = args.leader_election_identity or (
        f"{settings.node_name or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    )
    return controller.Settings(
        kubeconfig=args.kubeconfig,
        election=election.Config(
            namespace=args.ds_namespace,
            name=args.leader_election_id,
            identity=identity,
            lease_duration=lease,
            renew_deadline=renew,
            retry_period=retry,
        ),
        policy_namespace=cm_namespace,
        policy_name=cm_name,
        policy_defaults=settings.policy_defaults,
        metrics_addr=addr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except SettingsError as e:
        print(e, file=sys.stderr)
        return 2
    commands = {
        "check-expiration": _check_expiration,
        "plan": _plan,
        "node": _node,
        "validate-policy": _validate_policy,
        "run": _daemon,
        "controller": _controller,
    }
    return commands[settings.command](settings)


def _now(settings: Settings) -> dt.datetime:
    return getattr(settings.args, "now", None) or dt.datetime.now(dt.UTC)


def _check_root(settings: Settings) -> str | None:
    if not os.path.isdir(settings.host_root):
        return f"kucero: host root {settings.host_root} does not exist or is not a directory"
    return None


def _check_expiration(settings: Settings) -> int:
    from reconciler.decide import report
    from reconciler.node import host as host_
    from reconciler.node import observe

    if error := _check_root(settings):
        print(report.printable(error), file=sys.stderr)
        return 1
    observed = observe.observe(host_.Host(settings.host_root), settings.node_name)
    rows = report.expiration(observed, _now(settings))
    if settings.args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(report.expiration_table(rows), end="")
    return 1 if any(r.get("error") for r in rows) else 0


def _load_spec(settings: Settings) -> nodespec.NodeSpec:
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


def _plan(settings: Settings) -> int:
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
    the_plan = plan.plan(spec, observed, _now(settings))
    if settings.args.output == "json":
        print(json.dumps({"revision": spec.revision, **the_plan.to_dict()}, indent=2))
    else:
        # the node name may come from a certificate subject: never print it raw
        node = report.printable(observed.node_name or "<unknown>")
        print(f"policy revision {spec.revision}, node {node}\n")
        print(report.plan_table(the_plan), end="")
    return 0


class UsageError(Exception):
    """A flag is missing or wrong for this host; exit 2 before anything runs."""


def kubelet_restart_command(settings: Settings, spec: nodespec.NodeSpec) -> tuple[str, ...]:
    """The command that restarts this node's kubelet.

    The default, ``systemctl restart kubelet`` (through ``nsenter`` into PID 1 from a
    container), restarts the kubelet of the machine PID 1 runs, so it is used only when
    ``--host-root`` is that machine's root: ``/`` outside a container, or the same directory
    (device and inode) as ``/proc/1/root``. Repairing a mounted disk under another root would
    otherwise restart this machine's kubelet. A policy with ``kubelet.restart: none`` never
    restarts it and needs no command. Decided before the pass, whatever it will find to do, so
    a missing flag fails the same way on every run instead of weeks later, unattended.
    """
    if spec.kubelet.restart == "none" and not settings.args.kubelet_restart_command:
        return ()
    return host_command(
        settings,
        settings.args.kubelet_restart_command,
        ("systemctl", "restart", "kubelet"),
        "the default kubelet restart (systemctl through nsenter into PID 1) would restart "
        "another machine's kubelet; give --kubelet-restart-command, or set kubelet.restart: "
        "none in the policy",
    )


def crictl_command(settings: Settings, spec: nodespec.NodeSpec) -> tuple[str, ...]:
    """The host's ``crictl``, found the same way as the kubelet restart (needed only for
    ``kubeadm.restart: crictl``)."""
    if spec.kubeadm.restart != "crictl" and not settings.args.crictl_command:
        return ("crictl",)
    return host_command(
        settings,
        settings.args.crictl_command,
        ("crictl",),
        "the default crictl (through nsenter into PID 1) would stop another machine's pods; "
        "give --crictl-command, or choose another kubeadm.restart in the policy",
    )


def host_command(
    settings: Settings, given: str | None, default: tuple[str, ...], refusal: str
) -> tuple[str, ...]:
    """``given`` (split like a shell), else ``default`` run on the machine PID 1 runs."""
    if given:
        return tuple(shlex.split(given))
    in_container = (
        os.path.exists("/.dockerenv")
        or os.path.exists("/run/.containerenv")
        or "KUBERNETES_SERVICE_HOST" in os.environ
    )
    if _same_directory(settings.host_root, "/") and not in_container:
        return default
    if _same_directory(settings.host_root, PID1_ROOT):
        return NSENTER + default
    raise UsageError(
        f"kucero: --host-root {settings.host_root} is not the root of PID 1 ({PID1_ROOT}), so "
        + refusal
    )


def _same_directory(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _node(settings: Settings) -> int:
    if not settings.args.once:
        return _daemon(settings)
    from reconciler.decide import policy, report
    from reconciler.node import execute, interrupt
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
        restart_command = kubelet_restart_command(settings, spec)
        crictl = crictl_command(settings, spec)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:  # restarts and rollbacks are logged on stderr
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
        )
    with interrupt.on_signals(interrupt.Stop()) as stop:
        exec_settings = execute.Settings(
            kubelet_restart_command=restart_command,
            manifest_grace_seconds=settings.args.manifest_grace,
            failpoint=settings.args.failpoint,
            stop=stop,
            crictl_command=crictl,
        )
        result = once.run_once(
            host_.Host(settings.host_root),
            spec,
            settings.node_name,
            lambda: dt.datetime.now(dt.UTC),
            exec_settings,
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
    if stop.requested:
        print(report.printable(f"kucero: {result.error}"), file=sys.stderr)
    return 0 if result.converged else 1


def _daemon_exec_settings(settings: Settings, stop: Any) -> Any:
    """For a daemon, whose policy is not known yet: the kubelet restart command is decided for
    the default ``kubelet.restart`` (systemctl), so a missing flag fails at start-up."""
    from reconciler.decide import policy
    from reconciler.node import execute

    defaults = policy.from_mapping(
        {"apiVersion": policy.API_VERSION, "kind": policy.KIND}, "flags", settings.policy_defaults
    )
    spec = policy.resolve(defaults, {})
    return execute.Settings(
        kubelet_restart_command=kubelet_restart_command(settings, spec),
        manifest_grace_seconds=settings.args.manifest_grace,
        failpoint=settings.args.failpoint,
        stop=stop,
        crictl_command=crictl_command(settings, spec),
    )


def _daemon(settings: Settings) -> int:
    """``kucero node`` (and ``kucero run``): the long-running node reconciler."""
    from reconciler.node import interrupt
    from reconciler.run import daemon  # the cluster layer: only daemons pay for it

    args = settings.args
    if not settings.node_name:
        print("kucero: --node-name (or $NODE_NAME) is required", file=sys.stderr)
        return 2
    stop = interrupt.Stop()
    try:
        exec_settings = _daemon_exec_settings(settings, stop)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
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
            lease_duration=duration.parse_timedelta(args.rotation_lease_duration),
            slot_retry=duration.parse_timedelta(args.slot_retry_period),
            failure_retry=duration.parse_timedelta(args.retry_period),
            execute=exec_settings,
            controller=settings.controller if settings.command == "run" else None,
            components=_leader_components(settings),
        )
    )


def _validate_policy(settings: Settings) -> int:
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


def _controller(settings: Settings) -> int:
    from reconciler.run import controller

    _log_setup()
    return controller.main(settings.controller, _leader_components(settings))


def _leader_components(settings: Settings) -> Callable[[Any], tuple[Any, ...]]:
    """What only the leader runs besides the policy loop: the kubelet serving CSR signer,
    reading the CA under ``--host-root``. Made with the process's metrics."""

    def make(metrics: Any) -> tuple[Any, ...]:
        from reconciler.run import signer

        return (signer.Signer(host_root=settings.host_root, metrics=metrics),)

    return make


def _log_setup() -> None:
    import logging

    logging.basicConfig(
        level=os.environ.get("KUCERO_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
