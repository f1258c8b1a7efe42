"""What no kubelet serving certificate may name, whatever the policy or the Node says.

A node writes its own ``Node.status`` (NodeRestriction allows it), so a node that adds
``10.96.0.1`` or ``kubernetes.default.svc`` to its addresses and asks for them must still be
refused: with the cluster CA's signature that certificate would impersonate the API server to
every pod. ``Refused`` holds three kinds of names and addresses:

- fixed: loopback, unspecified (``0.0.0.0/8``: on Linux ``0.0.0.0`` reaches the local host),
  link-local, multicast and the rest of the reserved ranges of IPv4 and IPv6, including
  IPv4-mapped IPv6 addresses (Go's TLS clients take ``::ffff:10.96.0.1`` for ``10.96.0.1``);
  ``localhost`` and every name under it;
- the cluster's: its Service ranges (the policy's ``serviceCIDRs``, plus the API server's own
  ``--service-cluster-ip-range`` when the leader's host has its manifest), the API server's
  in-cluster names (``kubernetes``, ``kubernetes.default``) and the whole cluster DNS zone
  (every name under ``svc`` and under ``clusterDomain``, and under any other cluster domain
  the API server's certificate names as ``kubernetes.default.svc.<domain>``);
- the API server's certificate, as the leader's host has it (``--tls-cert-file`` of its
  manifest, else ``/etc/kubernetes/pki/apiserver.crt``): every DNS name (a wildcard covers one
  label, as in TLS) and IP address in it. These are not refused to the node that holds that
  certificate: kubeadm puts the node's name and address in it, its kubelet asks for exactly
  those, and that node already holds the API server's key. Other control-plane nodes' API
  server addresses are not in the leader's certificate; the allowlist is what keeps them out.

Pure: manifest and certificate bytes in, values out; the leader's host is read by
``node.apiserver``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from cryptography import x509

from reconciler.decide import yamldoc
from reconciler.decide.csrreason import Reason

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Never in a serving certificate: they reach the node itself, a link, or a group, or nothing.
SPECIAL_NETWORKS: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), what)
    for net, what in (
        ("0.0.0.0/8", "unspecified ('this network')"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved (or broadcast)"),
        ("::/8", "unspecified, loopback or IPv4-mapped"),  # ::, ::1, ::ffff:0:0/96 and kin
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)
# The API server's in-cluster names outside the zones below (kubernetes.default.svc and the
# names under the cluster domain are refused with the zones).
API_SERVER_NAMES = frozenset({"kubernetes", "kubernetes.default"})
# kube-apiserver's default --service-cluster-ip-range, and kubeadm's default serviceSubnet.
DEFAULT_SERVICE_CIDRS = ("10.96.0.0/12",)
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
_SVC_PREFIX = "kubernetes.default.svc."


@dataclasses.dataclass(frozen=True)
class APIServer:
    """What the leader's host says about its API server; read by ``node.apiserver``."""

    node_name: str | None  # the node whose files these are (the leader's own)
    cert_path: str | None = None
    dns_names: frozenset[str] = frozenset()  # lowercased; may hold wildcards
    ips: frozenset[IP] = frozenset()
    service_cidrs: tuple[Network, ...] = ()
    problems: tuple[str, ...] = ()  # what could not be read, for the log


@dataclasses.dataclass(frozen=True)
class Refused:
    service_ranges: tuple[Network, ...]
    zones: frozenset[str]  # DNS zones refused with every name under them
    apiserver: APIServer = dataclasses.field(default_factory=lambda: APIServer(None))


def refused(
    service_cidrs: Iterable[Network], cluster_domain: str, apiserver: APIServer | None = None
) -> Refused:
    """The refused set: the policy's Service ranges and cluster domain, plus the host's facts.
    The host's facts only ever add (a policy cannot make the real Service range acceptable)."""
    facts = apiserver or APIServer(None)
    ranges = tuple(dict.fromkeys([*service_cidrs, *facts.service_cidrs]))
    zones = {"svc", "localhost", cluster_domain.lower().strip(".")}
    zones |= {n.removeprefix(_SVC_PREFIX) for n in facts.dns_names if n.startswith(_SVC_PREFIX)}
    return Refused(ranges, frozenset(z for z in zones if z), facts)


