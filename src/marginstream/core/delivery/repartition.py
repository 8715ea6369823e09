"""Moving a stopped deployment's state to more partitions: what goes where.

Kafka cannot move records between partitions, and an account's partition is
murmur2(account) % count: when `orders` and `transfers` grow from `old` to `new`
partitions, an account's later records go to its new partition, while its state, and
any of its records not yet applied, sit on its old one. `marginstream repartition`
(cli/repartition.py) moves a stopped deployment across that line. This module is its
pure part:

1. Finish the old layout. Each old partition first applies the market records some
   other partition applied and it did not (every partition must hold the same market
   before they are mixed), then its own records that only the old layout explains, up
   to the first that only the new one does (`old_layout_records`): that one, and
   everything after it, is left to the new deployment, which reads the partition from
   there.
2. Spread the parts (`Spread`): an account and its used-id chunks go to the account's
   partition among `new`; every new partition gets the market (the same on every old
   partition, else the move is refused) and a replay guard with the market's positions
   and, for the partitions that existed, its own inputs' positions; slice p of the
   insurance fund stays slice p (new slices start empty: a slice's balance is not any
   account's, so it is not split). Accounts take new leaves of their new partition's
   state tree, in the order they are taken (core/commitments); each partition's input
   chain and commitments start again from the move (`verify --from-epoch`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from marginstream.core.books.seenids import chunk_owner
from marginstream.core.delivery.guard import GUARD_KEY, ReplayGuard
from marginstream.core.delivery.parts import StateKey
from marginstream.core.delivery.sources import Source
from marginstream.core.engine import FIRST_LEAF, LEAVES_KEY
from marginstream.core.inputs.keys import account_partition
from marginstream.core.inputs.records import ACCOUNT_TOPICS, MARKET_TOPICS
from marginstream.core.liquidation.fund import FUND_ACCOUNT, FUND_KEY
from marginstream.core.risk.market import MARKET_KINDS

Placed = tuple[int, StateKey, Any]  # (new partition, key, part)


class MoveRefused(ValueError):
    """The state cannot be moved as it is; the message says why and what to do."""


def placed(key: bytes | None, partition: int, count: int) -> bool:
    """Is a record with this key where Kafka's partitioner puts it among count
    partitions? The insurance fund's deposits go to whichever slice they fund."""
    if key is None:
        return False
    text = key.decode("utf-8", "replace")
    return text == FUND_ACCOUNT or account_partition(text, count) == partition


def old_layout_records(keys: Iterable[bytes | None], partition: int, old: int, new: int) -> int:
    """How many of a partition's records not yet applied (keys in offset order) the old
    layout is to apply: all of them up to the first that only the new layout explains.

    A record placed under both layouts belongs to an account that does not move, and one
    placed under neither is a dead letter under both: either is the same whoever applies
    it. The first record only the new layout explains was produced after the topic grew;
    a record only the old one explains after it came from a producer that had not yet
    seen the change, and is dead-lettered by the new deployment as misrouted."""
    applied = 0
    for key in keys:
        if placed(key, partition, new) and not placed(key, partition, old):
            break
        applied += 1
    return applied


def market_positions(guards: Iterable[ReplayGuard]) -> dict[Source, int]:
    """Per market source, the furthest record any partition applied: where every
    partition must be before the state is mixed."""
    furthest: dict[Source, int] = {}
    for guard in guards:
        for source, offset in guard.seen.items():
            if source.topic in MARKET_TOPICS:
                furthest[source] = max(furthest.get(source, -1), offset)
    return furthest


def behind(guard: ReplayGuard, positions: Mapping[Source, int]) -> bool:
    return any(guard.seen.get(source, -1) < offset for source, offset in positions.items())


def new_partition(key: StateKey, count: int) -> int | None:
    """The new partition of one account's part (the account, or a chunk of its used
    ids); None for a part every partition has one of (market, guard, fund)."""
    kind, name = key
    if kind == "account":
        return account_partition(name, count)
    if kind == "ids":
        return account_partition(chunk_owner(name)[0], count)
    return None


class Spread:
    """The parts of the old partitions, taken one old partition at a time (a partition's
    state need not stay in memory once spread), laid out on `count` new partitions."""

    def __init__(self, old: int, count: int) -> None:
        if count <= old:
            raise MoveRefused(f"the new partition count must be above {old}, got {count}")
        self.old, self.count = old, count
        self.market: dict[StateKey, Any] | None = None
        self.market_from = -1
        self.guards: dict[int, ReplayGuard] = {}
        self.funds: dict[int, Any] = {}
        self.leaves = [FIRST_LEAF] * count  # each new partition's next leaf

    def take(
        self, partition: int, parts: Mapping[StateKey, Any]
    ) -> Iterable[tuple[int, StateKey, Any]]:
        """(new partition, key, part) of every account part of old partition `partition`;
        its market, guard and fund slice are kept for `shared`."""
        market = {key: part for key, part in parts.items() if key[0] in MARKET_KINDS}
        if self.market is None:
            self.market, self.market_from = market, partition
        elif market != self.market:
            first = min(k for k in {*market, *self.market} if market.get(k) != self.market.get(k))
            raise MoveRefused(
                f"partitions {self.market_from} and {partition} hold different market state "
                f"({'/'.join(first)}) although they applied the same market records: "
                "report it, with the deployment's changelog"
            )
        self.guards[partition] = ReplayGuard.from_part(parts.get(GUARD_KEY))
        if FUND_KEY in parts:
            self.funds[partition] = parts[FUND_KEY]
        for key, part in parts.items():
            number = new_partition(key, self.count)
            if number is None:
                continue
            if key[0] != "account":
                yield number, key, part
                continue
            yield number, key, {**part, "leaf": self.leaves[number]}
            self.leaves[number] += 1

    def shared(self) -> Iterable[Placed]:
        """(new partition, key, part) of the parts each new partition has one of."""
        if len(self.guards) != self.old:
            missing = sorted(set(range(self.old)) - set(self.guards))
            raise MoveRefused(f"old partitions {missing} were never taken")
        positions = market_positions(self.guards.values())
        for number in range(self.count):
            for key, part in (self.market or {}).items():
                yield number, key, part
            seen = dict(positions)
            own = self.guards.get(number)
            if own is not None:  # a partition that existed goes on reading its own inputs
                seen.update(
                    (source, offset)
                    for source, offset in own.seen.items()
                    if source.topic in ACCOUNT_TOPICS and source.partition == number
                )
            yield number, GUARD_KEY, ReplayGuard(seen).part()
            if number in self.funds:
                yield number, FUND_KEY, self.funds[number]
            yield number, LEAVES_KEY, {"next": self.leaves[number]}


def start_offsets(committed: Sequence[int], applied: Sequence[int], count: int) -> list[int]:
    """Where the new deployment reads each partition of an account input: after what the
    old layout applied (committed, then the records the move applied) on the partitions
    that existed, from the beginning on the new ones."""
    return [committed[p] + applied[p] if p < len(committed) else 0 for p in range(count)]
