"""What the parsed flags mean: one frozen ``Settings`` for the command, the policy defaults
the seed flags give, and the controller's settings (every bad value reported at once). The
host commands a pass may run are decided per desired state (``node.hostcommands``)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from reconciler.decide import duration


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
