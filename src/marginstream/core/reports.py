"""Risk figures as the JSON SPEC section 5 prints them (alert positions, state lines)."""

from __future__ import annotations

from typing import Any

from marginstream.core.ledger import Account
from marginstream.core.market import Market
from marginstream.core.numbers import decimal_text, risk_text
from marginstream.core.risk import AccountRisk, Greeks


def _price(value: Any) -> str | None:
    return None if value is None else decimal_text(value)


def position_lines(risk: AccountRisk) -> list[dict[str, Any]]:
    """The open positions, as an alert carries them."""
    return [
        {
            "symbol": p.symbol,
            "qty": decimal_text(p.position.qty),
            "entry_price": _price(p.entry_price),
            "mark": risk_text(p.risk.mark),
            "unrealized_pnl": risk_text(p.risk.unrealized),
        }
        for p in risk.positions
    ]


def greeks_value(greeks: Greeks) -> dict[str, str]:
    return {
        "delta": risk_text(greeks.delta),
        "gamma": risk_text(greeks.gamma),
        "vega": risk_text(greeks.vega),
        "theta": risk_text(greeks.theta),
    }


def account_state(account: Account, risk: AccountRisk, market: Market) -> dict[str, Any]:
    """SPEC's state value; closed positions are listed too, for their realised PnL."""
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
    return {
        "account": account.account_id,
        "cash": decimal_text(risk.cash),
        "equity": risk_text(risk.equity),
        "initial_margin": risk_text(risk.initial_margin),
        "maintenance_margin": risk_text(risk.maintenance_margin),
        "margin_ratio": risk_text(risk.margin_ratio),
        "available": risk_text(risk.available),
        "level": account.level,
        "positions": positions,
        "open_orders": len(account.orders),
        "greeks": greeks_value(risk.greeks),
        "greeks_by_underlying": {
            u: greeks_value(g) for u, g in sorted(risk.greeks_by_underlying.items())
        },
    }
