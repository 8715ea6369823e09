"""How the consumer group shares the partitions: co-partitioned, sticky, with standbys.

Partition p of every risk input (orders, transfers, the market fan-out) goes to one
member, which owns account partition p. Each member says in its subscription what it
holds (active and standby partitions, and the assignment epoch it got them in) and the
URL of its web view; the leader's plan (plan below, pure) keeps partitions where they
are, balances, and hands every member the map of owners, so any worker can route an
account read to its owner.

Sticky and deterministic: a member keeps the lowest-numbered partitions it holds, up to
its share; partitions to move go from the top. When claims conflict (a paused member
rejoins claiming what another took over meanwhile), the newer epoch wins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """What a member holds, as it says when it (re)joins."""

    url: str = ""
    active: tuple[int, ...] = ()
    standby: tuple[int, ...] = ()
    epoch: int = 0

    def encode(self) -> bytes:
        return orjson.dumps(
            {"url": self.url, "active": self.active, "standby": self.standby, "epoch": self.epoch}
        )

    @classmethod
    def decode(cls, data: bytes | None) -> Claim:
        try:
            value = orjson.loads(data or b"{}")
            return cls(
                str(value.get("url", "")),
                tuple(int(p) for p in value.get("active", ())),
                tuple(int(p) for p in value.get("standby", ())),
                int(value.get("epoch", 0)),
            )
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            return cls()  # a member of another version: treated as holding nothing


@dataclass
class Share:
    active: list[int] = field(default_factory=list)
    standby: list[int] = field(default_factory=list)


def plan(partitions: int, claims: Mapping[str, Claim], replicas: int) -> dict[str, Share]:
    """Which member gets which partitions, active and standby."""
    order = sorted(claims, key=lambda m: (claims[m].url, m))
    shares = {member: Share() for member in order}
    if not order:
        return shares
    holder: dict[int, str] = {}
    for member in sorted(order, key=lambda m: -claims[m].epoch):  # the newest claim wins
        for p in claims[member].active:
            if 0 <= p < partitions:
                holder.setdefault(p, member)
    held = {m: sorted(p for p, h in holder.items() if h == m) for m in order}
    base, extra = divmod(partitions, len(order))
    ranked = sorted(order, key=lambda m: -len(held[m]))  # who holds more keeps the extra
    quota = {m: base + (1 if rank < extra else 0) for rank, m in enumerate(ranked)}
    for member in order:
        shares[member].active = held[member][: quota[member]]
    taken = {p for share in shares.values() for p in share.active}
    free = [p for p in range(partitions) if p not in taken]
    for member in order:
        share = shares[member]
        while len(share.active) < quota[member]:
            share.active.append(free.pop(0))
        share.active.sort()
    owner = {p: m for m, share in shares.items() for p in share.active}
    for p in range(partitions):
        candidates = [m for m in order if m != owner[p]]
        warm = {m for m in candidates if p in claims[m].standby or p in claims[m].active}
        for _ in range(min(replicas, len(candidates))):
            chosen = min(
                (m for m in candidates if p not in shares[m].standby),
                key=lambda m: (m not in warm, len(shares[m].standby), order.index(m)),
            )
            shares[chosen].standby.append(p)
    return shares


class CoPartitionedAssignor(AbstractPartitionAssignor):
    """aiokafka's assignor interface around plan(); one instance per worker."""

    name = "marginstream-copartitioned"
    version = 0

    def __init__(self, url: str, replicas: int) -> None:
        self.url = url
        self.replicas = replicas
        self.held = Claim(url)
        self.owners: dict[int, str] = {}  # partition -> web URL of its active owner
        self.members: list[str] = []  # every member's web URL, spares included

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        held = self.held
        claim = Claim(self.url, held.active, held.standby, held.epoch)
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), claim.encode())

    def assign(
        self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({t for m in members.values() for t in m.subscription})
        counts = {t: len(cluster.partitions_for_topic(t) or ()) for t in topics}
        partitions = min(counts.values(), default=0)
        claims = {member: Claim.decode(m.user_data) for member, m in members.items()}
        epoch = max((c.epoch for c in claims.values()), default=0) + 1
        shares = plan(partitions, claims, self.replicas)
        owners = {str(p): claims[m].url for m, share in shares.items() for p in share.active}
        log.info(
            "assignment epoch %d: %s", epoch,
            {claims[m].url or m: (s.active, s.standby) for m, s in shares.items()},
        )  # fmt: skip
        return {
            member: ConsumerProtocolMemberAssignment(
                self.version,
                [(t, list(share.active)) for t in topics],
                orjson.dumps(
                    {
                        "epoch": epoch,
                        "standby": share.standby,
                        "owners": owners,
                        "members": sorted({c.url for c in claims.values() if c.url}),
                    }
                ),
            )
            for member, share in shares.items()
        }

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        data = orjson.loads(assignment.user_data or b"{}")
        active = sorted({tp.partition for tp in assignment.partitions()})
        self.held = Claim(self.url, tuple(active), tuple(data.get("standby", ())), data["epoch"])
        self.owners = {int(p): url for p, url in data.get("owners", {}).items()}
        # A leader of an earlier version sends no members: the owners are all it knows.
        self.members = list(data.get("members", ())) or sorted(set(self.owners.values()))
