"""The account side of the engine: orders, cancels, fills, deposits and withdrawals.

Every handler validates before it changes anything: a RecordError it raises
leaves the account as it was, and the engine turns it into a dead letter.
"""

from __future__ import annotations

from typing import Any

from marginstream.core.books.ledger import Account, OpenOrder
from marginstream.core.books.seenids import SeenIds
from marginstream.core.inputs.envelope import DECISIONS, LIQUIDATIONS, Output
from marginstream.core.inputs.numbers import RecordError, decimal_text, risk_text
from marginstream.core.inputs.records import (
    CancelRecord,
    FillRecord,
    MarginModeRecord,
    OrderRecord,
    TransferRecord,
)
from marginstream.core.liquidation.closeout import Close, after_closing
from marginstream.core.liquidation.desk import Liquidator
from marginstream.core.liquidation.prices import PositionPrices, position_prices
from marginstream.core.outputs.alerts import LIQUIDATION, Thresholds, raise_alert
from marginstream.core.outputs.decisions import decision_value, order_rejection
from marginstream.core.outputs.reports import add_prices
from marginstream.core.risk.figures import (
    MarginFigures,
    Rows,
    cash_with_funding,
    figures,
    open_positions,
    risk_rows,
    total,
    with_order,
)
from marginstream.core.risk.market import Market
from marginstream.core.risk.view import RiskView


