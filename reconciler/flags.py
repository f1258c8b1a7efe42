"""The ``kucero`` command line's flags: one ``argparse`` parser, every value checked as it is
parsed, so a bad one is reported naming its flag before anything runs.

Flag names and defaults of the original kucero DaemonSet are kept (``--renew-before=720h``,
``--enable-kucero-controller=false`` as Go's pflag spells booleans), so its manifests keep
working; they are defaults for the policy fields a policy leaves out (``settings``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shlex

from reconciler import __version__, logs
from reconciler.decide import duration


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


# A retry period is how often a waiting node asks the API server again (a slot) or re-runs a
# failed pass: below a second that is a busy loop against the API server and the host.
MIN_RETRY_PERIOD = "1s"


def _retry_period(text: str) -> str:
    _go_duration(text)
    if duration.parse(text) < duration.parse(MIN_RETRY_PERIOD):
        raise argparse.ArgumentTypeError(f"{text!r} is below the minimum of {MIN_RETRY_PERIOD}")
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


def _command(text: str) -> str:
    """A command line split like a shell's, checked here so a stray quote is a usage error."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from e
    if not words:
        raise argparse.ArgumentTypeError("an empty command")
    return text


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
        "--metrics-secure",
        type=_go_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="HTTPS, and /metrics only for a token the API server allows to get /metrics "
        "(TokenReview, SubjectAccessReview); false: plain HTTP to anyone, for 127.0.0.1",
    )
    g.add_argument(
        "--metrics-cert-file", help="serving certificate (default: self-signed at start-up)"
    )
    g.add_argument("--metrics-key-file", help="its key (with --metrics-cert-file)")
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
        type=_command,
        help="command that restarts the kubelet (default: systemctl restart kubelet, through "
        "nsenter into PID 1 from a container; only when --host-root is PID 1's root)",
    )
    s.add_argument(
        "--manifest-grace",
        type=_grace_seconds,
        default=25.0,
        help="seconds the kubelet may take to notice a static pod's manifest left (keep it "
        "above its 20 s file-check period on a real node); the wait for the component to stop "
        "answering adds the pod's terminationGracePeriodSeconds (default 30)",
    )
    s.add_argument(
        "--crictl-command",
        type=_command,
        help="crictl for kubeadm.restart: crictl (default: crictl, found like the kubelet restart)",
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
        type=_retry_period,
        default="10s",
        help="time between two attempts to take a rotation slot (jittered)",
    )
    g.add_argument(
        "--retry-period",
        type=_retry_period,
        default="1m",
        help="time before a failed pass is retried (never later than checkInterval)",
    )


def _ca_bundle_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ca-bundle",
        help="with ca.mode renew, offline: a PEM file of renewed CA certificates to install "
        "(each accepted only with this node's CA subject and key), instead of renewing here",
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


def _log_level(text: str) -> str:
    lowered = text.lower()
    lowered = {"warn": "warning"}.get(lowered, lowered)
    if lowered not in logs.LEVELS:
        raise argparse.ArgumentTypeError(f"invalid level {text!r} (use {', '.join(logs.LEVELS)})")
    return lowered


def _log_flags() -> argparse.ArgumentParser:
    """Every command logs the same way (``reconciler.logs``)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("logging (on stderr)")
    g.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default="text",
        help="text (default): one readable line per record; json: one object per line",
    )
    default = os.environ.get("KUCERO_LOG_LEVEL") or "info"
    g.add_argument(
        "--log-level",
        type=_log_level,
        default=default,
        metavar="{debug,info,warning,error}",
        help="least severe level logged (default $KUCERO_LOG_LEVEL, else info)",
    )
    return p


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kucero", description="Keeps kubeadm control-plane certificates from expiring."
    )
    p.add_argument("--version", action="version", version=f"kucero {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    log_flags = _log_flags()

    def command(name: str, what: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=what, parents=[log_flags])

    s = command("check-expiration", "every certificate, kubeconfig and CA with its expiry")
    _host_flags(s, policy_flag=False)
    s.add_argument("--now", type=_rfc3339, help="pretend it is this time (RFC 3339)")

    s = command("plan", "what one pass would do, changing nothing")
    _host_flags(s)
    _seed_flags(s)
    s.add_argument("--now", type=_rfc3339, help="plan as if it were this time (RFC 3339)")
    _ca_bundle_flag(s)

    s = command("node", "the node reconciler (--once: one offline pass)")
    _host_flags(s)
    _seed_flags(s)
    s.add_argument(
        "--once", action="store_true", help="run one pass and exit: 0 converged, 1 failed"
    )
    _node_flags(s)
    _ca_bundle_flag(s)

    s = command("validate-policy", "validate policy files; exit 1 if any is invalid")
    s.add_argument("files", nargs="+")

    s = command("run", "node reconciler and leader-elected controller in one process")
    _host_flags(s)
    _seed_flags(s)
    _node_flags(s)
    _election_flags(s)
    s = command("controller", "leader-elected: writes each Node's desired state from the policy")
    _host_flags(s)
    _seed_flags(s)
    _election_flags(s)
    s = command("status", "one line per Node: phase, revision, next renewal, last rotation")
    s.add_argument("-o", "--output", choices=("table", "json"), default="table")
    s.add_argument("-l", "--selector", help="only Nodes with these labels (kubectl's -l)")
    s.add_argument("--now", type=_rfc3339, help="count residual times from this time (RFC 3339)")
    for s in (sub.choices["run"], sub.choices["controller"], sub.choices["node"]):
        s.add_argument(
            "--policy-configmap",
            default="kube-system/kucero-policy",
            help="namespace/name of the policy ConfigMap (cluster mode)",
        )
    for name in ("run", "controller", "node", "status"):
        sub.choices[name].add_argument(
            "--kubeconfig",
            help="default: in-cluster, then $KUBECONFIG, then ~/.kube/config (cluster mode)",
        )
    return p
