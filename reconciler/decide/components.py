"""Which static pods load which files, and where they listen: read from their manifests.

A control-plane component only uses a renewed certificate once it restarts, so the restart
list must be exactly the components that load a renewed file. That is read from the manifests
the kubelet runs, not from a table: every absolute path a container's flags name is mapped to
a host path through the pod's ``hostPath`` volumes (a flag naming a path no volume provides is
a file inside the image, not ours). ``etcd-healthcheck-client``, ``admin.conf`` and
``super-admin.conf`` are named by no manifest's flags, so they restart nothing.

Addresses and ports come from the flags too, with kubeadm's defaults when absent (6443,
10257, 10259, etcd 2379/2380). A component listening on all addresses or on loopback is probed
on 127.0.0.1, the node's own loopback (kucero runs in the host's network namespace); one bound
to a single address is probed there.

Pure: takes manifest text, returns values; no disk, clock or network.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.decide import yamldoc
from reconciler.model import kubeadm, staticpod

# The kubelet's default staticPodPath as kubeadm configures it.
DEFAULT_STATIC_POD_PATH = kubeadm.MANIFESTS
# Restart order: the API server first (the others talk to it), etcd last and alone so quorum is
# touched once and only after everything else came back.
ORDER = kubeadm.COMPONENTS
LOOPBACK = "127.0.0.1"
# A pod's terminationGracePeriodSeconds when its manifest leaves it out (Kubernetes' default;
# kubeadm's manifests leave it out).
DEFAULT_GRACE_SECONDS = 30
_ANY = {"", "0.0.0.0", "::", "localhost", "127.0.0.1", "::1"}
# kubeadm's defaults when a manifest leaves a flag out: (flag, default port, health path)
_SECURE_PORTS = {
    "kube-apiserver": (6443, "/readyz"),
    "kube-controller-manager": (10257, "/healthz"),
    "kube-scheduler": (10259, "/healthz"),
}
_ETCD_CLIENT_URL = "https://127.0.0.1:2379"
_ETCD_PEER_URL = "https://127.0.0.1:2380"


class ComponentError(ValueError):
    """A manifest that cannot be read as a kubeadm static pod; the message says why."""


def static_pod_path(kubelet_config: Mapping[str, Any] | None) -> str:
    """The kubelet's ``staticPodPath`` (kubeadm's default when unset or no config)."""
    value = (kubelet_config or {}).get("staticPodPath")
    if isinstance(value, str) and value.startswith("/"):
        return value.rstrip("/") or "/"
    return DEFAULT_STATIC_POD_PATH


def parse(name: str, manifest_path: str, text: bytes | str) -> staticpod.StaticPod:
    """Read one component's manifest; raise ``ComponentError`` naming what is wrong."""
    try:
        doc = yamldoc.load(text)  # size, depth and alias limits: a manifest is host input
    except yamldoc.YAMLDocError as e:
        raise ComponentError(f"{manifest_path}: not YAML: {e}") from e
    try:
        spec = doc["spec"]
        container = next(
            (c for c in spec["containers"] if c.get("name") == name), spec["containers"][0]
        )
        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        mounts = {m["name"]: str(m["mountPath"]) for m in container.get("volumeMounts") or []}
        volumes = {
            v["name"]: str(v["hostPath"]["path"])
            for v in spec.get("volumes") or []
            if isinstance(v.get("hostPath"), dict)
        }
        label = str((doc.get("metadata", {}).get("labels") or {}).get("component", name))
        grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
    except (KeyError, TypeError, IndexError, AttributeError, StopIteration) as e:
        raise ComponentError(f"{manifest_path}: not a static pod manifest ({e!r})") from e
    # container path -> host path, longest mount first
    table = sorted(
        ((mounts[n], volumes[n]) for n in mounts if n in volumes),
        key=lambda pair: -len(pair[0]),
    )
    flags = _flags(argv)

    def host_path(value: str | None) -> str | None:
        if not value or not value.startswith("/"):
            return None
        for inside, outside in table:
            if value == inside or value.startswith(inside.rstrip("/") + "/"):
                return posixpath.normpath(outside + value[len(inside) :])
        return None

    if isinstance(grace, bool) or not isinstance(grace, int) or grace < 0:
        raise ComponentError(
            f"{manifest_path}: spec.terminationGracePeriodSeconds is {grace!r}, not a whole "
            "number of seconds >= 0"
        )
    files = frozenset(p for p in map(host_path, flags.values()) if p)
    try:
        endpoints, health, client = _endpoints(name, flags, host_path)
    except ValueError as e:
        raise ComponentError(f"{manifest_path}: {e}") from e
    return staticpod.StaticPod(
        name, manifest_path, files, endpoints, health, client, label, float(grace), tuple(argv)
    )


