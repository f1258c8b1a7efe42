"""The outcomes of kucero's kubelet serving CSR handling, as ``str`` enums: the same value reads
well in a CSR condition, an Event, a log line and the ``reason`` label of
``kucero_csr_decisions_total``. One enum names every outcome (checks, SAN rules, signing), so a
dashboard can list them all from here. ``decide.csr`` re-exports both as ``csr.Decision`` and
``csr.Reason``.
"""

from __future__ import annotations

import enum


class Decision(enum.StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    WAIT = "wait"  # requeue: the Node may appear
    LEAVE = "leave"  # no condition at all: another signer's, or onReject: ignore
    # every other check passed and the policy wants the DNS names resolved: the caller looks
    # them up and asks again with the answers (never approved without them)
    RESOLVE = "resolve"


class Reason(enum.StrEnum):
    APPROVED = "KuceroApproved"
    OTHER_SIGNER = "OtherSigner"
    SIGNER_DISABLED = "SignerDisabled"
    REQUESTOR_NOT_NODE = "RequestorNotANode"
    REQUESTOR_NOT_IN_NODES = "RequestorNotInSystemNodes"
    UNPARSEABLE = "UnparseableRequest"
    BAD_SIGNATURE = "InvalidSelfSignature"
    SUBJECT_MISMATCH = "SubjectNotRequestor"
    NO_SANS = "NoSubjectAltNames"
    FORBIDDEN_SAN = "ForbiddenSubjectAltName"
    FORBIDDEN_EXTENSION = "ForbiddenExtension"
    USAGES = "UsagesNotAllowed"
    WEAK_KEY = "KeyNotAllowed"
    NODE_NOT_FOUND = "NodeNotFound"
    # the SAN rules (decide/sans.py, decide/reserved.py), in the order they are checked
    TOO_MANY_DNS_NAMES = "TooManyDNSNames"
    INVALID_DNS_NAME = "InvalidDNSName"
    API_SERVER_NAME = "APIServerName"  # the API server's names: always refused
    RESERVED_NAME = "ReservedDNSName"  # localhost, the cluster's DNS zone: always refused
    RESERVED_IP = "ReservedIPAddress"  # loopback, unspecified, link-local, multicast, ...
    SERVICE_IP = "ServiceIPAddress"  # inside the cluster's Service range: always refused
    API_SERVER_IP = "APIServerIPAddress"  # an address of the API server's certificate
    DNS_NOT_ALLOWED = "DNSNameNotAllowed"  # not <node> or <node>.<allowed suffix>
    IP_NOT_ALLOWED = "IPAddressNotAllowed"  # outside the policy's allowedIPRanges
    DNS_NOT_OWNED = "DNSNameNotOwned"  # allowed, but not one of the Node's addresses
    IP_NOT_OWNED = "IPAddressNotOwned"
    DNS_NOT_RESOLVED = "DNSNameNotResolved"  # resolveDNSNames: no answer
    DNS_RESOLVES_ELSEWHERE = "DNSNameResolvesElsewhere"  # an answer the node may not serve
    # signing outcomes (decide/csrsign.py)
    CA_EXPIRED = "CAExpired"
    CA_NOT_YET_VALID = "CANotYetValid"
    CA_KEY_MISMATCH = "CAKeyMismatch"
    CA_UNAVAILABLE = "CAUnavailable"
    SIGNING_FAILED = "SigningFailed"
    SIGNED_ELSEWHERE = "SignedElsewhere"