def ip_problem(ip: IP, node: str, refused_: Refused) -> tuple[Reason, str] | None:
    """Why no node may have ``ip`` in a serving certificate (``node`` may have the API
    server's own addresses when the API server's certificate is its own)."""
    for net, what in SPECIAL_NETWORKS:
        if ip.version == net.version and ip in net:
            return Reason.RESERVED_IP, f"IP SAN {ip} is {what} ({net})"
    for net in refused_.service_ranges:
        if ip.version == net.version and ip in net:
            return Reason.SERVICE_IP, f"IP SAN {ip} is inside the Service range {net}"
    facts = refused_.apiserver
    if ip in facts.ips and node != facts.node_name:
        return Reason.API_SERVER_IP, f"IP SAN {ip} is an address of the API server ({_of(facts)})"
    return None


def dns_problem(name: str, node: str, refused_: Refused) -> tuple[Reason, str] | None:
    """Why no node may have ``name`` (a valid, lowercased host name) in a serving
    certificate; the API server certificate's names are allowed to the node that holds it."""
    if name in API_SERVER_NAMES or name.startswith(_SVC_PREFIX) or name == _SVC_PREFIX[:-1]:
        return Reason.API_SERVER_NAME, f"DNS SAN {name!r} is a name of the API server"
    facts = refused_.apiserver
    if node != facts.node_name and any(_matches(pattern, name) for pattern in facts.dns_names):
        return Reason.API_SERVER_NAME, f"DNS SAN {name!r} is in the API server's {_of(facts)}"
    for zone in sorted(refused_.zones):
        if name == zone or name.endswith("." + zone):
            return Reason.RESERVED_NAME, f"DNS SAN {name!r} is in the reserved zone {zone!r}"
    return None


def apiserver_manifest(text: bytes | str) -> tuple[str | None, tuple[Network, ...], list[str]]:
    """``(--tls-cert-file, --service-cluster-ip-range, problems)`` of a kube-apiserver static
    pod manifest (container paths: kubeadm mounts ``/etc/kubernetes/pki`` at the same path)."""
    try:
        doc = yamldoc.load(text)
        container = doc["spec"]["containers"][0]
        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    except (yamldoc.YAMLDocError, KeyError, IndexError, TypeError, AttributeError) as e:
        return None, (), [f"not a static pod manifest ({type(e).__name__})"]
    flags = dict(a[2:].partition("=")[::2] for a in argv if a.startswith("--"))
    cert = flags.get("tls-cert-file") or None
    ranges: list[Network] = []
    problems = []
    for part in filter(None, (flags.get("service-cluster-ip-range") or "").split(",")):
        try:
            ranges.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            problems.append(f"--service-cluster-ip-range {part!r} is not a CIDR")
    return cert, tuple(ranges), problems


def apiserver_sans(pem: bytes) -> tuple[frozenset[str], frozenset[IP]]:
    """The DNS names (lowercased) and IP addresses of the API server's certificate; raises
    what ``cryptography`` raises (``ValueError`` and others) when it is not one."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(), frozenset()
    dns = frozenset(n.lower().rstrip(".") for n in sans.get_values_for_type(x509.DNSName))
    ips = frozenset(i for i in sans.get_values_for_type(x509.IPAddress) if isinstance(i, IP))
    return dns, ips


def _matches(pattern: str, name: str) -> bool:
    """TLS host name matching: exact, or a leading ``*`` standing for exactly one label."""
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def _of(facts: APIServer) -> str:
    return f"certificate {facts.cert_path}" if facts.cert_path else "certificate"
