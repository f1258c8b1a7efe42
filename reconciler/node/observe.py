"""The gatherer: read a node's kubeadm and kubelet files into one ``hoststate.Observed`` value.

Nothing here decides anything. A missing file is simply absent; a file that cannot be read or
parsed is kept with its ``error`` (path and reason) so the plan can report it and leave it
alone. Works for control-plane nodes with stacked etcd, with external etcd (no ``etcd/``
certificates), and for workers (only the kubelet's files).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cryptography import x509

from reconciler.decide import components, kubeconfig, kubelet, ownfiles, pki
from reconciler.decide import trustanchors as anchor_table
from reconciler.model import actions, hoststate, kubeadm, paths, staticpod
from reconciler.node import host as host_
from reconciler.node import trustanchors


@dataclasses.dataclass
class Written:
    """What a pass wrote, built and verified before it was written, by exact content.

    ``refresh`` reads every file the pass wrote back from disk; when a file holds these very
    bytes, what was built from them is reused instead of parsed and verified a second time
    (the same bytes parse to the same values). Bytes that differ are parsed and checked in
    full, as on a first observation."""

    # (certificate PEM, key PEM, CA name) -> the certificate: the key matches it, that CA
    # signed it
    pairs: dict[tuple[bytes, bytes, str], x509.Certificate] = dataclasses.field(
        default_factory=dict
    )
    # kubeconfig bytes -> the document they were dumped from
    documents: dict[bytes, dict[str, Any]] = dataclasses.field(default_factory=dict)


def observe(host: host_.Host, node_name: str | None = None) -> hoststate.Observed:
    """Read everything a pass needs from ``host``; never raises for a bad file."""
    cas = {ca.name: _read_ca(host, ca) for ca in kubeadm.CAS}
    leaves: dict[str, hoststate.LeafFile] = {}
    for leaf in kubeadm.LEAVES:
        found = _read_leaf(host, leaf, cas[leaf.ca])
        if found is not None:
            leaves[leaf.name] = found
    kubelet_state = _read_kubelet(host, cas["ca"])
    if node_name is None and kubelet_state.conf is not None:
        node_name = kubelet.node_name_from(kubelet_state.conf.cert)
    if node_name is None:
        node_name = kubelet.node_name_from(kubelet_state.client_current)
    return hoststate.Observed(
        node_name=node_name,
        cas=cas,
        leaves=leaves,
        kubelet=kubelet_state,
        anchors=trustanchors.observe(host, leaves, kubelet_state, cas),
        **_read_afresh(host, leaves, kubelet_state),
    )


def _read_afresh(
    host: host_.Host,
    leaves: dict[str, hoststate.LeafFile],
    kubelet_state: hoststate.Kubelet,
    unchanged: Mapping[str, hoststate.FileIdentity] | None = None,
) -> dict[str, Any]:
    """The fields every observation reads again, ``refresh`` included: the static pod
    manifests in the kubelet's staticPodPath (which files each loads, where it listens),
    kucero's state file and journal, and every watched file's identity (a replaced file is a
    new inode; ``unchanged``: identities known not to have changed since, reused). Stats and
    small documents; ``errors`` is theirs alone."""
    errors: list[str] = []
    pod_dir = components.static_pod_path(kubelet_state.config)
    manifests = _manifests(host, pod_dir, errors)
    state = read_state(host, errors)
    return {
        "manifests": manifests,
        "pending_restarts": frozenset(str(c) for c in state.get("pendingRestarts", [])),
        "journal_pending": _safe_exists(host, paths.JOURNAL, errors),
        "static_pods": _read_static_pods(host, pod_dir, manifests, errors),
        "restart_required": frozenset(str(c) for c in state.get("restartRequired", {})),
        "errors": tuple(errors),
        "identities": _identities(host, _watched(leaves, kubelet_state), unchanged or {}),
    }


def _identities(
    host: host_.Host, host_paths: list[str], unchanged: Mapping[str, hoststate.FileIdentity]
) -> dict[str, hoststate.FileIdentity]:
    """Which file each path resolves to, so the plan can see two paths that are one file.
    A path that cannot be resolved is left out (reading it has already reported why)."""
    out = {}
    for path in dict.fromkeys(host_paths):
        if path in unchanged:
            out[path] = unchanged[path]
            continue
        try:
            found = host.identity(path)
        except host_.HostError:
            continue
        if found is not None:
            out[path] = found
    return out


def refresh(
    host: host_.Host,
    before: hoststate.Observed,
    done: actions.Plan,
    written: Written | None = None,
) -> hoststate.Observed:
    """``before`` with what the actions of ``done`` may have changed read again from ``host``.

    Confirms a pass: every certificate it renewed is parsed again from disk, its key checked
    against it and its signature against the CA, as the first observation did; the kubelet's
    files when it repaired them; a CA certificate and the trust anchors a CA renewal rewrote;
    what ``_read_afresh`` reads, always.
    The rest (the CAs no renewal wrote, and the leaves it did not touch) is reused,
    so a pass parses each file it does not write once. A change someone else makes meanwhile
    to a file the pass did not touch is seen by the next pass, as it would be a moment later.
    ``written``: what the pass built and verified before writing, reused for a file read back
    byte for byte as it was written.
    """
    leaves = dict(before.leaves)
    renewed = {a.target for a in done.of(actions.ActionKind.RENEW)}
    installed = {a.target for a in done.of(actions.ActionKind.INSTALL_CA)}
    cas = dict(before.cas)
    for ca in kubeadm.CAS:
        if ca.cert in installed:  # a CA renewal rewrote the CA's own certificate
            cas[ca.name] = _read_ca(host, ca)
    for leaf in kubeadm.LEAVES:
        if leaf.path in installed and leaf.name not in renewed:
            renewed.add(leaf.name)  # its kubeconfig's CA data changed: read it again
    for leaf in kubeadm.LEAVES:
        if leaf.name in renewed:
            found = _read_leaf(host, leaf, cas[leaf.ca], written)
            if found is None:
                leaves.pop(leaf.name, None)
            else:
                leaves[leaf.name] = found
    kubelet_state = before.kubelet
    touched = {p for name in renewed for p in _files(before.leaves, leaves, name)}
    touched.add(paths.STATE)
    touched |= installed
    if (
        done.of(actions.ActionKind.FIX_KUBELET_CONF)
        or done.of(actions.ActionKind.SET_KUBELET_CONFIG)
        or installed & _kubelet_files(before.kubelet)
    ):
        kubelet_state = _read_kubelet(host, cas["ca"])
        touched.update(_kubelet_files(before.kubelet) | _kubelet_files(kubelet_state))
    anchors = before.anchors
    if installed or renewed or kubelet_state is not before.kubelet:
        anchors = trustanchors.observe(host, leaves, kubelet_state, cas)
    # a pass replaces only what it writes: every other watched path is the file it was
    unchanged = {p: i for p, i in before.identities.items() if p not in touched}
    return dataclasses.replace(
        before,
        cas=cas,
        leaves=leaves,
        kubelet=kubelet_state,
        anchors=anchors,
        **_read_afresh(host, leaves, kubelet_state, unchanged),
    )


def _files(
    before: dict[str, hoststate.LeafFile], after: dict[str, hoststate.LeafFile], name: str
) -> set[str]:
    return {p for leaves in (before, after) if name in leaves for p in leaves[name].files}


def _kubelet_files(state: hoststate.Kubelet) -> set[str]:
    files = {kubeadm.KUBELET_CONF, kubeadm.KUBELET_CONFIG, kubeadm.KUBELET_CLIENT_CURRENT}
    return files | set(state.conf.files if state.conf is not None else ())


def _watched(leaves: dict[str, hoststate.LeafFile], kubelet_state: hoststate.Kubelet) -> list[str]:
    watched = [p for ca in kubeadm.CAS for p in (ca.cert, ca.key)]
    watched += [p for leaf in leaves.values() for p in leaf.files]
    if kubelet_state.conf is not None:
        watched += kubelet_state.conf.files
    watched += [kubeadm.KUBELET_CONFIG, kubeadm.KUBELET_CLIENT_CURRENT, paths.STATE]
    watched += [place.path for place in anchor_table.places(kubelet_state.config)]
    return watched


def _manifests(host: host_.Host, pod_dir: str, errors: list[str]) -> frozenset[str]:
    return frozenset(
        c for c in kubeadm.COMPONENTS if _safe_exists(host, f"{pod_dir}/{c}.yaml", errors)
    )


def _read_static_pods(
    host: host_.Host, pod_dir: str, present: frozenset[str], errors: list[str]
) -> dict[str, staticpod.StaticPod]:
    """Each present manifest read as its component; an unreadable one is reported instead."""
    out = {}
    for name in present:
        path = f"{pod_dir}/{name}.yaml"
        try:
            data = host.read(path)
            if data is not None:
                out[name] = components.parse(name, path, data)
        except (host_.HostError, components.ComponentError) as e:
            errors.append(str(e))
    return out


def read_state(host: host_.Host, errors: list[str] | None = None) -> dict[str, Any]:
    """kucero's own per-node state file (pending restarts), checked against its schema; empty
    when absent or invalid, with the reason appended to ``errors`` when given."""
    try:
        data = host.read(paths.STATE)
        return ownfiles.parse_state(data) if data else {}
    except (host_.HostError, ownfiles.OwnFileError) as e:
        if errors is not None:
            errors.append(f"{e}; pending restarts forgotten")
        return {}


def _safe_exists(host: host_.Host, path: str, errors: list[str]) -> bool:
    try:
        return host.exists(path)
    except OSError as e:
        errors.append(f"{path}: {e}")
        return False


def read_cas(host: host_.Host) -> dict[str, hoststate.CAFile]:
    """The three CAs alone (the leader's CA publisher needs nothing else)."""
    return {ca.name: _read_ca(host, ca) for ca in kubeadm.CAS}


def _read_ca(host: host_.Host, ca: kubeadm.CA) -> hoststate.CAFile:
    try:
        data = host.read(ca.cert)
    except host_.HostError as e:
        return hoststate.CAFile(ca.name, ca.cert, None, False, str(e))
    try:
        key_present = host.exists(ca.key)
    except OSError:
        # A key we may not even look at (a link into a directory this user cannot search)
        # is there: reading it below says why it cannot be used. Externally managed means
        # absent, and must not be concluded from a permission error.
        key_present = True
    if data is None:
        return hoststate.CAFile(ca.name, ca.cert, None, key_present)
    try:
        cert = pki.load_cert(data)
    except pki.PKIError as e:
        return hoststate.CAFile(ca.name, ca.cert, None, key_present, f"{ca.cert}: {e}")
    return hoststate.CAFile(
        ca.name, ca.cert, cert, key_present, key_error=_ca_key_error(host, ca, cert)
    )


def _ca_key_error(host: host_.Host, ca: kubeadm.CA, cert: x509.Certificate) -> str | None:
    """Why the CA key cannot sign for this CA certificate, or None. The key is loaded only to
    compare its public half; it is dropped at once and never printed."""
    try:
        data = host.read(ca.key)
        if data is None:
            return None
        if not pki.key_matches(cert, pki.load_key(data)):
            return f"{ca.key}: does not match {ca.cert}"
    except (host_.HostError, pki.PKIError) as e:
        return f"{ca.key}: {e}" if not str(e).startswith("/") else str(e)
    return None


def _read_leaf(
    host: host_.Host, leaf: kubeadm.Leaf, ca: hoststate.CAFile, written: Written | None = None
) -> hoststate.LeafFile | None:
    base = hoststate.LeafFile(
        name=leaf.name,
        kind=leaf.kind,
        path=leaf.path,
        ca=leaf.ca,
        # kubeadm's definition: the CA key is absent (with no CA at all, e.g. the client
        # certificate for an external etcd, kubeadm does not manage it either)
        externally_managed=not ca.key_present,
        files=(leaf.path,) if leaf.key is None else (leaf.path, leaf.key),
    )
    try:
        if leaf.kind == "kubeconfig":
            return _read_kubeconfig(host, base, ca, written)
        data = host.read(leaf.path)
        if data is None:
            return None
        assert leaf.key is not None
        key_pem = host.read(leaf.key)
        return _with_pair(base, data, leaf.path, key_pem, leaf.key, ca, written)
    except host_.HostError as e:
        return dataclasses.replace(base, error=str(e))
    except Exception as e:  # the gatherer never raises for a bad file: report and move on
        return dataclasses.replace(base, error=f"{leaf.path}: unexpected {type(e).__name__}: {e}")


def _read_kubeconfig(
    host: host_.Host, base: hoststate.LeafFile, ca: hoststate.CAFile, written: Written | None
) -> hoststate.LeafFile | None:
    data = host.read(base.path)
    if data is None:
        return None
    try:
        known = written.documents.get(data) if written is not None else None
        doc = known if known is not None else kubeconfig.parse(data)
        creds = kubeconfig.credentials(doc, base.path)
    except kubeconfig.KubeconfigError as e:
        return dataclasses.replace(base, error=f"{base.path}: {e}")
    referenced = tuple(p for p in (creds.cert_file, creds.key_file) if p is not None)
    base = dataclasses.replace(
        base, credentials=creds, document=doc, files=(base.path, *referenced)
    )
    if creds.embedded:
        cert_data, cert_where = creds.cert_data, f"{base.path} (client-certificate-data)"
    else:
        assert creds.cert_file is not None
        cert_data, cert_where = host.read(creds.cert_file), creds.cert_file
        if cert_data is None:
            return dataclasses.replace(
                base, error=f"{creds.cert_file}: missing (referenced by {base.path})"
            )
    key_data: bytes | None
    if creds.key_data is not None:
        key_data, key_where = creds.key_data, f"{base.path} (client-key-data)"
    else:
        assert creds.key_file is not None
        key_data, key_where = host.read(creds.key_file), creds.key_file
    assert cert_data is not None
    return _with_pair(base, cert_data, cert_where, key_data, key_where, ca, written)


def _with_pair(
    base: hoststate.LeafFile,
    cert_data: bytes,
    cert_where: str,
    key_data: bytes | None,
    key_where: str,
    ca: hoststate.CAFile,
    written: Written | None = None,
) -> hoststate.LeafFile:
    verified = (
        written.pairs.get((cert_data, key_data, base.ca))
        if written is not None and key_data is not None
        else None
    )
    if verified is not None:
        return dataclasses.replace(
            base,
            cert=verified,
            key_pem=key_data,
            key_matches=True,
            issued_by_ca=True,
        )
    try:
        cert = pki.load_cert(cert_data)
    except pki.PKIError as e:
        return dataclasses.replace(base, error=f"{cert_where}: {e}")
    if key_data is None:
        return dataclasses.replace(base, cert=cert, error=f"{key_where}: key missing")
    try:
        key = pki.load_key(key_data)
    except pki.PKIError as e:
        return dataclasses.replace(base, cert=cert, error=f"{key_where}: {e}")
    return dataclasses.replace(
        base,
        cert=cert,
        key_pem=key_data,
        key_matches=pki.key_matches(cert, key),
        issued_by_ca=pki.issued_by(cert, ca.cert) if ca.cert is not None else None,
    )


def _read_kubelet(host: host_.Host, ca: hoststate.CAFile) -> hoststate.Kubelet:
    leaf = kubeadm.Leaf("kubelet.conf", "kubeconfig", "ca", kubeadm.KUBELET_CONF, None, ())
    try:
        conf = _read_leaf(host, leaf, ca)
    except host_.HostError as e:
        conf = hoststate.LeafFile(
            "kubelet.conf", "kubeconfig", kubeadm.KUBELET_CONF, "ca", error=str(e)
        )
    current: x509.Certificate | None = None
    current_matches = False
    current_error: str | None = None
    creds = conf.credentials if conf is not None else None
    if (
        conf is not None
        and conf.error is None
        and conf.key_matches is not None
        and creds is not None
        and creds.cert_file == creds.key_file == kubeadm.KUBELET_CLIENT_CURRENT
    ):
        # kubelet.conf points at the file (as kucero repairs it): parsed once, just above
        current, current_matches = conf.cert, conf.key_matches
    else:
        try:
            data = host.read(kubeadm.KUBELET_CLIENT_CURRENT)
            if data is not None:
                current = pki.load_cert(data)
                current_matches = pki.key_matches(current, pki.load_key(data))
        except (host_.HostError, pki.PKIError) as e:
            current_error = f"{kubeadm.KUBELET_CLIENT_CURRENT}: {e}"
    config_text: str | None = None
    config: dict[str, Any] | None = None
    config_error: str | None = None
    try:
        raw = host.read(kubeadm.KUBELET_CONFIG)
        if raw is not None:
            config_text = raw.decode("utf-8")
            config = kubelet.parse_config(config_text)
    except (host_.HostError, UnicodeDecodeError, ValueError) as e:
        config_error = f"{kubeadm.KUBELET_CONFIG}: {e}"
        config = None
    issued = current is not None and ca.cert is not None and pki.issued_by(current, ca.cert)
    return hoststate.Kubelet(
        conf, current, current_matches, issued, current_error, config_text, config, config_error
    )