class Desk:
    """Applies account records to the ledger, keeping the risk view in step."""

    def __init__(
        self,
        market: Market,
        view: RiskView,
        thresholds: Thresholds,
        ids: SeenIds,
        max_open_orders: int,
        liquidator: Liquidator,
    ) -> None:
        self.market = market
        self.view = view
        self.thresholds = thresholds
        self.ids = ids
        self.max_open_orders = max_open_orders
        self.liquidator = liquidator

    def handle(
        self,
        account: Account,
        record: OrderRecord | CancelRecord | FillRecord | TransferRecord | MarginModeRecord,
        trigger: dict[str, Any],
    ) -> list[Output]:
        match record:
            case OrderRecord():
                return self.order(account, record)
            case CancelRecord():
                return self.cancel(account, record)
            case FillRecord():
                return self.fill(account, record, trigger)
            case TransferRecord(kind="deposit"):
                return self.deposit(account, record, trigger)
            case MarginModeRecord():
                return self.margin_mode(account, record, trigger)
            case _:
                return self.withdrawal(account, record, trigger)

    def level_check(
        self, account: Account, trigger: dict[str, Any], ts: int | None, rows: Rows | None = None
    ) -> list[Output]:
        """The alert due if the account's figures (from its current rows) put it at a new
        level, and the closing work it calls for at once (Liquidator.on_level)."""
        if rows is None:
            rows = risk_rows(account, self.market)
        level = self.thresholds.level(total(account, rows, self.market).margin_ratio)
        if level == account.level:
            return []
        prices = None
        if level == LIQUIDATION:
            prices = position_prices(account, self.market, self.thresholds.liquidation, rows)
        outputs = self.raise_level(account, trigger, ts, rows, prices)
        kind = outputs[0].value["type"]
        return outputs + self.liquidator.on_level(account, kind, rows, trigger, ts, prices)

    def raise_level(
        self,
        account: Account,
        trigger: dict[str, Any],
        ts: int | None,
        rows: Rows,
        prices: dict[str, PositionPrices] | None,
    ) -> list[Output]:
        """The alert of an account whose figures put it at a new level (prices: its
        positions', for a liquidation alert); the account moves to that level. An account
        that enters liquidation counts its closing sets from this alert (book.set_id)."""
        sums = total(account, rows, self.market)
        positions = open_positions(rows)  # assess's, without the Greeks
        alert = raise_alert(account, sums, positions, self.thresholds, trigger, ts)
        assert alert is not None
        if alert["type"] == LIQUIDATION:
            assert prices is not None
            add_prices(alert["positions"], prices)
            if account.liquidation is None:
                account.liquidation_seq = 0
        self.view.set_level(account.account_id, account.level)
        return [Output(LIQUIDATIONS, account.account_id, alert)]

    # -- requests -------------------------------------------------------------------

    def order(self, account: Account, order: OrderRecord) -> list[Output]:
        rows = risk_rows(account, self.market)
        before = after = total(account, rows, self.market)
        reason = order_rejection(account, order, self.market, self.max_open_orders)
        rows_after = pending = None
        if reason is None and not order.reduce_only:
            pending = OpenOrder(
                order.order_id, order.symbol, order.side, order.qty, order.price, False, order.ts
            )
            rows_after = with_order(rows, account, self.market, pending)
            after = total(account, rows_after, self.market)
            if after.available < 0:
                reason = (
                    f"insufficient margin: available {risk_text(before.available)}, "
                    f"{risk_text(after.available)} after reserving for the order"
                )
        if reason is None and order.reduce_only and account.portfolio:
            reason = self._unhedging(account, order, rows, before)
        if reason is None:
            if pending is None:  # reduce-only: it reserves no margin
                account.add_order(order)
            else:  # the order rows_after were computed with: they are the account's rows
                account.orders[order.order_id] = pending
            self.view.sync(account, [order.symbol], self.market, rows_after)
        else:
            after = before
        decision = decision_value(
            account, "order", order.order_id, reason, before.available, after.available, order.ts
        )
        return [Output(DECISIONS, account.account_id, decision)]

    def _unhedging(
        self, account: Account, order: OrderRecord, rows: Rows, before: MarginFigures
    ) -> str | None:
        """Why a portfolio account's reduce-only order must be refused: on the grid,
        closing a hedge's leg raises the margin, so the order is judged as filled at its
        price. Refused only if that leaves the account short of initial margin, and
        shorter than it is now (reducing an outright position never is)."""
        close = Close(order.symbol, order.side, order.qty, order.price, None)
        filled = after_closing(account, self.market, rows, [close]).available
        if filled < 0 and filled < before.available:
            return (
                f"insufficient margin: available {risk_text(before.available)}, "
                f"{risk_text(filled)} once the reduce-only order fills (it takes away a hedge)"
            )
        return None

    def cancel(self, account: Account, cancel: CancelRecord) -> list[Output]:
        before = figures(account, self.market)
        order = account.orders.get(cancel.order_id)
        reason = None if order is not None else f"unknown order {cancel.order_id}"
        available_after = before.available
        if order is not None:
            del account.orders[cancel.order_id]
            self.view.sync(account, [order.symbol], self.market)
            available_after = figures(account, self.market).available
        decision = decision_value(
            account, "cancel", cancel.order_id, reason, before.available, available_after, cancel.ts
        )
        return [Output(DECISIONS, account.account_id, decision)]

    def fill(self, account: Account, fill: FillRecord, trigger: dict[str, Any]) -> list[Output]:
        self._check_new_id(account, "fill", fill.fill_id, fill.ts)
        instrument = self.market.instrument(fill.symbol)
        quote = self.market.quotes[fill.symbol]  # its settlement and funding, in one look-up
        if quote.settlement is not None:
            raise RecordError(f"instrument {fill.symbol} is settled: no fill can follow")
        liquidating = account.level == LIQUIDATION
        booked, to_fund = self.liquidator.book(account, fill, instrument.contract_size)
        for part in booked:
            account.apply_fill(part, instrument, quote.funding)
        self._remember_id(account, "fill", fill.fill_id, fill.ts)
        outputs = self.liquidator.settle(account, fill, to_fund, liquidating, trigger)
        rows = risk_rows(account, self.market)
        self.view.sync(account, [fill.symbol], self.market, rows)
        outputs += self.level_check(account, trigger, fill.ts, rows)
        return outputs + self.liquidator.go_on(account, rows, trigger, fill.ts)

    def deposit(
        self, account: Account, deposit: TransferRecord, trigger: dict[str, Any]
    ) -> list[Output]:
        self._check_new_id(account, "transfer", deposit.transfer_id, deposit.ts)
        account.deposit(deposit.amount)
        self._remember_id(account, "transfer", deposit.transfer_id, deposit.ts)
        self.view.sync(account, [], self.market)
        return self.level_check(account, trigger, deposit.ts)

    def withdrawal(
        self, account: Account, withdrawal: TransferRecord, trigger: dict[str, Any]
    ) -> list[Output]:
        self._check_new_id(account, "transfer", withdrawal.transfer_id, withdrawal.ts)
        before = figures(account, self.market)
        cash = cash_with_funding(account, self.market)
        amount = withdrawal.amount
        reason = None
        if cash < amount:
            reason = f"insufficient cash: {decimal_text(cash)} < {decimal_text(amount)}"
        elif before.available - float(amount) < 0:
            available = risk_text(before.available)
            reason = f"insufficient margin: available {available} < {decimal_text(amount)}"
        self._remember_id(account, "transfer", withdrawal.transfer_id, withdrawal.ts)
        available_after = before.available
        if reason is None:
            account.withdraw(amount)
            self.view.sync(account, [], self.market)
            available_after = figures(account, self.market).available
        decision = decision_value(
            account, "withdrawal", withdrawal.transfer_id, reason,
            before.available, available_after, withdrawal.ts,
        )  # fmt: skip
        outputs = [Output(DECISIONS, account.account_id, decision)]
        if reason is None:
            outputs += self.level_check(account, trigger, withdrawal.ts)
        return outputs

    def margin_mode(
        self, account: Account, record: MarginModeRecord, trigger: dict[str, Any]
    ) -> list[Output]:
        """Switch the account to another margin model, unless that would leave it below
        the new model's initial margin, or it is in liquidation (its closing work was
        planned on its model). Choosing the model it has already is accepted, and changes
        nothing. Its transfer_id is one of its transfer ids (a repeat is a dead letter)."""
        self._check_new_id(account, "transfer", record.transfer_id, record.ts)
        rows = risk_rows(account, self.market)
        before = after = total(account, rows, self.market)
        reason = None
        was = account.margin
        if record.mode != was:
            if account.level == LIQUIDATION or account.liquidation is not None:
                reason = f"the account is in liquidation: it keeps {was} margin until it recovers"
            else:
                account.margin = record.mode
                after = total(account, rows, self.market)
                if after.available < 0:
                    available, mode = risk_text(after.available), record.mode
                    reason = f"insufficient margin: available {available} under {mode} margin"
                    account.margin, after = was, before
        self._remember_id(account, "transfer", record.transfer_id, record.ts)
        changed = account.margin != was
        if changed:
            self.view.sync(account, rows, self.market, rows)
        decision = decision_value(
            account, "margin_mode", record.transfer_id, reason,
            before.available, after.available, record.ts,
        )  # fmt: skip
        outputs = [Output(DECISIONS, account.account_id, decision)]
        if changed:
            outputs += self.level_check(account, trigger, record.ts, rows)
        return outputs

    # -- used ids (core/books/seenids.py) ----------------------------------------------------

    def _check_new_id(self, account: Account, kind: str, identifier: str, ts: int) -> None:
        if self.ids.seen(account.account_id, kind, identifier, ts):
            raise RecordError(f"duplicate {kind}_id {identifier}")

    def _remember_id(self, account: Account, kind: str, identifier: str, ts: int) -> None:
        self.ids.remember(account.account_id, kind, identifier, ts, self.market.clock())
