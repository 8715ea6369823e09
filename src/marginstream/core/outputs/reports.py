"""Risk figures as the JSON SPEC section 5 prints them (alert positions, state lines)."""

from __future__ import annotations

from typing import Any

from marginstream.core.books.ledger import Account
from marginstream.core.inputs.numbers import decimal_text, risk_text
from marginstream.core.liquidation.prices import PositionPrices
from marginstream.core.portfolio.margin import PortfolioMargin
from marginstream.core.portfolio.scenarios import scenarios
from marginstream.core.risk.figures import AccountRisk, Greeks, PositionRisk
from marginstream.core.risk.market import Market


def _price(value: Any) -> str | None:
    return None if value is None else decimal_text(value)


def position_lines(positions: tuple[PositionRisk, ...]) -> list[dict[str, Any]]:
    """The open positions, as an alert carries them."""
    return [
        {
            "symbol": p.symbol,
            "qty": decimal_text(p.position.qty),
            "entry_price": _price(p.entry_price),
            "mark": risk_text(p.risk.mark),
            "unrealized_pnl": risk_text(p.risk.unrealized),
        }
        for p in positions
    ]


def add_prices(lines: list[dict[str, Any]], prices: dict[str, PositionPrices]) -> None:
    """Each position line's liquidation and bankruptcy prices (core/liquidation/prices.py)."""
    for line in lines:
        found = prices.get(line["symbol"])
        line["liquidation_price"] = _risk(found.liquidation if found else None)
        line["bankruptcy_price"] = _risk(found.bankruptcy if found else None)


def _risk(value: float | None) -> str | None:
    return None if value is None else risk_text(value)


def greeks_value(greeks: Greeks) -> dict[str, str]:
    return {
        "delta": risk_text(greeks.delta),
        "gamma": risk_text(greeks.gamma),
        "vega": risk_text(greeks.vega),
        "theta": risk_text(greeks.theta),
    }


def account_state(
    account: Account,
    risk: AccountRisk,
    market: Market,
    prices: dict[str, PositionPrices] | None = None,
) -> dict[str, Any]:
    """SPEC's state value; closed positions are listed too, for their realised PnL; with
    prices, each open position's liquidation and bankruptcy prices, and the open
    liquidation set."""
    open_positions = {p.symbol: p for p in risk.positions}
    positions = []
    for symbol in sorted(account.positions):
        position = account.positions[symbol]
        held = open_positions.get(symbol)
        mark = market.risk_mark(symbol) if symbol in market.instruments else None
        positions.append(
            {
                "symbol": symbol,
                "qty": decimal_text(position.qty),
                "entry_price": _price(held.entry_price) if held else None,
                "mark": risk_text(held.risk.mark if held else mark) if (held or mark) else None,
                "unrealized_pnl": risk_text(held.risk.unrealized) if held else "0",
                "realized_pnl": decimal_text(position.realized),
            }
        )
    if prices is not None:
        add_prices(positions, prices)
    return {
        "account": account.account_id,
        "cash": decimal_text(risk.cash),
        "equity": risk_text(risk.equity),
        "initial_margin": risk_text(risk.initial_margin),
        "maintenance_margin": risk_text(risk.maintenance_margin),
        "margin_ratio": risk_text(risk.margin_ratio),
        "available": risk_text(risk.available),
        "level": account.level,
        "margin_model": account.margin,
        **(
            {} if risk.portfolio is None else {"portfolio": portfolio_lines(risk.portfolio, market)}
        ),
        "positions": positions,
        "open_orders": len(account.orders),
        "greeks": greeks_value(risk.greeks),
        "greeks_by_underlying": {
            u: greeks_value(g) for u, g in sorted(risk.greeks_by_underlying.items())
        },
        **({} if prices is None else {"liquidation": liquidation_value(account)}),
    }


def portfolio_lines(margin: PortfolioMargin, market: Market) -> list[dict[str, Any]]:
    """Each underlying's portfolio margin: its components and its worst scenario."""
    lines = []
    for found in margin.underlyings:
        grid = found.grid
        worst = scenarios(market.params_for(found.underlying))[grid.worst]
        lines.append({
            "underlying": found.underlying,
            "worst_case": risk_text(grid.worst_case),
            "worst_scenario": {
                "move": risk_text(worst.move), "vol": worst.vol, "extended": worst.extended,
            },
            "roll_shock": risk_text(grid.roll_shock),
            "short_option_contingency": risk_text(grid.contingency),
            "initial_margin": risk_text(found.initial),
            "maintenance_margin": risk_text(found.maintenance),
        })  # fmt: skip
    return lines


def liquidation_value(account: Account) -> dict[str, Any] | None:
    """The open liquidation set, as the account's state shows it."""
    open_set = account.liquidation
    if open_set is None:
        return None
    return {
        "alert_id": open_set.alert_id,
        "deadline": open_set.deadline,
        "orders": [
            {
                "order_id": o.order_id,
                "symbol": o.symbol,
                "side": o.side,
                "qty": decimal_text(o.qty),
                "price": decimal_text(o.price),
            }
            for o in open_set.orders.values()
        ],
    }