def leaf_files(name: str) -> frozenset[str]:
    """Host paths a renewal of the kubeadm leaf ``name`` rewrites (the key beside a cert)."""
    leaf = kubeadm.LEAF_BY_NAME[name]
    return frozenset(p for p in (leaf.path, leaf.key) if p)


def affected(
    renewed: Iterable[str], pods: Mapping[str, staticpod.StaticPod]
) -> list[tuple[str, list[str]]]:
    """``(component, [renewed names it loads])`` in restart order, only those loading any."""
    names = list(renewed)
    out = []
    for component in ORDER:
        pod = pods.get(component)
        if pod is None:
            continue
        loads = [n for n in names if leaf_files(n) & pod.files]
        if loads:
            out.append((component, loads))
    return out


def _flags(argv: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        key, sep, value = arg[2:].partition("=")
        if not sep and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            value = argv[i + 1]
        out[key] = value
    return out


def _probe_host(address: str) -> str:
    address = address.strip("[]")
    return LOOPBACK if address in _ANY else address


def _split_url(url: str) -> tuple[str, str, int | None]:
    """``https://[::1]:2379`` -> ("https", "::1", 2379); the port is None when absent."""
    scheme, _, rest = url.strip().partition("://")
    hostport = rest.split("/", 1)[0]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    return scheme, host, int(port) if port.isdigit() else None


def _url_endpoint(urls: str, role: str, cert: str | None) -> staticpod.Endpoint:
    """The URL of a comma-separated list to probe: loopback (or any) first, else the first."""
    parsed = [_split_url(u) for u in urls.split(",") if u.strip()]
    if not parsed:
        raise ValueError(f"empty URL list {urls!r}")
    scheme, host, port = next((u for u in parsed if u[1] in _ANY), parsed[0])
    if scheme != "https" or port is None:
        raise ValueError(f"{urls!r}: not an https URL with a port")
    return staticpod.Endpoint(role, _probe_host(host), port, cert)


def _endpoints(
    name: str, flags: dict[str, str], host_path: Any
) -> tuple[tuple[staticpod.Endpoint, ...], str, tuple[str, str] | None]:
    if name == "etcd":
        server = host_path(flags.get("cert-file"))
        client = _url_endpoint(
            flags.get("listen-client-urls") or _ETCD_CLIENT_URL, "serving", server
        )
        peer = _url_endpoint(
            flags.get("listen-peer-urls") or _ETCD_PEER_URL,
            "peer",
            host_path(flags.get("peer-cert-file")),
        )
        # kubeadm keeps the probe's client certificate beside the server's
        pki = posixpath.dirname(server) if server else f"{kubeadm.PKI}/etcd"
        health_client = (f"{pki}/healthcheck-client.crt", f"{pki}/healthcheck-client.key")
        return (client, peer), "/health", health_client
    if name not in _SECURE_PORTS:
        raise ValueError(f"unknown component {name!r}")
    default_port, health = _SECURE_PORTS[name]
    try:
        port = int(flags.get("secure-port") or default_port)
    except ValueError as e:
        raise ValueError(f"--secure-port={flags['secure-port']!r} is not a port") from e
    address = _probe_host(flags.get("bind-address", ""))
    cert = host_path(flags.get("tls-cert-file"))
    return (staticpod.Endpoint("serving", address, port, cert),), health, None
