"""The host commands a pass may run (the kubelet restart, crictl), and whether the defaults are
safe from this ``--host-root``.

The defaults (``systemctl restart kubelet``, ``crictl``, through ``nsenter`` into PID 1 from a
container) act on the machine PID 1 runs, so they are used only when ``--host-root`` is that
machine's root: ``/`` outside a container, or the same directory (device and inode) as
``/proc/1/root``. Repairing a mounted disk under another root would otherwise restart this
machine's kubelet or stop its pods. A command given on the command line is the operator's
choice and always used.

Whether a command is needed at all depends on the policy in force (``kubelet.restart: none``
never restarts the kubelet; only ``kubeadm.restart: crictl`` runs crictl), so it is decided
for each desired state: ``kucero node --once`` before its pass (exit 2 on a refusal), the node
daemon before each pass (a refused pass changes nothing and says why in its status and an
Event, and the next desired state is judged afresh). Either way it is decided whatever the
pass will find to do, so a missing flag fails the same way on every run instead of weeks
later, unattended.
"""

from __future__ import annotations

import dataclasses
import os
import shlex

from reconciler.model import nodespec

# PID 1's view of /: the default kubelet restart (nsenter --target 1) acts on its machine.
PID1_ROOT = "/proc/1/root"
NSENTER = ("nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--")
KUBELET_RESTART = ("systemctl", "restart", "kubelet")
CRICTL = ("crictl",)


class Refused(Exception):
    """A default command would act on another machine; the message says what to give."""


@dataclasses.dataclass(frozen=True)
class Given:
    """The commands given on the command line (``None``: use the default)."""

    host_root: str
    kubelet_restart: str | None = None
    crictl: str | None = None


@dataclasses.dataclass(frozen=True)
class Commands:
    kubelet_restart: tuple[str, ...]  # empty: the policy never restarts the kubelet
    crictl: tuple[str, ...]


def for_spec(given: Given, spec: nodespec.NodeSpec) -> Commands:
    """The commands this desired state may need; ``Refused`` when a needed default is unsafe."""
    return Commands(kubelet_restart(given, spec), crictl(given, spec))


def kubelet_restart(given: Given, spec: nodespec.NodeSpec) -> tuple[str, ...]:
    if spec.kubelet.restart == "none" and not given.kubelet_restart:
        return ()
    return _command(
        given.host_root,
        given.kubelet_restart,
        KUBELET_RESTART,
        "give --kubelet-restart-command, or set kubelet.restart: none in the policy: the default "
        "kubelet restart (systemctl through nsenter into PID 1) would restart another machine's "
        "kubelet",
    )


def crictl(given: Given, spec: nodespec.NodeSpec) -> tuple[str, ...]:
    """The host's ``crictl`` (needed only for ``kubeadm.restart: crictl``)."""
    if spec.kubeadm.restart != "crictl" and not given.crictl:
        return CRICTL
    return _command(
        given.host_root,
        given.crictl,
        CRICTL,
        "give --crictl-command, or choose another kubeadm.restart in the policy: the default "
        "crictl (through nsenter into PID 1) would stop another machine's pods",
    )


def _command(
    host_root: str, given: str | None, default: tuple[str, ...], refusal: str
) -> tuple[str, ...]:
    """``given`` (split like a shell), else ``default`` run on the machine PID 1 runs."""
    if given:
        return tuple(shlex.split(given))
    in_container = (
        os.path.exists("/.dockerenv")
        or os.path.exists("/run/.containerenv")
        or "KUBERNETES_SERVICE_HOST" in os.environ
    )
    if _same_directory(host_root, "/") and not in_container:
        return default
    if _same_directory(host_root, PID1_ROOT):
        return NSENTER + default
    raise Refused(f"{refusal}, as --host-root {host_root} is not PID 1's root ({PID1_ROOT})")


def _same_directory(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
