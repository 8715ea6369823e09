"""The risk engine: one record in, its outputs and the state it changed out.

Pure and deterministic: no Kafka, no clock, no randomness. The live workers
and `marginstream replay` both drive this class, so a replay is the reference
the live system is checked against.

Idempotence: every record arrives with its source position (topic, partition,
offset). An account remembers the last offset it applied per source and the
outputs of its recent records; the market does the same for market records.
A record at or below the remembered offset changes nothing and returns the
outputs it produced the first time (same ids), so a stream shell that re-reads
records after a crash re-publishes what may have been lost, never re-applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from marginstream.core.alerts import Thresholds, raise_alert
from marginstream.core.deadletters import DeadLetterLog, dead_letter
from marginstream.core.decisions import decision_value, order_rejection
from marginstream.core.envelope import DECISIONS, LIQUIDATIONS, Envelope, Output
from marginstream.core.ledger import Account, OpenOrder
from marginstream.core.market import Market
from marginstream.core.numbers import RecordError, decimal_text, risk_text
from marginstream.core.records import (
    ACCOUNT_TOPICS,
    CancelRecord,
    FillRecord,
    FundingRecord,
    IndexRecord,
    InstrumentRecord,
    MarketRecord,
    MarkRecord,
    OrderRecord,
    SettlementRecord,
    TransferRecord,
    parse_record,
)
from marginstream.core.risk import assess, orders_by_symbol, risk_symbols
from marginstream.core.riskview import RiskView

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class EngineConfig:
    thresholds: Thresholds = field(default_factory=Thresholds)
    duplicate_retention_ms: int = 7 * DAY_MS
    remembered_records: int = 32  # per account (and for the market): outputs kept for re-publishing
    remembered_dead_letters: int = 1024  # per source partition


@dataclass
class Outcome:
    outputs: list[Output]
    accounts: set[str] = field(default_factory=set)  # accounts whose state must be (re)written
    market: bool = False  # the market state changed
    replayed: bool = False  # already applied before: outputs are the remembered ones
    dead_letters: bool = False  # the dead-letter log changed


class RiskEngine:
    def __init__(
        self,
        config: EngineConfig | None = None,
        accounts: dict[str, Account] | None = None,
        market: Market | None = None,
        dead_letters: DeadLetterLog | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.dead_letters = dead_letters or DeadLetterLog(self.config.remembered_dead_letters)
        self.accounts: dict[str, Account] = accounts if accounts is not None else {}
        self.market = market or Market()
        self.view = RiskView(self.config.thresholds)
        for symbol in sorted(self.market.instruments):
            self.view.define(symbol, self.market)
        for account in self.accounts.values():
            self.view.sync(account, self._symbols_of(account), self.market)

    # -- entry point ----------------------------------------------------------------

    def apply(self, envelope: Envelope) -> Outcome:
        rejected = self.dead_letters.find(envelope)
        if rejected is not None:  # rejected the first time: stays rejected, same dead letter
            return Outcome([rejected], replayed=True)
        try:
            record = parse_record(envelope.topic, envelope.value)
            if envelope.topic in ACCOUNT_TOPICS:
                return self._apply_account_record(envelope, record)  # type: ignore[arg-type]
            return self._apply_market_record(envelope, record)  # type: ignore[arg-type]
        except RecordError as error:
            output = dead_letter(envelope, str(error))
            self.dead_letters.add(envelope, output)
            return Outcome([output], dead_letters=True)

    # -- account records ------------------------------------------------------------

    def _apply_account_record(
        self, envelope: Envelope, record: OrderRecord | CancelRecord | FillRecord | TransferRecord
    ) -> Outcome:
        if envelope.key is not None and envelope.key != record.account:
            raise RecordError(f"key {envelope.key!r} does not match account {record.account!r}")
        account = self.accounts.get(record.account)
        if account is None:
            if not (isinstance(record, TransferRecord) and record.kind == "deposit"):
                raise RecordError(f"unknown account {record.account}: it has made no deposit")
            account = Account(record.account)
        source = f"{envelope.topic}:{envelope.partition}"
        if account.applied.get(source, -1) >= envelope.offset:
            outputs = self._remembered(account, source, envelope.offset)
            return Outcome(outputs, {account.account_id}, replayed=True)
        trigger = {
            "topic": envelope.topic,
            "partition": envelope.partition,
            "offset": envelope.offset,
        }
        try:
            match record:
                case OrderRecord():
                    outputs = self._order(account, record)
                case CancelRecord():
                    outputs = self._cancel(account, record)
                case FillRecord():
                    outputs = self._fill(account, record, trigger)
                case TransferRecord(kind="deposit"):
                    outputs = self._deposit(account, record, trigger)
                case _:
                    outputs = self._withdrawal(account, record, trigger)
        except RecordError as error:
            return Outcome([dead_letter(envelope, str(error))])
        self.accounts[account.account_id] = account
        account.applied[source] = envelope.offset
        self._remember(account, source, envelope.offset, outputs)
        return Outcome(outputs, {account.account_id})

    def _order(self, account: Account, order: OrderRecord) -> list[Output]:
        before = assess(account, self.market)
        after = before
        reason = order_rejection(account, order, self.market)
        if reason is None and not order.reduce_only:
            pending = OpenOrder(
                order.order_id, order.symbol, order.side, order.qty, order.price, False, order.ts
            )
            after = assess(account, self.market, extra_order=pending)
            if after.available < 0:
                reason = (
                    f"insufficient margin: available {risk_text(before.available)}, "
                    f"{risk_text(after.available)} after reserving for the order"
                )
        if reason is None:
            account.add_order(order)
            self.view.sync(account, [order.symbol], self.market)
        else:
            after = before
        decision = decision_value(
            account, "order", order.order_id, reason, before.available, after.available, order.ts
        )
        return [Output(DECISIONS, account.account_id, decision)]

    def _cancel(self, account: Account, cancel: CancelRecord) -> list[Output]:
        before = assess(account, self.market)
        order = account.orders.get(cancel.order_id)
        reason = None if order is not None else f"unknown order {cancel.order_id}"
        available_after = before.available
        if order is not None:
            del account.orders[cancel.order_id]
            self.view.sync(account, [order.symbol], self.market)
            available_after = assess(account, self.market).available
        decision = decision_value(
            account, "cancel", cancel.order_id, reason, before.available, available_after, cancel.ts
        )
        return [Output(DECISIONS, account.account_id, decision)]

    def _fill(self, account: Account, fill: FillRecord, trigger: dict[str, Any]) -> list[Output]:
        if fill.fill_id in account.fills_seen:
            raise RecordError(f"duplicate fill_id {fill.fill_id}")
        instrument = self.market.instrument(fill.symbol)
        if fill.symbol in self.market.settlement:
            raise RecordError(f"instrument {fill.symbol} is settled: no fill can follow")
        account.apply_fill(fill, instrument, self.market.funding(fill.symbol))
        Account.remember_id(
            account.fills_seen, fill.fill_id, fill.ts, self.config.duplicate_retention_ms
        )
        self.view.sync(account, [fill.symbol], self.market)
        return self._level_check(account, trigger, fill.ts)

    def _deposit(
        self, account: Account, deposit: TransferRecord, trigger: dict[str, Any]
    ) -> list[Output]:
        self._check_new_transfer(account, deposit)
        account.deposit(deposit.amount)
        self._remember_transfer(account, deposit)
        self.view.sync(account, [], self.market)
        return self._level_check(account, trigger, deposit.ts)

    def _withdrawal(
        self, account: Account, withdrawal: TransferRecord, trigger: dict[str, Any]
    ) -> list[Output]:
        self._check_new_transfer(account, withdrawal)
        before = assess(account, self.market)
        amount = withdrawal.amount
        reason = None
        if before.cash < amount:
            reason = f"insufficient cash: {decimal_text(before.cash)} < {decimal_text(amount)}"
        elif before.available - float(amount) < 0:
            available = risk_text(before.available)
            reason = f"insufficient margin: available {available} < {decimal_text(amount)}"
        self._remember_transfer(account, withdrawal)
        available_after = before.available
        outputs = []
        if reason is None:
            account.withdraw(amount)
            self.view.sync(account, [], self.market)
            available_after = assess(account, self.market).available
        decision = decision_value(
            account,
            "withdrawal",
            withdrawal.transfer_id,
            reason,
            before.available,
            available_after,
            withdrawal.ts,
        )
        outputs.append(Output(DECISIONS, account.account_id, decision))
        if reason is None:
            outputs.extend(self._level_check(account, trigger, withdrawal.ts))
        return outputs

    def _check_new_transfer(self, account: Account, transfer: TransferRecord) -> None:
        if transfer.transfer_id in account.transfers_seen:
            raise RecordError(f"duplicate transfer_id {transfer.transfer_id}")

    def _remember_transfer(self, account: Account, transfer: TransferRecord) -> None:
        Account.remember_id(
            account.transfers_seen,
            transfer.transfer_id,
            transfer.ts,
            self.config.duplicate_retention_ms,
        )

    # -- market records -------------------------------------------------------------

    def _apply_market_record(self, envelope: Envelope, record: MarketRecord) -> Outcome:
        source = f"{envelope.topic}:{envelope.partition}"
        replayed = self.market.applied.get(source, -1) >= envelope.offset
        moved = self._affected(record) if replayed else self._apply_to_market(record)
        if not replayed:
            self.market.applied[source] = envelope.offset
        trigger = {
            "topic": envelope.topic,
            "partition": envelope.partition,
            "offset": envelope.offset,
        }
        ts = record.ts
        # The accounts' part is idempotent by nature, so it always runs: after a crash an
        # account can lag behind a market state that was saved ahead of it.
        if isinstance(record, SettlementRecord):
            touched, fresh = self._settle_holders(record.symbol, trigger, ts)
        else:
            touched, fresh = self._remargin(moved, trigger, ts)
        outputs = self._remembered_market(source, envelope.offset) if replayed else []
        outputs += fresh
        alerted = sorted({o.key for o in fresh if o.key is not None})
        if alerted:
            self.market.alerted.append([source, envelope.offset, alerted])
            del self.market.alerted[: -self.config.remembered_records]
        for account_id in alerted:
            mine = [o for o in fresh if o.key == account_id]
            self._remember(self.accounts[account_id], source, envelope.offset, mine)
        return Outcome(outputs, touched, market=not replayed or bool(alerted), replayed=replayed)

    def _apply_to_market(self, record: MarketRecord) -> set[str]:
        market = self.market
        match record:
            case InstrumentRecord():
                moved = market.apply_instrument(record.instrument)
                self.view.define(record.instrument.symbol, market)
                return moved
            case IndexRecord():
                moved = market.apply_index(record)
            case MarkRecord():
                moved = market.apply_mark(record)
            case FundingRecord():
                moved = market.apply_funding(record)
            case _:
                moved = {market.apply_settlement(record).symbol}
        self.view.refresh(sorted(moved), market)
        return moved

    def _affected(self, record: MarketRecord) -> set[str]:
        """What a record moved, when it was already applied to the market."""
        match record:
            case InstrumentRecord():
                return {record.instrument.symbol}
            case IndexRecord():
                return set(self.market.options_on.get(record.underlying, ()))
            case _:
                return {record.symbol}

    def _settle_holders(
        self, symbol: str, trigger: dict[str, Any], ts: int
    ) -> tuple[set[str], list[Output]]:
        instrument = self.market.instruments[symbol]
        price = self.market.settlement[symbol]
        touched: set[str] = set()
        outputs: list[Output] = []
        for account_id in sorted(self.view.holders([symbol])):
            account = self.accounts[account_id]
            account.settle(instrument, price)
            self.view.sync(account, [symbol], self.market)
            touched.add(account_id)
            outputs.extend(self._level_check(account, trigger, ts))
        return touched, outputs

    def _remargin(
        self, symbols: set[str], trigger: dict[str, Any], ts: int | None
    ) -> tuple[set[str], list[Output]]:
        touched: set[str] = set()
        outputs: list[Output] = []
        for account_id in sorted(self.view.candidates(sorted(symbols))):
            alerts = self._level_check(self.accounts[account_id], trigger, ts)
            if alerts:
                touched.add(account_id)
                outputs.extend(alerts)
        return touched, outputs

    # -- shared ---------------------------------------------------------------------

    def _level_check(
        self, account: Account, trigger: dict[str, Any], ts: int | None
    ) -> list[Output]:
        risk = assess(account, self.market)
        alert = raise_alert(account, risk, self.config.thresholds, trigger, ts)
        if alert is None:
            return []
        self.view.set_level(account.account_id, account.level)
        return [Output(LIQUIDATIONS, account.account_id, alert)]

    def _symbols_of(self, account: Account) -> list[str]:
        return risk_symbols(account, orders_by_symbol(account))

    def _remember(self, account: Account, source: str, offset: int, outputs: list[Output]) -> None:
        account.recent.append([source, offset, [list(o) for o in outputs]])
        del account.recent[: -self.config.remembered_records]

    def _remembered(self, account: Account, source: str, offset: int) -> list[Output]:
        for entry_source, entry_offset, outputs in account.recent:
            if entry_source == source and entry_offset == offset:
                return [Output(*o) for o in outputs]
        return []

    def _remembered_market(self, source: str, offset: int) -> list[Output]:
        """The alerts a market record raised the first time it was applied."""
        outputs: list[Output] = []
        for entry_source, entry_offset, account_ids in self.market.alerted:
            if entry_source == source and entry_offset == offset:
                for account_id in account_ids:
                    outputs.extend(self._remembered(self.accounts[account_id], source, offset))
        return outputs

    # -- reading --------------------------------------------------------------------

    def account_ids(self) -> list[str]:
        return sorted(self.accounts)
