"""The risk engine: one record in, its outputs and the state it changed out.

Pure and deterministic: no Kafka, no clock, no randomness. The live workers
and `marginstream replay` both drive this class, so a replay is the reference
the live system is checked against.

State is a set of parts, each under a StateKey: one per account, per
instrument, per index, per sealed chunk of an account's used ids, and the replay
guard. An Outcome names the parts a record changed; the shell commits exactly
those (core/delivery).

Records enter through core/inputs/intake.py (size limit, JSON); an account record must be
keyed by its account, on that key's partition (core/inputs/keys.py).

A worker's engine is loaded lazily (core/delivery/unit.py load): its accounts are decoded
from the partition's store when first touched (core/books/accounts.py), and clean ones are
evicted again at a commit past EngineConfig.resident_accounts; from_parts and replay
hold every account in memory. Both give the same outputs and parts (tests/core/
test_lazy_state.py).

A record this state has already seen (its offset is at or below the last one
the replay guard saw from its source) changes nothing and publishes nothing:
the shell commits state, outputs and input offsets together, so the outputs of
a record seen before were committed with the state that saw it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from marginstream.core.books.accounts import Accounts
from marginstream.core.books.ledger import Account
from marginstream.core.books.requests import Desk
from marginstream.core.books.seenids import SeenIds
from marginstream.core.delivery.guard import GUARD_KEY, ReplayGuard
from marginstream.core.delivery.parts import StateKey, decode_part, part_key
from marginstream.core.delivery.store import PartReader
from marginstream.core.inputs.deadletters import dead_letter
from marginstream.core.inputs.envelope import Envelope, Output
from marginstream.core.inputs.keys import account_partition
from marginstream.core.inputs.numbers import RecordError
from marginstream.core.inputs.records import (
    ACCOUNT_TOPICS,
    FundingRecord,
    IndexRecord,
    InstrumentRecord,
    MarketRecord,
    MarkRecord,
    PortfolioParamsRecord,
    SettlementRecord,
    TransferRecord,
    parse_record,
)
from marginstream.core.liquidation import adl
from marginstream.core.liquidation.closeout import LiquidationPolicy
from marginstream.core.liquidation.desk import Liquidator, Loss
from marginstream.core.liquidation.fund import FUND_ACCOUNT, FUND_KEY, InsuranceFund
from marginstream.core.liquidation.manyprices import many_position_prices
from marginstream.core.liquidation.prices import PositionPrices, position_prices
from marginstream.core.outputs.alerts import LIQUIDATION, Thresholds
from marginstream.core.outputs.reports import account_state
from marginstream.core.risk.figures import (
    Rows,
    assess,
    orders_by_symbol,
    risk_rows,
    risk_symbols,
    total,
)
from marginstream.core.risk.market import MARKET_KINDS, Market
from marginstream.core.risk.view import RiskView

DAY_MS = 86_400_000
# The closing work a market record's alerts call for, when a shell commits the alerts
# first (RiskEngine.steps with owe=True): the record's trigger and time, until done.
OWED_KEY = ("delivery", "owed")
# The next leaf of the partition's state tree (core/commitments): leaf 0 is the insurance
# fund's slice, and each account takes the next one when its first deposit is applied.
LEAVES_KEY = ("delivery", "leaves")
FIRST_LEAF = 1
T = TypeVar("T")
Steps = Generator[None, None, T]


def next_leaf(part: dict[str, Any] | None) -> int:
    return FIRST_LEAF if not part else int(part["next"])


def drive(steps: Steps[T]) -> T:
    """Run steps to the end, without pausing: its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


MAX_OPEN_ORDERS = 500  # per account: each one is in the account's state part


def _show_key(key: str | None) -> str:
    return "null" if key is None else repr(key if len(key) <= 60 else key[:57] + "...")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    thresholds: Thresholds = field(default_factory=Thresholds)
    duplicate_retention_ms: int = 7 * DAY_MS
    # The account topics' partition count: a record must sit on its key's partition.
    # None (the replay of lines that name no partition): the key alone is checked.
    partitions: int | None = None
    max_open_orders: int = MAX_OPEN_ORDERS
    # A lazily loaded partition keeps at most about this many accounts decoded: past it,
    # each commit evicts the accounts it does not change (RiskEngine.evict_clean).
    resident_accounts: int = 100_000
    liquidation: LiquidationPolicy = field(default_factory=LiquidationPolicy)

    def __post_init__(self) -> None:
        target = self.liquidation.target_ratio
        if target is not None and not 0.0 < target < self.thresholds.liquidation:
            raise ValueError(
                f"the liquidation target ratio must be above 0 and below the liquidation "
                f"threshold {self.thresholds.liquidation}, got {target}"
            )


