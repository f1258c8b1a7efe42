"""The resolved node spec: one node's policy with its matching override applied.

This is what the controller writes to ``kucero.io/desired`` and what a pass converges to.
"""

from __future__ import annotations

import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True)
class KubeadmSpec:
    enabled: bool
    renew_before: dt.timedelta
    certificate_validity: dt.timedelta
    certificates: tuple[str, ...]
    restart: str
    health_timeout: dt.timedelta
    backup_retain: int


@dataclasses.dataclass(frozen=True)
class KubeletSpec:
    fix_kubelet_conf: bool
    rotate_client_certificates: bool
    rotate_server_certificates: bool
    restart: str
    # The policy itself (spec or the matching override) sets rotateServerCertificates. A
    # schema default or a seed flag does not count: it says nothing about an approver.
    rotate_server_certificates_set: bool = False


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """How nodes take turns: rotation slots, and whether a rotating node is cordoned/drained."""

    max_concurrent_nodes: int = 1
    cordon: bool = False
    drain: bool = False  # implies cordon


@dataclasses.dataclass(frozen=True)
class CASpec:
    """The policy's ``ca`` section: the same for every node (overrides cannot change it).

    ``mode``: ``report`` (findings and metrics only) or ``renew`` (same key and subject, new
    validity; every trust anchor brought in step). A later key rotation would be a third mode,
    leaving these two as they are."""

    mode: str = "report"
    renew_before: dt.timedelta = dt.timedelta(days=365)
    certificate_validity: dt.timedelta = dt.timedelta(days=3650)


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """What one node must converge to: the policy with its matching override applied."""

    revision: str
    paused: bool
    check_interval: dt.timedelta
    kubeadm: KubeadmSpec
    kubelet: KubeletSpec
    override: int | None  # index of the override that matched, if any
    rollout: RolloutSpec = RolloutSpec()
    # kucero's CSR signer approves this node's serving CSRs (cluster mode sets it in the
    # desired state); offline it is False.
    serving_csr_approver: bool = False
    ca: CASpec = CASpec()
