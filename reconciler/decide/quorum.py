"""May the local etcd member be restarted without the cluster losing quorum? Pure.

Input: the member list the local member gave (etcd's JSON gateway, ``/v3/cluster/member/list``)
and the ``/health`` answer of each member; output: None (go ahead) or why not. The rules:

- learners do not vote: only voting members count, and restarting a learner is always allowed;
- a cluster of one voting member (a single control-plane node) may restart it: there is no
  quorum beyond itself to lose, and refusing would leave its certificates to expire; the API is
  down for the restart's length, as it is for any single-member control plane;
- a local member that is itself unhealthy (no leader, partitioned) adds nothing to a quorum
  now: restarting it is allowed (this is also the recovery case, when every member's
  certificates expired together and none can reach the others);
- otherwise the *other* voting members that answer healthy must be a majority of all voting
  members (``n // 2 + 1``): a 3-member cluster needs both others healthy, a 5-member one three
  of four. A 2-member cluster can therefore never restart a member without losing quorum: it is
  refused, and says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any


class QuorumError(ValueError):
    """The member list is not what etcd answers (the message says what is wrong)."""


@dataclasses.dataclass(frozen=True)
class Member:
    id: str
    name: str
    client_urls: tuple[str, ...]
    learner: bool = False


def parse_members(listing: Mapping[str, Any]) -> tuple[str, list[Member]]:
    """The local member's ID (from the response header) and every member, from the gateway's
    JSON (uint64 IDs arrive as strings; ``isLearner`` only when true)."""
    header = listing.get("header")
    if not isinstance(header, Mapping) or not _id(header.get("member_id")):
        raise QuorumError("the member list has no header.member_id")
    raw = listing.get("members")
    if not isinstance(raw, list) or not raw:
        raise QuorumError("the member list has no members")
    members = []
    for item in raw:
        if not isinstance(item, Mapping) or not _id(item.get("ID")):
            raise QuorumError(f"a member without an ID: {item!r:.200}")
        urls = item.get("clientURLs") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise QuorumError(f"member {item.get('ID')}: clientURLs is not a list of URLs")
        name = item.get("name")
        members.append(
            Member(
                _id(item.get("ID")),
                name if isinstance(name, str) else "",
                tuple(urls),
                item.get("isLearner") is True,
            )
        )
    return _id(header.get("member_id")), members


def verdict(
    local_id: str, members: Sequence[Member], local_healthy: bool, healthy: Mapping[str, bool]
) -> str | None:
    """None when restarting member ``local_id`` keeps quorum, else why not. ``healthy`` maps the
    other members' IDs to their ``/health`` answer (absent: not healthy)."""
    local = next((m for m in members if m.id == local_id), None)
    if local is None:
        return f"the local etcd member {local_id} is not in its own member list"
    if local.learner:
        return None
    voters = [m for m in members if not m.learner]
    if len(voters) == 1 or not local_healthy:
        return None
    others = [m for m in voters if m.id != local_id]
    up = [m for m in others if healthy.get(m.id)]
    need = len(voters) // 2 + 1
    if len(up) >= need:
        return None
    down = ", ".join(_shown(m) for m in others if not healthy.get(m.id))
    return (
        f"etcd has {len(voters)} voting members; without this one {len(up)} healthy would "
        f"remain and quorum needs {need} (not healthy: {down or 'none'}): not restarting it"
    )


def _shown(member: Member) -> str:
    return f"{member.name or member.id} ({', '.join(member.client_urls) or 'no client URL'})"


def _id(value: object) -> str:
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) and value.isdigit() else ""
