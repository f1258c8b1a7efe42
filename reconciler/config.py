"""What the parsed flags mean: one frozen ``Settings`` for the command, the policy defaults
the seed flags give, the controller's settings (every bad value reported at once), and the host
commands (kubelet restart, crictl) that are safe to run from this ``--host-root``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from typing import TYPE_CHECKING, Any

from reconciler.decide import duration

if TYPE_CHECKING:
    from reconciler.model import nodespec

# PID 1's view of /: the default kubelet restart (nsenter --target 1) acts on its machine.
PID1_ROOT = "/proc/1/root"
NSENTER = ("nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--")


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
    if defaults and args.command != "controller":
        _check_seed_flags(defaults)
    if args.command == "controller" or (args.command == "run" and args.enable_kucero_controller):
        settings = dataclasses.replace(settings, controller=_controller_settings(settings))
    return settings


def _check_seed_flags(defaults: dict[str, Any]) -> None:
    """The seed flags meet the policy schema's floors before anything runs, as the
    controller's settings do (``_controller_settings``)."""
    from reconciler.decide import policy

    try:
        policy.from_mapping(
            {"apiVersion": policy.API_VERSION, "kind": policy.KIND}, "flags", defaults
        )
    except policy.PolicyError as e:
        raise SettingsError(e.errors) from e


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
        metrics_secure=args.metrics_secure,
        metrics_cert_file=args.metrics_cert_file,
        metrics_key_file=args.metrics_key_file,
    )


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
