"""The life of an account's liquidation, record by record, for the engine.

- The alert that moves an account to `liquidation` issues a set of closing orders
  (closeout.py) on `liquidation-orders`, unless one is open: never two at once.
- A fill naming one of the set's orders is booked at that order's price; the fill's
  difference from it (better: a surplus, worse: a shortfall) goes to the insurance fund.
  A set whose orders have all filled is done; if the account is still in liquidation, the
  next set is issued at once.
- A fill or a settlement that leaves an account in liquidation with no position and
  negative cash moves the deficit to the fund; what the fund cannot cover is published as
  an `adl` record. A settlement cancels the set's orders on the settled instrument.
- A set still open when a market record's time (event time) passes its deadline is
  cancelled and re-issued, sized afresh, with new ids. A set issued on a record without a
  time (an instrument's) takes its deadline from the next market record that has one.
- An account that leaves `liquidation` has its open set cancelled.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from marginstream.core.books.ledger import HEALTHY, Account
from marginstream.core.delivery.parts import StateKey
from marginstream.core.inputs.envelope import LIQUIDATION_ORDERS, Output
from marginstream.core.inputs.numbers import ZERO, decimal_text, exact, risk_text
from marginstream.core.inputs.records import FillRecord
from marginstream.core.liquidation import adl
from marginstream.core.liquidation.book import LiquidationOrder, LiquidationSet, id_name, set_id
from marginstream.core.liquidation.closeout import Closeout, LiquidationPolicy, plan
from marginstream.core.liquidation.fund import DEFICIT, SHORTFALL, InsuranceFund
from marginstream.core.liquidation.manyprices import many_position_prices
from marginstream.core.liquidation.prices import PositionPrices
from marginstream.core.outputs.alerts import LIQUIDATION, RECOVERED, Thresholds
from marginstream.core.risk.figures import MarginFigures, Rows, risk_rows
from marginstream.core.risk.market import Market
from marginstream.core.risk.view import RiskView

UNTIMED = -1  # the deadline of a set issued on a record without a time (an instrument)
# What catch_up does to an account's set (else: cancel it, for the account's new level).
ISSUE, TIMED, REISSUE = "issue", "timed", "reissue"
_PLANNED = (ISSUE, REISSUE)  # the ones that size a new set


class Loss(NamedTuple):
    """Where a loss for the fund comes from: the position closed, and by what."""

    symbol: str
    closed_long: bool
    ref: str  # the fund's history names it
    event: str  # the adl record's id ends with it: a fill id, or "settlement"
    ts: int


class Liquidator:
    def __init__(
        self,
        market: Market,
        view: RiskView,
        thresholds: Thresholds,
        policy: LiquidationPolicy,
        fund: InsuranceFund,
        accounts: Mapping[str, Account],
    ) -> None:
        self.market, self.view, self.thresholds = market, view, thresholds
        self.policy, self.fund, self.accounts = policy, fund, accounts
        target = policy.target_ratio
        self.target = thresholds.margin_call if target is None else target

    # -- levels ---------------------------------------------------------------------

    def on_level(
        self,
        account: Account,
        kind: str,
        rows: Rows,
        trigger: dict[str, Any],
        ts: int | None,
        prices: dict[str, PositionPrices] | None = None,
    ) -> list[Output]:
        """After the alert of kind: a set to issue, or one to cancel. prices: the
        positions' (the alert's), when known."""
        if kind == LIQUIDATION:
            if account.liquidation:
                return []
            return self._issue(account, rows, trigger, ts, None, prices=prices)
        if account.liquidation is not None:  # out of liquidation: kind says to what
            return self._withdraw(account, kind, trigger, ts)
        return []

    def go_on(
        self, account: Account, rows: Rows, trigger: dict[str, Any], ts: int | None
    ) -> list[Output]:
        """After a fill: an account still in liquidation whose set is done gets the next."""
        if account.level != LIQUIDATION or account.liquidation is not None:
            return []
        return self._issue(account, rows, trigger, ts, None)

    def catch_up(
        self,
        trigger: dict[str, Any],
        ts: int | None,
        known: Mapping[str, tuple[Rows, dict[str, PositionPrices]]] | None = None,
    ) -> Generator[None, None, tuple[list[Output], set[StateKey]]]:
        """After a market record's alerts: every account whose closing set is out of line
        with its level, or past its deadline at ts (the record's time; None: an
        instrument's, which tells no time), brought in line, in the order of the accounts:

        - one in liquidation with no set open gets one (after its alert, or in a state of an
          earlier version);
        - one out of liquidation with a set open has it cancelled (reason: its level);
        - a set past its deadline is cancelled and re-issued, sized afresh, with new ids
          (one issued on a record without a time takes its deadline from ts).

        Closing sets are sized on the accounts' rows and priced with their positions'
        prices: known (the alerts' of this record: nothing has changed them since), or
        found for all the sets at once (manyprices.py). Pauses (yields,
        RiskEngine.steps) after each account."""
        due: list[tuple[Account, str]] = []
        for account_id in self.view.out_of_line(ts):
            account = self.accounts[account_id]
            previous = account.liquidation
            if account.level != LIQUIDATION:
                if previous is None:  # the view was behind the account: in step again
                    self.view.set_deadline(account_id, None)
                else:
                    due.append((account, RECOVERED if account.level == HEALTHY else account.level))
            elif previous is None:
                due.append((account, ISSUE))
            elif previous.deadline == UNTIMED and ts is not None:
                due.append((account, TIMED))
            else:
                due.append((account, REISSUE))
            yield
        known = known or {}
        planned = [a.account_id for a, what in due if what in _PLANNED]
        rows = {i: known[i][0] if i in known else risk_rows(self.accounts[i], self.market)
                for i in planned}  # fmt: skip
        prices = {i: known[i][1] for i in planned if i in known}
        unpriced = [(self.accounts[i], rows[i]) for i in planned if i not in prices]
        found = many_position_prices(unpriced, self.market, self.thresholds.liquidation)
        prices.update((a.account_id, p) for (a, _), p in zip(unpriced, found, strict=True))
        outputs: list[Output] = []
        touched: set[StateKey] = set()
        for account, what in due:
            account_id = account.account_id
            touched.add(("account", account_id))
            previous = account.liquidation
            if what == ISSUE:
                outputs += self._issue(account, rows[account_id], trigger, ts, None,
                                       prices=prices[account_id])  # fmt: skip
            elif what == TIMED:  # issued on a record without a time: from now
                assert previous is not None and ts is not None
                previous.deadline = ts + self.policy.reissue_after_ms
                self.view.set_deadline(account_id, previous.deadline)
            elif what == REISSUE:
                assert previous is not None
                outputs += self._withdraw(account, "reissued", trigger, ts)
                outputs += self._issue(account, rows[account_id], trigger, ts, previous.id,
                                       previous.alert_id, prices[account_id])  # fmt: skip
            else:  # out of liquidation: `what` is its alert's type
                outputs += self._withdraw(account, what, trigger, ts)
            yield
        return outputs, touched

    def expire(
        self, account: Account, symbol: str, trigger: dict[str, Any], ts: int | None
    ) -> list[Output]:
        """symbol has settled: the open set's orders on it can never fill (cancelled,
        "settled"); a set left empty is done."""
        open_set = account.liquidation
        if open_set is None:
            return []
        void = [order_id for order_id, o in open_set.orders.items() if o.symbol == symbol]
        if not void:
            return []
        outputs = self._cancels(account, open_set, void, "settled", trigger, ts)
        for order_id in void:
            del open_set.orders[order_id]
        if not open_set.orders:
            self._done(account)
        return outputs

    # -- fills ----------------------------------------------------------------------

    def book(
        self, account: Account, fill: FillRecord, size: Decimal
    ) -> tuple[list[FillRecord], Decimal | None]:
        """The fills to book for fill, and the fund's part (None: not a liquidation fill).

        The part of a fill within its liquidation order's remaining quantity is booked at
        the order's price; any excess, at the fill's own."""
        open_set = account.liquidation
        order = open_set.orders.get(fill.order_id) if open_set and fill.order_id else None
        if order is None or order.symbol != fill.symbol or order.side != fill.side:
            return [fill], None
        assert open_set is not None
        part, difference = _liquidation_part(fill, order, size)
        booked = [fill._replace(qty=part, price=order.price, order_id=None)]
        if fill.qty > part:
            booked.append(fill._replace(qty=fill.qty - part, fee=ZERO, order_id=None))
        order.qty -= part
        if not order.qty:
            del open_set.orders[order.order_id]
        if not open_set.orders:  # every order filled: the set is done
            self._done(account)
        return booked, difference

    def settle(
        self,
        account: Account,
        fill: FillRecord,
        to_fund: Decimal | None,
        liquidating: bool,
        trigger: dict[str, Any],
    ) -> list[Output]:
        """After a fill is booked: the fund's part of a liquidation fill (a surplus paid in,
        a shortfall paid out), then the deficit of an account in liquidation left with no
        position and negative cash (its cash back to zero). What the fund cannot pay is
        published for auto-deleveraging."""
        outputs: list[Output] = []
        loss = Loss(fill.symbol, fill.side == "sell", _ref(account, fill), fill.fill_id, fill.ts)
        if to_fund is not None and to_fund > 0:
            self.fund.receive(to_fund, account.account_id, loss.ref, fill.ts)
        elif to_fund is not None and to_fund < 0:
            outputs += self._cover(account, loss, -to_fund, SHORTFALL, trigger)
        if liquidating or to_fund is not None:
            outputs += self.settle_deficit(account, loss, trigger)
        return outputs

    def settle_deficit(self, account: Account, loss: Loss, trigger: dict[str, Any]) -> list[Output]:
        """An account in liquidation left with no position and negative cash (by a fill or
        a settlement) hands its deficit to the fund: its cash back to zero, exactly."""
        if account.positions or account.cash >= 0:
            return []
        deficit = -account.cash
        account.deposit(deficit)
        return self._cover(account, loss, deficit, DEFICIT, trigger)

    def _cover(
        self,
        account: Account,
        loss: Loss,
        amount: Decimal,
        kind: str,
        trigger: dict[str, Any],
    ) -> list[Output]:
        uncovered = self.fund.cover(amount, kind, account.account_id, loss.ref, loss.ts)
        if not uncovered:
            return []
        side = "short" if loss.closed_long else "long"  # opposite to the closed position
        ranked = adl.ranking(self.view, loss.symbol)
        chosen, short_by = adl.deleverage(
            ranked, self.accounts, loss.symbol, side, float(uncovered), self.policy.lot
        )
        value = {
            "type": "adl",
            "adl_id": f"{id_name(account.account_id)}:adl:{kind}:{loss.event}",
            "account": account.account_id,
            "symbol": loss.symbol,
            "side": side,
            "loss": kind,
            "amount": decimal_text(amount),
            "uncovered": decimal_text(uncovered),
            "positions": [
                {**adl.shown(entry, self.accounts, loss.symbol), "reduce_by": decimal_text(qty)}
                for entry, qty in chosen
            ],
            "not_covered_by_profit": risk_text(short_by),
            "trigger": trigger,
            "ts": loss.ts,
        }
        return [Output(LIQUIDATION_ORDERS, account.account_id, value)]

    # -- sets -----------------------------------------------------------------------

    def plan(
        self,
        account: Account,
        rows: Rows | None = None,
        prices: dict[str, PositionPrices] | None = None,
    ) -> Closeout:
        threshold = self.thresholds.liquidation
        return plan(account, self.market, self.policy, threshold, self.target, rows, prices)

    def _issue(
        self,
        account: Account,
        rows: Rows,
        trigger: dict[str, Any],
        ts: int | None,
        replaces: str | None,
        alert_id: str | None = None,
        prices: dict[str, PositionPrices] | None = None,
    ) -> list[Output]:
        closeout = self.plan(account, rows, prices)
        if not closeout.closes:
            return []  # nothing that carries maintenance margin: nothing to close
        account_id = account.account_id
        account.liquidation_seq += 1
        identifier = set_id(account_id, account.alert_seq, account.liquidation_seq)
        # A record without a time (an instrument): the deadline is set by the next that has.
        now = self.market.clock() if ts is None else ts
        deadline = UNTIMED if ts is None else ts + self.policy.reissue_after_ms
        if alert_id is None:  # the alert that moved it to liquidation: its last
            alert_id = f"{account_id}:alert:{account.alert_seq}"
        figures = {
            "before": _figures(closeout.before),
            "after": _figures(closeout.after),
            "target_ratio": risk_text(self.target),
            "reaches_target": closeout.reaches_target,
        }
        orders = {}
        outputs = []
        for k, close in enumerate(closeout.closes, start=1):
            order_id = f"{identifier}:{k}"
            orders[order_id] = LiquidationOrder(
                order_id, close.symbol, close.side, close.qty, close.price
            )
            value = {
                "type": "liquidation_order",
                "order_id": order_id,
                "set_id": identifier,
                "account": account_id,
                "symbol": close.symbol,
                "side": close.side,
                "qty": decimal_text(close.qty),
                "price": decimal_text(close.price),
                "reduce_only": True,
                "bankruptcy_price": _price(close.bankruptcy_price),
                "alert_id": alert_id,
                "replaces": replaces,
                "deadline": None if deadline == UNTIMED else deadline,
                **figures,
                "trigger": trigger,
                "ts": ts,
            }
            outputs.append(Output(LIQUIDATION_ORDERS, account_id, value))
        account.liquidation = LiquidationSet(identifier, alert_id, now, deadline, orders)
        self.view.set_deadline(account_id, deadline)
        return outputs

    def _withdraw(
        self, account: Account, reason: str, trigger: dict[str, Any], ts: int | None
    ) -> list[Output]:
        open_set = account.liquidation
        assert open_set is not None
        outputs = self._cancels(account, open_set, list(open_set.orders), reason, trigger, ts)
        self._done(account)
        return outputs

    def _done(self, account: Account) -> None:
        """The account has no open set any more (its view column says so too)."""
        account.liquidation = None
        self.view.set_deadline(account.account_id, None)

    @staticmethod
    def _cancels(
        account: Account,
        open_set: LiquidationSet,
        order_ids: list[str],
        reason: str,
        trigger: dict[str, Any],
        ts: int | None,
    ) -> list[Output]:
        identifier = open_set.id
        outputs = []
        for order_id in order_ids:
            value = {
                "type": "liquidation_cancel", "order_id": order_id, "set_id": identifier,
                "account": account.account_id, "reason": reason, "trigger": trigger, "ts": ts,
            }  # fmt: skip
            outputs.append(Output(LIQUIDATION_ORDERS, account.account_id, value))
        return outputs


@exact
def _liquidation_part(
    fill: FillRecord, order: LiquidationOrder, size: Decimal
) -> tuple[Decimal, Decimal]:
    """(quantity booked at the order's price, the fund's part: the fill's price against it)."""
    part = min(fill.qty, order.qty)
    direction = 1 if fill.side == "sell" else -1
    return part, direction * (fill.price - order.price) * part * size


def _ref(account: Account, fill: FillRecord) -> str:
    return f"{account.account_id}:fill:{fill.fill_id}"


def _figures(figures: MarginFigures) -> dict[str, str]:
    return {
        "equity": risk_text(figures.equity),
        "maintenance_margin": risk_text(figures.maintenance_margin),
        "margin_ratio": risk_text(figures.margin_ratio),
    }


def _price(price: float | None) -> str | None:
    return None if price is None or not math.isfinite(price) else risk_text(price)