@dataclass(slots=True)
class Outcome:
    outputs: list[Output]
    changed: set[StateKey] = field(default_factory=set)  # parts to write
    replayed: bool = False  # seen before: nothing changed, nothing to publish


class RiskEngine:
    def __init__(
        self,
        config: EngineConfig | None = None,
        accounts: dict[str, Account] | None = None,
        market: Market | None = None,
        guard: ReplayGuard | None = None,
        ids: SeenIds | None = None,
        reader: PartReader | None = None,
        sealed: dict[str, list[StateKey]] | None = None,
        fund: InsuranceFund | None = None,
        owed: dict[str, Any] | None = None,
        next_leaf: int = FIRST_LEAF,
    ) -> None:
        """accounts: every account, in memory (from_parts); or, with reader, none: each is
        decoded from reader when first touched, with its sealed used-id chunks (sealed:
        their keys by account), and the caller loads the view (core/delivery/unit.py)."""
        self.config = config = config or EngineConfig()
        self.market = market or Market()
        self.guard = guard or ReplayGuard()
        self.ids = ids or SeenIds(config.duplicate_retention_ms)
        self.view = RiskView(config.thresholds, self.market)
        self.reader = reader
        self.sealed = sealed if sealed is not None else {}
        self.accounts = Accounts(self.view, reader, self._decoded)
        if reader is not None:
            self.ids.touch = self.accounts.get
        self.fund = fund or InsuranceFund()
        self.owed = owed  # the closing work left owed by the last market record (steps)
        self.next_leaf = next_leaf
        # Symbols whose valuation moved since the shell last took them (take_repriced):
        # the state tree re-prices their holders' sums (core/commitments).
        self.repriced: set[str] = set()
        # Liquidation alerts' rows and prices, from the record being applied to its
        # closing work (Liquidator.catch_up): nothing changes them in between.
        self._alerted: dict[str, tuple[Rows, dict[str, PositionPrices]]] = {}
        self.liquidator = Liquidator(
            self.market, self.view, config.thresholds, config.liquidation, self.fund, self.accounts
        )
        self.desk = Desk(
            self.market, self.view, config.thresholds, self.ids, config.max_open_orders,
            self.liquidator,
        )  # fmt: skip
        for symbol in sorted(self.market.instruments):
            self.view.define(symbol, self.market)
        for account in (accounts or {}).values():
            self.view.sync(account, risk_symbols(account, orders_by_symbol(account)), self.market)
            self.accounts[account.account_id] = account

    def take_repriced(self) -> set[str]:
        repriced, self.repriced = self.repriced, set()
        return repriced

    def _decoded(self, account_id: str, data: dict[str, Any]) -> None:
        """An account read from the store: its used ids join the window (seenids.py)."""
        assert self.reader is not None
        chunks = []
        for key in self.sealed.pop(account_id, ()):
            raw = self.reader.get(part_key(key))
            if raw is not None:
                chunks.append((key, decode_part(raw).data))
        self.ids.load_account(account_id, data.get("ids", {}), chunks)

    def evict_clean(self, changed: set[StateKey]) -> int:
        """Past config.resident_accounts decoded accounts, forget every decoded account not
        in changed (the parts of the commit being sealed); returns how many.

        Call at a seal: an account not changed since the previous seal is in the store as it
        is here (that commit wrote it before this seal began, or the engine was dropped), so
        it is decoded from there again, exactly, when next touched.
        """
        loaded = self.accounts.loaded
        if self.reader is None or len(loaded) <= self.config.resident_accounts:
            return 0
        keep = {name for kind, name in changed if kind == "account"}
        evicted = 0
        for account_id in [a for a in loaded if a not in keep]:
            sealed = self.ids.unload_account(account_id)
            if sealed is None:
                continue  # its used ids are not all in parts: keep it decoded
            del loaded[account_id]
            if sealed:
                self.sealed[account_id] = sealed
            evicted += 1
        return evicted

    # -- state parts ----------------------------------------------------------------

    def part(self, key: StateKey) -> dict[str, Any] | None:
        kind, name = key
        if kind == "account":
            return self._account_part(name)
        if key == GUARD_KEY:
            return self.guard.part()
        if key == FUND_KEY:
            return self.fund.part()
        if key == OWED_KEY:  # written as {} once done: changelog keys are never deleted
            return self.owed or {}
        if key == LEAVES_KEY:
            return {"next": self.next_leaf}
        if kind == "ids":
            return self.ids.part(key)
        return self.market.part(key)

    def parts(self) -> dict[StateKey, dict[str, Any] | None]:
        """Every part (every account decoded: for replay and tests, not the hot path)."""
        parts = self.market.parts()
        parts.update({("account", a): self._account_part(a) for a in sorted(self.accounts)})
        parts.update(self.ids.parts())
        parts[GUARD_KEY] = self.guard.part()
        if self.fund.seq:
            parts[FUND_KEY] = self.fund.part()
        if self.owed is not None:
            parts[OWED_KEY] = self.owed
        if self.next_leaf != FIRST_LEAF:
            parts[LEAVES_KEY] = {"next": self.next_leaf}
        return parts

    def _account_part(self, account_id: str) -> dict[str, Any]:
        """The account, and the newest chunk of its used ids (core/books/seenids.py)."""
        data = self.accounts[account_id].to_dict()
        newest = self.ids.newest(account_id)
        if newest:
            data["ids"] = newest
        return data

    @classmethod
    def from_parts(
        cls, parts: dict[StateKey, Any], config: EngineConfig | None = None
    ) -> RiskEngine:
        config = config or EngineConfig()
        accounts = {n: Account.from_dict(v) for (k, n), v in parts.items() if k == "account"}
        market = Market.from_parts({key: v for key, v in parts.items() if key[0] in MARKET_KINDS})
        ids = SeenIds.from_parts(
            ((key, v) for key, v in parts.items() if key[0] == "ids"),
            ((n, v["ids"]) for (k, n), v in parts.items() if k == "account" and "ids" in v),
            config.duplicate_retention_ms,
        )
        guard = ReplayGuard.from_part(parts.get(GUARD_KEY))
        fund = InsuranceFund.from_part(parts.get(FUND_KEY))
        return cls(
            config, accounts, market, guard, ids, fund=fund, owed=parts.get(OWED_KEY) or None,
            next_leaf=next_leaf(parts.get(LEAVES_KEY)),
        )  # fmt: skip

    # -- entry point ----------------------------------------------------------------

    def apply(self, envelope: Envelope) -> Outcome:
        return drive(self.steps(envelope))

    def steps(self, envelope: Envelope, owe: bool = False) -> Steps[Outcome]:
        """apply, as a generator that pauses (yields) after each account a market record
        goes through (one with hundreds of positions can take tens of milliseconds), so
        that a shell on an event loop can let its heartbeats and views run in the middle
        of a cascade (it decides which pauses it takes: stream/partition.Pace); its return
        value is the Outcome.

        owe=True: a market record's alerts only; the closing work they call for (closing
        sets issued, withdrawn, re-issued) is left owed (self.owed, a state part) for
        settle(), so that a shell can commit the alerts first. Whatever is owed is done
        before the next record, by settle() or at the start of this method: the outputs,
        and their order, are the same either way."""
        if not self.guard.admits(envelope.source, envelope.offset):
            return Outcome([], replayed=True)
        outputs: list[Output] = []
        changed: set[StateKey] = {GUARD_KEY}
        if self.owed is not None:  # the last record's: its alerts' rows and prices hold
            outputs, changed = yield from self._settle_owed()
            changed.add(GUARD_KEY)
        self._alerted = {}  # a record's own, never an earlier one's
        try:
            record = parse_record(envelope.topic, envelope.value)
            if envelope.topic in ACCOUNT_TOPICS:
                more, touched = self._apply_account_record(envelope, record)
            else:  # its RecordErrors come from the market's checks, before any pause
                more, touched = yield from self._apply_market_record(envelope, record, owe)
        except RecordError as error:
            more, touched = [dead_letter(envelope, str(error))], set()
        return self._outcome(outputs + more, changed | touched)

    def settle(self) -> Steps[Outcome]:
        """Do the closing work a market record applied with owe=True left owed (if any)."""
        if self.owed is None:
            return Outcome([])
        outputs, changed = yield from self._settle_owed()
        return self._outcome(outputs, changed)

    def _outcome(self, outputs: list[Output], changed: set[StateKey]) -> Outcome:
        if self.fund.dirty:
            self.fund.dirty = False
            changed.add(FUND_KEY)
        return Outcome(outputs, changed)

    # -- account records ------------------------------------------------------------

    def _apply_account_record(
        self, envelope: Envelope, record: Any
    ) -> tuple[list[Output], set[StateKey]]:
        if record.account == FUND_ACCOUNT:
            return self._fund_record(envelope, record)
        self._check_placement(envelope, record.account)
        account = self.accounts.get(record.account)
        changed = {("account", record.account)}
        if account is None:
            if not (isinstance(record, TransferRecord) and record.kind == "deposit"):
                raise RecordError(f"unknown account {record.account}: it has made no deposit")
            account = Account(record.account)
        outputs = self.desk.handle(account, record, self._trigger(envelope))
        if account.leaf is None:  # new here: the deposit went through
            account.leaf, self.next_leaf = self.next_leaf, self.next_leaf + 1
            changed.add(LEAVES_KEY)
        self.accounts[account.account_id] = account
        if self.ids.dirty:  # a chunk of used ids sealed or dropped
            changed |= self.ids.take_dirty()
        return outputs, changed

    def _fund_record(self, envelope: Envelope, record: Any) -> tuple[list[Output], set[StateKey]]:
        """Capital for the insurance fund's slice of this partition: a deposit to
        FUND_ACCOUNT, on whichever partition it is produced to (the slice it funds)."""
        if envelope.key != FUND_ACCOUNT:
            raise RecordError(
                f"misrouted: expected key {FUND_ACCOUNT!r}, got key {_show_key(envelope.key)}"
            )
        if not (isinstance(record, TransferRecord) and record.kind == "deposit"):
            raise RecordError(f"the {FUND_ACCOUNT} account takes deposits only")
        if record.transfer_id in self.fund.deposit_ids:
            raise RecordError(f"duplicate transfer_id {record.transfer_id}")
        self.fund.deposit(record.amount, record.transfer_id, record.ts)
        return [], set()

    def _check_placement(self, envelope: Envelope, account: str) -> None:
        """An account record must be keyed by its account, on that key's partition."""
        partitions = self.config.partitions
        expected = None if partitions is None else account_partition(account, partitions)
        if envelope.key == account and (expected is None or expected == envelope.partition):
            return
        where = "" if expected is None else f" on partition {expected}"
        raise RecordError(
            f"misrouted: expected key {account!r}{where}, got key {_show_key(envelope.key)} "
            f"on partition {envelope.partition}"
        )

    # -- market records -------------------------------------------------------------

    def _apply_market_record(
        self, envelope: Envelope, record: MarketRecord, owe: bool
    ) -> Steps[tuple[list[Output], set[StateKey]]]:
        moved = self._apply_to_market(record)
        changed = self.market.take_dirty()
        trigger = self._trigger(envelope)
        if isinstance(record, SettlementRecord):  # rare: its closing work is never owed
            touched, outputs = yield from self._settle_holders(record.symbol, trigger, record.ts)
            owe = False
        else:
            touched, outputs = yield from self._remargin(moved, trigger, record.ts)
        changed.update(("account", account_id) for account_id in touched)
        if not self.view.any_out_of_line(record.ts):
            return outputs, changed
        if owe:
            self.owed = {"trigger": trigger, "ts": record.ts}
            changed.add(OWED_KEY)
            return outputs, changed
        more, settled = yield from self.liquidator.catch_up(trigger, record.ts, self._alerted)
        changed |= settled
        return outputs + more, changed

    def _settle_owed(self) -> Steps[tuple[list[Output], set[StateKey]]]:
        owed = self.owed
        assert owed is not None
        outputs, changed = yield from self.liquidator.catch_up(
            owed["trigger"], owed["ts"], self._alerted
        )
        self.owed, self._alerted = None, {}
        return outputs, changed | {OWED_KEY}

    def _apply_to_market(self, record: MarketRecord) -> set[str]:
        market = self.market
        match record:
            case InstrumentRecord():
                moved = market.apply_instrument(record.instrument)
                self.view.define(record.instrument.symbol, market)
                self.repriced |= moved
                return moved
            case IndexRecord():
                moved = market.apply_index(record)
            case SettlementRecord():
                moved = {market.apply_settlement(record).symbol}
            case MarkRecord():
                moved = market.apply_mark(record)
            case FundingRecord():
                moved = market.apply_funding(record)
            case PortfolioParamsRecord():
                liquidation = self.config.thresholds.liquidation
                if record.params.mm_factor >= liquidation:
                    raise RecordError(
                        f"mm_factor must be below the liquidation threshold {liquidation}: "
                        f"an account using all its available margin would be liquidated "
                        f"at once, got {record.params.mm_factor}"
                    )
                moved = market.apply_portfolio_params(record)
        self.view.refresh(sorted(moved), market)
        if not isinstance(record, PortfolioParamsRecord):  # margins move, values do not
            self.repriced |= moved
        return moved

    def _settle_holders(
        self, symbol: str, trigger: dict[str, Any], ts: int
    ) -> Steps[tuple[set[str], list[Output]]]:
        instrument = self.market.instruments[symbol]
        price = self.market.settlement(symbol)
        assert price is not None
        touched: set[str] = set()
        outputs: list[Output] = []
        liquidator = self.liquidator
        for account_id in sorted(self.view.holders([symbol])):
            account = self.accounts[account_id]
            position = account.positions.get(symbol)
            was_long = position is not None and position.qty > 0
            liquidating = account.level == LIQUIDATION
            account.settle(instrument, price)
            outputs += liquidator.expire(account, symbol, trigger, ts)
            if liquidating:
                ref = f"{account_id}:settlement:{symbol}"
                loss = Loss(symbol, was_long, ref, "settlement", ts)
                outputs += liquidator.settle_deficit(account, loss, trigger)
            rows = risk_rows(account, self.market)
            self.view.sync(account, [symbol], self.market, rows)
            touched.add(account_id)
            outputs += self.desk.level_check(account, trigger, ts, rows)
            outputs += liquidator.go_on(account, rows, trigger, ts)
            yield
        return touched, outputs

    def _remargin(
        self, symbols: set[str], trigger: dict[str, Any], ts: int | None
    ) -> Steps[tuple[set[str], list[Output]]]:
        """The alerts of every account the move takes to another level (the closing work
        they call for is Liquidator.catch_up's). Liquidation alerts carry their positions'
        prices, found for all of them at once (manyprices.py); catch_up's closing sets
        reuse them."""
        market, levels = self.market, self.config.thresholds
        moving = []  # (account, rows, its new level)
        for account_id in sorted(self.view.candidates(sorted(symbols))):
            account = self.accounts[account_id]
            rows = risk_rows(account, market)
            level = levels.level(total(account, rows, market).margin_ratio)
            if level != account.level:
                moving.append((account, rows, level))
            yield
        liquidating = [(a, rows) for a, rows, level in moving if level == LIQUIDATION]
        found = many_position_prices(liquidating, market, levels.liquidation)
        alerted = {a.account_id: (r, p) for (a, r), p in zip(liquidating, found, strict=True)}
        outputs: list[Output] = []
        for account, rows, _ in moving:
            known = alerted.get(account.account_id)
            prices = None if known is None else known[1]
            outputs += self.desk.raise_level(account, trigger, ts, rows, prices)
            yield
        self._alerted = alerted
        return {account.account_id for account, _, _ in moving}, outputs

    @staticmethod
    def _trigger(envelope: Envelope) -> dict[str, Any]:
        return {"topic": envelope.topic, "partition": envelope.partition, "offset": envelope.offset}

    # -- reading --------------------------------------------------------------------

    def account_ids(self) -> list[str]:
        return sorted(self.view.account_ids())

    def partitions(self) -> list[tuple[int | None, RiskEngine]]:
        """Each engine by partition, as what a partition owns whole (its slice of the fund,
        its ranking) is shown: this one (core/shards.py has one per partition)."""
        return [(None, self)]

    def ranking(self, symbol: str) -> list[adl.Ranked]:
        return adl.ranking(self.view, symbol)

    def state_of(self, account: Account) -> dict[str, Any]:
        """The account's state as SPEC section 5 prints it, with its liquidation prices."""
        rows = risk_rows(account, self.market)
        threshold = self.config.thresholds.liquidation
        prices = position_prices(account, self.market, threshold, rows)
        return account_state(account, assess(account, self.market, rows=rows), self.market, prices)
