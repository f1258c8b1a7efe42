"""Which files an action writes, and whether anyone else uses them: pure, from ``Observed``.

kubeadm writes each leaf's own files and nothing else; a node can still be arranged so that two
names are one file: a key shared by two certificates through a link (renewing one breaks the
other), a kubeconfig leaf whose file is a CA's certificate or key (renewing it overwrites the
CA), two kubeconfigs on one file (every pass undoes the other). So every planned write target
is compared, by resolved path and by (device, inode) as observe saw them, with every file every
other leaf, CA and kubelet setting is made of; a match refuses the action with a finding instead
of guessing which owner is right. Files that do not exist yet cannot be shared and pass.

The transaction repeats the comparison against the disk just before writing (a last guard for
what changed since the observation).
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.model import actions, hoststate, kubeadm, paths

_CA = "CA"


def written_by(action: actions.Action) -> tuple[str, ...]:
    """The host files ``action`` writes (kucero's state file aside, which is its own)."""
    if action.kind == actions.ActionKind.RENEW:
        leaf = kubeadm.LEAF_BY_NAME[action.target]
        return (leaf.path,) if leaf.key is None else (leaf.path, leaf.key)
    if action.kind == actions.ActionKind.FIX_KUBELET_CONF:
        return (kubeadm.KUBELET_CONF,)
    if action.kind == actions.ActionKind.SET_KUBELET_CONFIG:
        return (kubeadm.KUBELET_CONFIG,)
    if action.kind == actions.ActionKind.INSTALL_CA:
        return (action.target,)
    return ()


def refuse_shared(
    planned: list[actions.Action],
    observed: hoststate.Observed,
    findings: list[actions.Finding],
) -> list[actions.Action]:
    """``planned`` without the actions that would write a shared or a CA's file; a finding
    for each one refused."""
    users = _users(observed)
    out = []
    for action in planned:
        problem = _problem(action, observed, users)
        if problem is None:
            out.append(action)
            continue
        reason, detail = problem
        findings.append(actions.Finding(action.target, reason, actions.Severity.ERROR, detail))
    return out


def _owner(action: actions.Action) -> str:
    if action.kind == actions.ActionKind.FIX_KUBELET_CONF:
        return "kubelet.conf"
    if action.kind == actions.ActionKind.SET_KUBELET_CONFIG:
        return "kubelet-config"
    return action.target


def _keys(found: hoststate.FileIdentity) -> Iterator[object]:
    yield ("path", found.resolved)
    yield ("inode", found.device, found.inode)


def _users(observed: hoststate.Observed) -> dict[object, list[tuple[str, str]]]:
    """identity key -> [(owner, host path)] for every file the node's certificates use."""
    owned: list[tuple[str, str]] = [(_CA, p) for ca in kubeadm.CAS for p in (ca.cert, ca.key)]
    owned += [(name, p) for name, leaf in observed.leaves.items() for p in leaf.files]
    if observed.kubelet.conf is not None:
        owned += [("kubelet.conf", p) for p in observed.kubelet.conf.files]
    owned += [
        ("kubelet-config", kubeadm.KUBELET_CONFIG),
        ("kubelet client certificate", kubeadm.KUBELET_CLIENT_CURRENT),
        ("kucero state", paths.STATE),
    ]
    users: dict[object, list[tuple[str, str]]] = {}
    for owner, path in owned:
        found = observed.identities.get(path)
        if found is not None:
            for key in _keys(found):
                users.setdefault(key, []).append((owner, path))
    return users


def _problem(
    action: actions.Action,
    observed: hoststate.Observed,
    users: dict[object, list[tuple[str, str]]],
) -> tuple[actions.Reason, str] | None:
    owner = _owner(action)
    mine: dict[object, str] = {}
    for path in written_by(action):
        found = observed.identities.get(path)
        if found is None:
            continue
        for key in _keys(found):
            if key in mine and mine[key] != path:
                return actions.Reason.SHARED_FILE, (
                    f"{path} and {mine[key]} are one file ({found.resolved}); not written"
                )
            mine[key] = path
            for other, other_path in users.get(key, []):
                if action.kind == actions.ActionKind.INSTALL_CA and other_path == path:
                    # a trust anchor is the CA's certificate file or a kubeconfig, written
                    # through its own path: never through another name (a link to a key)
                    continue
                if other == _CA:
                    return actions.Reason.CA_FILE, (
                        f"{path} is the CA file {other_path} ({found.resolved}); never written"
                    )
                if other != owner:
                    return actions.Reason.SHARED_FILE, (
                        f"{path} is also {other}'s {other_path} ({found.resolved}); writing it "
                        "would break the other, not written"
                    )
    return None
