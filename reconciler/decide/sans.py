"""May this node's serving certificate name these DNS names and IP addresses? The SAN rules.

The allowlist comes from the policy, never from the node: a DNS SAN must be the node's name or
``<node>.<suffix>`` for one of ``allowedDNSSuffixes`` (no wildcard, no other label), at most
``maxDNSNames`` of them; an IP SAN must be inside one of ``allowedIPRanges`` (empty: no IP SAN
at all). Before the allowlist, whatever the policy says, ``decide.reserved`` refuses the
API server's names and addresses, the Service range, the cluster DNS zone, ``localhost`` and
the special addresses. After it, the Node's ``status.addresses`` may only narrow: with
``requireNodeAddresses`` (the default) every SAN must also be one of the node's own addresses
(DNS names among ``Hostname``/``InternalDNS``/``ExternalDNS``, IPs among
``InternalIP``/``ExternalIP``). With ``resolveDNSNames``, every DNS SAN must resolve, and only to
addresses this node may have in its certificate (the caller resolves, ``resolution_problem``
judges the answers).

``kubelet_covered`` predicts, from the same rules, whether what a kubelet asks for (its own
addresses) would be approved: the controller tells a node to switch ``serverTLSBootstrap`` on
only then, so a policy that would deny the kubelet never breaks ``kubectl logs`` on it.

Pure: names and addresses in, a ``(reason, message)`` or None out.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reconciler.decide import reserved
from reconciler.decide.csrreason import Reason

IP = reserved.IP
Network = reserved.Network
Problem = tuple[Reason, str]
DNS_ADDRESS_TYPES = ("Hostname", "InternalDNS", "ExternalDNS")
IP_ADDRESS_TYPES = ("InternalIP", "ExternalIP")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class Allowlist:
    """The ``csrSigner`` fields that say what a serving certificate may name."""

    dns_suffixes: tuple[str, ...] = ()  # lowercased, no leading dot
    max_dns_names: int = 3
    ip_ranges: tuple[Network, ...] = ()
    require_node_addresses: bool = True
    resolve_dns_names: bool = False


@dataclasses.dataclass(frozen=True)
class NodeAddresses:
    """What the Node says its addresses are (node-written: it narrows, never widens)."""

    dns: frozenset[str]
    ips: frozenset[IP]

    @classmethod
    def of(cls, node: Mapping[str, Any] | None) -> NodeAddresses:
        status = (node or {}).get("status")
        addresses = status.get("addresses") if isinstance(status, Mapping) else None
        dns, ips = set(), set()
        for a in addresses if isinstance(addresses, list) else []:
            kind, value = (a.get("type"), a.get("address")) if isinstance(a, Mapping) else (0, 0)
            if not isinstance(value, str):
                continue
            if kind in DNS_ADDRESS_TYPES:
                dns.add(value.lower())
            elif kind in IP_ADDRESS_TYPES:
                try:
                    ips.add(ipaddress.ip_address(value))
                except ValueError:
                    continue  # a garbage address owns nothing
        return cls(frozenset(dns), frozenset(ips))


def problem(
    dns_names: Sequence[str],
    ips: Sequence[IP],
    node: str,
    addresses: NodeAddresses,
    allow: Allowlist,
    refused: reserved.Refused,
) -> Problem | None:
    """The first SAN this node may not have, with why; None when every one passes."""
    if len(dns_names) > allow.max_dns_names:
        return (
            Reason.TOO_MANY_DNS_NAMES,
            f"{len(dns_names)} DNS SANs, more than maxDNSNames ({allow.max_dns_names})",
        )
    for name in dns_names:
        found = dns_problem(name, node, addresses, allow, refused)
        if found:
            return found
    for ip in ips:
        found = ip_problem(ip, node, addresses, allow, refused)
        if found:
            return found
    return None


def dns_problem(
    name: str, node: str, addresses: NodeAddresses, allow: Allowlist, refused: reserved.Refused
) -> Problem | None:
    lowered = name.lower()
    if not valid_host_name(lowered):
        return Reason.INVALID_DNS_NAME, f"DNS SAN {name!r} is not a host name"
    found = reserved.dns_problem(lowered, node, refused)
    if found:
        return found
    if lowered not in allowed_dns_names(node, allow):
        return (
            Reason.DNS_NOT_ALLOWED,
            f"DNS SAN {name!r} is neither the node's name nor <node>.<suffix> for a suffix "
            "in csrSigner.allowedDNSSuffixes",
        )
    if allow.require_node_addresses and lowered not in addresses.dns:
        return Reason.DNS_NOT_OWNED, f"DNS SAN {name!r} is not one of the Node's addresses"
    return None


def ip_problem(
    ip: IP, node: str, addresses: NodeAddresses, allow: Allowlist, refused: reserved.Refused
) -> Problem | None:
    found = reserved.ip_problem(ip, node, refused)
    if found:
        return found
    if not any(ip.version == r.version and ip in r for r in allow.ip_ranges):
        where = "csrSigner.allowedIPRanges" if allow.ip_ranges else "the empty allowedIPRanges"
        return Reason.IP_NOT_ALLOWED, f"IP SAN {ip} is outside {where}"
    if allow.require_node_addresses and ip not in addresses.ips:
        return Reason.IP_NOT_OWNED, f"IP SAN {ip} is not one of the Node's addresses"
    return None


def resolution_problem(
    dns_names: Sequence[str],
    resolved: Mapping[str, Sequence[str]],
    node: str,
    addresses: NodeAddresses,
    allow: Allowlist,
    refused: reserved.Refused,
) -> Problem | None:
    """``resolveDNSNames``: every name resolves (``resolved`` maps each lowercased name to the
    addresses the resolver gave; a missing name did not resolve), and only to addresses this
    node may have in its certificate (allowed, not refused, its own when required)."""
    for name in dns_names:
        answers = resolved.get(name.lower()) or ()
        if not answers:
            return Reason.DNS_NOT_RESOLVED, f"DNS SAN {name!r} does not resolve"
        for answer in answers:
            try:
                ip = ipaddress.ip_address(answer)
            except ValueError:
                return Reason.DNS_RESOLVES_ELSEWHERE, f"{name!r} resolves to {answer!r}"
            if ip_problem(ip, node, addresses, allow, refused):
                return (
                    Reason.DNS_RESOLVES_ELSEWHERE,
                    f"DNS SAN {name!r} resolves to {ip}, which this node may not serve",
                )
    return None


def allowed_dns_names(node: str, allow: Allowlist) -> frozenset[str]:
    """``<node>`` and ``<node>.<suffix>`` for each allowed suffix: the whole DNS allowlist."""
    base = node.lower()
    return frozenset([base, *(f"{base}.{s}" for s in allow.dns_suffixes)])


def kubelet_covered(
    node: str,
    node_addresses: Iterable[Mapping[str, Any]],
    allow: Allowlist,
    refused: reserved.Refused,
) -> bool:
    """Would the serving CSR a kubelet makes from these addresses (its DNS-type addresses as
    DNS SANs, its IP-type ones as IP SANs, as the kubelet's certificate manager does) pass
    these rules? False when it would ask for nothing (no addresses yet)."""
    node_obj = {"status": {"addresses": list(node_addresses)}}
    owned = NodeAddresses.of(node_obj)
    if not owned.dns and not owned.ips:
        return False
    return (
        problem(sorted(owned.dns), sorted(owned.ips, key=str), node, owned, allow, refused) is None
    )


def valid_host_name(name: str) -> bool:
    """An RFC 1123 host name: labels of letters, digits and inner hyphens, at most 253
    characters, no wildcard, no trailing dot, and not an IP address in disguise (a numeric
    last label: some TLS clients compare such names with IP addresses)."""
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    )
