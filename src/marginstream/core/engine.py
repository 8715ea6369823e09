"""The risk engine: one record in, its outputs and the state it changed out.

Pure and deterministic: no Kafka, no clock, no randomness. The live workers
and `marginstream replay` both drive this class, so a replay is the reference
the live system is checked against.

State is a set of parts, each under a StateKey: one per account, per
instrument, per index, a market head and one per remembered dead letter. An
Outcome names the parts a record changed; a stream shell stores exactly those.

Idempotence: every record arrives with its source position (topic, partition,
offset). An account remembers the last offset it applied per source and the
outputs of its recent records; the market keeps the last offset per source of
market records. A record at or below those offsets changes nothing, returns the
outputs it produced the first time (same ids) and names the parts it touched,
so a shell that re-reads records after a crash re-publishes what may have been
lost and re-writes what may not have reached its changelog, but never re-applies.
Parts may lag one another after a crash (the market saved ahead of an account):
the accounts' side of a market record is idempotent by nature and always runs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from marginstream.core.alerts import Thresholds
from marginstream.core.deadletters import DeadLetterLog, dead_letter
from marginstream.core.envelope import Envelope, Output
from marginstream.core.ledger import Account
from marginstream.core.market import Market, StateKey
from marginstream.core.numbers import RecordError
from marginstream.core.records import (
    ACCOUNT_TOPICS,
    FundingRecord,
    IndexRecord,
    InstrumentRecord,
    MarketRecord,
    MarkRecord,
    SettlementRecord,
    TransferRecord,
    parse_record,
)
from marginstream.core.requests import Desk
from marginstream.core.risk import orders_by_symbol, risk_symbols
from marginstream.core.riskview import RiskView

DAY_MS = 86_400_000
Position = tuple[str, int]  # ("topic:partition", offset)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    thresholds: Thresholds = field(default_factory=Thresholds)
    duplicate_retention_ms: int = 7 * DAY_MS
    # Per account: outputs kept for re-publishing, to cover the records read again after
    # a crash (those after the last committed offset, see forget_committed), at most.
    remembered_records: int = 256
    remembered_dead_letters: int = 1024  # per source partition


# The order a shell must write a record's parts in: a record changes at most one market
# part, and an account may never be saved ahead of the market part it saw change.
PART_ORDER = {"instrument": 0, "index": 0, "deadletter": 1, "account": 2}


@dataclass
class Outcome:
    outputs: list[Output]
    changed: set[StateKey] = field(default_factory=set)  # parts to (re)write
    replayed: bool = False  # applied before: the outputs are the remembered ones

    def parts_in_write_order(self) -> list[StateKey]:
        return sorted(self.changed, key=lambda key: (PART_ORDER[key[0]], key[1]))


class RiskEngine:
    def __init__(
        self,
        config: EngineConfig | None = None,
        accounts: dict[str, Account] | None = None,
        market: Market | None = None,
        dead_letters: DeadLetterLog | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.accounts: dict[str, Account] = accounts if accounts is not None else {}
        self.market = market or Market()
        self.dead_letters = dead_letters or DeadLetterLog(self.config.remembered_dead_letters)
        self.view = RiskView(self.config.thresholds)
        self.desk = Desk(
            self.market, self.view, self.config.thresholds, self.config.duplicate_retention_ms
        )
        # Which accounts remember outputs for a (market) record: derived from accounts.
        self._touched_by: dict[Position, set[str]] = defaultdict(set)
        # Per source, the first offset that may still be read again (set by the shell).
        self._committed: dict[str, int] = {}
        for symbol in sorted(self.market.instruments):
            self.view.define(symbol, self.market)
        for account in self.accounts.values():
            self.view.sync(account, risk_symbols(account, orders_by_symbol(account)), self.market)
            for source, offset, _ in account.recent:
                self._touched_by[(source, offset)].add(account.account_id)

    # -- state parts ----------------------------------------------------------------

    def part(self, key: StateKey) -> dict[str, Any] | None:
        kind, name = key
        if kind == "account":
            return self.accounts[name].to_dict()
        if kind == "deadletter":
            return self.dead_letters.part(name)
        return self.market.part(key)

    def parts(self) -> dict[StateKey, dict[str, Any] | None]:
        parts = self.market.parts()
        parts.update({("account", a): acc.to_dict() for a, acc in self.accounts.items()})
        parts.update({("deadletter", n): v for n, v in self.dead_letters.parts().items()})
        return parts

    @classmethod
    def from_parts(
        cls, parts: dict[StateKey, dict[str, Any]], config: EngineConfig | None = None
    ) -> RiskEngine:
        config = config or EngineConfig()
        accounts = {n: Account.from_dict(v) for (k, n), v in parts.items() if k == "account"}
        market = Market.from_parts(
            {key: v for key, v in parts.items() if key[0] in ("instrument", "index")}
        )
        dead_letters = DeadLetterLog.from_parts(
            {n: v for (k, n), v in parts.items() if k == "deadletter"},
            config.remembered_dead_letters,
        )
        return cls(config, accounts, market, dead_letters)

    # -- entry point ----------------------------------------------------------------

    def apply(self, envelope: Envelope) -> Outcome:
        rejected = self.dead_letters.find(envelope)
        if rejected is not None:  # rejected the first time: stays rejected, same dead letter
            name, letter = rejected
            return Outcome([letter], {("deadletter", name)}, replayed=True)
        try:
            record = parse_record(envelope.topic, envelope.value)
            if envelope.topic in ACCOUNT_TOPICS:
                return self._apply_account_record(envelope, record)  # type: ignore[arg-type]
            return self._apply_market_record(envelope, record)  # type: ignore[arg-type]
        except RecordError as error:
            output = dead_letter(envelope, str(error))
            return Outcome([output], {("deadletter", self.dead_letters.add(envelope, output))})

    # -- account records ------------------------------------------------------------

    def _apply_account_record(self, envelope: Envelope, record: Any) -> Outcome:
        if envelope.key is not None and envelope.key != record.account:
            raise RecordError(f"key {envelope.key!r} does not match account {record.account!r}")
        account = self.accounts.get(record.account)
        if account is None:
            if not (isinstance(record, TransferRecord) and record.kind == "deposit"):
                raise RecordError(f"unknown account {record.account}: it has made no deposit")
            account = Account(record.account)
        key: StateKey = ("account", account.account_id)
        source = f"{envelope.topic}:{envelope.partition}"
        if account.applied.get(source, -1) >= envelope.offset:
            return Outcome(self._remembered(account, source, envelope.offset), {key}, True)
        outputs = self.desk.handle(account, record, self._trigger(envelope))
        self.accounts[account.account_id] = account
        account.applied[source] = envelope.offset
        self._remember(account, source, envelope.offset, outputs)
        return Outcome(outputs, {key})

    # -- market records -------------------------------------------------------------

    def _apply_market_record(self, envelope: Envelope, record: MarketRecord) -> Outcome:
        source = f"{envelope.topic}:{envelope.partition}"
        target = self._part_of(record)
        replayed = self.market.applied_offset(target, source) >= envelope.offset
        if replayed:
            moved = self._affected(record)
        else:
            moved = self._apply_to_market(record)
            self.market.mark_applied(target, source, envelope.offset)
        changed = self.market.take_dirty() | {target}
        trigger = self._trigger(envelope)
        touched: set[str] = set()
        fresh: list[Output] = []
        if replayed and self.market.ahead_of(target, source, envelope.offset):
            # Saved parts are a prefix of the writes, so only the last market record can
            # have reached its market part and not its accounts: for an earlier one there
            # is nothing to redo, and re-margining on a later market would misattribute.
            pass
        elif isinstance(record, SettlementRecord):
            touched, fresh = self._settle_holders(record.symbol, trigger, record.ts)
        else:
            touched, fresh = self._remargin(moved, trigger, record.ts)
        position = (source, envelope.offset)
        outputs = []
        for account_id in sorted(self._touched_by.get(position, ())):  # saved before a crash
            outputs += self._remembered(self.accounts[account_id], *position)
            changed.add(("account", account_id))
        for account_id in sorted(touched):
            mine = [o for o in fresh if o.key == account_id]
            self._remember(self.accounts[account_id], source, envelope.offset, mine)
            changed.add(("account", account_id))
        return Outcome(outputs + fresh, changed, replayed)

    def _apply_to_market(self, record: MarketRecord) -> set[str]:
        market = self.market
        match record:
            case InstrumentRecord():
                moved = market.apply_instrument(record.instrument)
                self.view.define(record.instrument.symbol, market)
                return moved
            case IndexRecord():
                moved = market.apply_index(record)
            case SettlementRecord():
                moved = {market.apply_settlement(record).symbol}
            case MarkRecord():
                moved = market.apply_mark(record)
            case FundingRecord():
                moved = market.apply_funding(record)
        self.view.refresh(sorted(moved), market)
        return moved

    def _affected(self, record: MarketRecord) -> set[str]:
        """What a record moved, when it was already applied to the market."""
        if isinstance(record, InstrumentRecord):
            return {record.instrument.symbol}
        if isinstance(record, IndexRecord):
            return set(self.market.options_on.get(record.underlying, ()))
        return {record.symbol}

    @staticmethod
    def _part_of(record: MarketRecord) -> StateKey:
        """The one market part a record changes (and carries the record's position)."""
        if isinstance(record, IndexRecord):
            return ("index", record.underlying)
        if isinstance(record, InstrumentRecord):
            return ("instrument", record.instrument.symbol)
        return ("instrument", record.symbol)

    def _settle_holders(
        self, symbol: str, trigger: dict[str, Any], ts: int
    ) -> tuple[set[str], list[Output]]:
        instrument = self.market.instruments[symbol]
        price = self.market.settlement(symbol)
        assert price is not None
        touched: set[str] = set()
        outputs: list[Output] = []
        for account_id in sorted(self.view.holders([symbol])):
            account = self.accounts[account_id]
            account.settle(instrument, price)
            self.view.sync(account, [symbol], self.market)
            touched.add(account_id)
            outputs += self.desk.level_check(account, trigger, ts)
        return touched, outputs

    def _remargin(
        self, symbols: set[str], trigger: dict[str, Any], ts: int | None
    ) -> tuple[set[str], list[Output]]:
        touched: set[str] = set()
        outputs: list[Output] = []
        for account_id in sorted(self.view.candidates(sorted(symbols))):
            alerts = self.desk.level_check(self.accounts[account_id], trigger, ts)
            if alerts:
                touched.add(account_id)
                outputs += alerts
        return touched, outputs

    # -- remembering outputs ---------------------------------------------------------

    def forget_committed(self, source: str, offset: int) -> None:
        """Nothing below offset will be read from source again: its outputs need no memory.

        Accounts drop such entries the next time they are written, which keeps a busy
        account's state (and each changelog record of it) small.
        """
        if offset > self._committed.get(source, -1):
            self._committed[source] = offset

    @staticmethod
    def _trigger(envelope: Envelope) -> dict[str, Any]:
        return {"topic": envelope.topic, "partition": envelope.partition, "offset": envelope.offset}

    def _remember(self, account: Account, source: str, offset: int, outputs: list[Output]) -> None:
        account.recent.append([source, offset, [list(o) for o in outputs]])
        self._touched_by[(source, offset)].add(account.account_id)
        committed = self._committed
        keep_from = len(account.recent) - self.config.remembered_records
        kept = []
        for number, entry in enumerate(account.recent):
            entry_source, entry_offset, _ = entry
            if number >= keep_from and entry_offset >= committed.get(entry_source, -1):
                kept.append(entry)
                continue
            holders = self._touched_by.get((entry_source, entry_offset))
            if holders is not None:
                holders.discard(account.account_id)
                if not holders:
                    del self._touched_by[(entry_source, entry_offset)]
        account.recent = kept

    @staticmethod
    def _remembered(account: Account, source: str, offset: int) -> list[Output]:
        for entry_source, entry_offset, outputs in account.recent:
            if entry_source == source and entry_offset == offset:
                return [Output(*o) for o in outputs]
        return []

    # -- reading --------------------------------------------------------------------

    def account_ids(self) -> list[str]:
        return sorted(self.accounts)
