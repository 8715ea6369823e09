"""A tiny venue for core tests: builds SPEC records and feeds them to one RiskEngine."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from marginstream.core import EngineConfig, Envelope, Outcome, RiskEngine

T0 = 1_795_000_000_000
SPEC_TIERS = [
    {"up_to": "250000", "initial": "0.02", "maintenance": "0.01"},
    {"up_to": "1000000", "initial": "0.05", "maintenance": "0.025"},
    {"up_to": None, "initial": "0.10", "maintenance": "0.05"},
]


class Venue:
    def __init__(self, engine: RiskEngine | None = None, config: EngineConfig | None = None):
        self.engine = engine or RiskEngine(config)
        self.offsets: dict[str, int] = defaultdict(int)
        self.ts = T0
        self.counter = 0

    def send(self, topic: str, value: Any, key: str | None = None) -> Outcome:
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        if key is None and isinstance(value, dict):
            key = value.get("account") or value.get("symbol") or value.get("underlying")
        return self.engine.apply(Envelope(topic, 0, offset, key, value))

    def next_ts(self) -> int:
        self.ts += 1
        return self.ts

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # -- market ---------------------------------------------------------------------

    def perpetual(self, symbol: str = "BTC-PERP", tiers: list | None = None, **extra) -> Outcome:
        value = {
            "type": "instrument",
            "symbol": symbol,
            "kind": "perpetual",
            "underlying": "BTC",
            "contract_size": "1",
            "status": "active",
            "margin": {"tiers": tiers or SPEC_TIERS},
        }
        return self.send("instruments", {**value, **extra})

    def future(self, symbol: str = "BTC-FUT", expiry: str = "2026-12-25T08:00:00Z", **extra):
        value = {
            "type": "instrument",
            "symbol": symbol,
            "kind": "future",
            "underlying": "BTC",
            "contract_size": "1",
            "status": "active",
            "expiry": expiry,
            "margin": {"tiers": SPEC_TIERS},
        }
        return self.send("instruments", {**value, **extra})

    def option(
        self,
        symbol: str,
        strike: str,
        option_type: str = "call",
        expiry: str = "2026-12-25T08:00:00Z",
        **extra,
    ) -> Outcome:
        value = {
            "type": "instrument",
            "symbol": symbol,
            "kind": "option",
            "underlying": "BTC",
            "contract_size": "1",
            "status": "active",
            "expiry": expiry,
            "option_type": option_type,
            "strike": strike,
            "margin": {
                "short_initial": "0.15",
                "short_initial_floor": "0.10",
                "short_maintenance": "0.075",
            },
        }
        return self.send("instruments", {**value, **extra})

    def portfolio_params(self, underlying: str = "BTC", **params: Any) -> Outcome:
        value = {"type": "portfolio_params", "underlying": underlying, **params}
        return self.send("instruments", value)

    def margin_mode(self, account: str, mode: str, transfer_id: str | None = None) -> Outcome:
        value = {
            "type": "margin_mode",
            "transfer_id": transfer_id or self.next_id("mode"),
            "account": account,
            "mode": mode,
            "ts": self.next_ts(),
        }
        return self.send("transfers", value)

    def index(self, price: str, underlying: str = "BTC", ts: int | None = None) -> Outcome:
        value = {
            "type": "index",
            "underlying": underlying,
            "price": price,
            "ts": ts or self.next_ts(),
        }
        return self.send("prices", value)

    def mark(self, symbol: str, price: str | None = None, iv: str | None = None, ts=None):
        value: dict[str, Any] = {"type": "mark", "symbol": symbol, "ts": ts or self.next_ts()}
        if price is not None:
            value["price"] = price
        if iv is not None:
            value["iv"] = iv
        return self.send("prices", value)

    def funding(self, symbol: str, rate: str) -> Outcome:
        return self.send(
            "prices", {"type": "funding", "symbol": symbol, "rate": rate, "ts": self.next_ts()}
        )

    def settlement(self, symbol: str, price: str) -> Outcome:
        return self.send(
            "prices", {"type": "settlement", "symbol": symbol, "price": price, "ts": self.next_ts()}
        )

    # -- accounts -------------------------------------------------------------------

    def deposit(self, account: str, amount: str, transfer_id: str | None = None) -> Outcome:
        return self.send(
            "transfers",
            {
                "type": "deposit",
                "transfer_id": transfer_id or self.next_id("d"),
                "account": account,
                "amount": amount,
                "ts": self.next_ts(),
            },
        )

    def withdraw(self, account: str, amount: str, transfer_id: str | None = None) -> Outcome:
        return self.send(
            "transfers",
            {
                "type": "withdrawal",
                "transfer_id": transfer_id or self.next_id("w"),
                "account": account,
                "amount": amount,
                "ts": self.next_ts(),
            },
        )

    def order(
        self,
        account: str,
        symbol: str,
        side: str,
        qty: str,
        price: str,
        order_id: str | None = None,
        reduce_only: bool = False,
    ) -> Outcome:
        return self.send(
            "orders",
            {
                "type": "order",
                "order_id": order_id or self.next_id("o"),
                "account": account,
                "symbol": symbol,
                "side": side,
                "qty": qty,
                "price": price,
                "reduce_only": reduce_only,
                "ts": self.next_ts(),
            },
        )

    def cancel(self, account: str, order_id: str) -> Outcome:
        return self.send(
            "orders",
            {"type": "cancel", "order_id": order_id, "account": account, "ts": self.next_ts()},
        )

    def fill(
        self,
        account: str,
        symbol: str,
        side: str,
        qty: str,
        price: str,
        fee: str | None = None,
        fill_id: str | None = None,
        order_id: str | None = None,
    ) -> Outcome:
        value: dict[str, Any] = {
            "type": "fill",
            "fill_id": fill_id or self.next_id("f"),
            "account": account,
            "symbol": symbol,
            "side": side,
            "qty": qty,
            "price": price,
            "ts": self.next_ts(),
        }
        if fee is not None:
            value["fee"] = fee
        if order_id is not None:
            value["order_id"] = order_id
        return self.send("orders", value)

    def trade(self, buyer: str, seller: str, symbol: str, qty: str, price: str) -> None:
        self.fill(buyer, symbol, "buy", qty, price)
        self.fill(seller, symbol, "sell", qty, price)

    # -- reading --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the engine would persist, for before/after comparisons."""
        return self.engine.parts()


def only(outcome: Outcome) -> dict[str, Any]:
    """The single output of an outcome (failing loudly if there is not exactly one)."""
    assert len(outcome.outputs) == 1, outcome.outputs
    return outcome.outputs[0].value


def only_alert(outcome: Outcome) -> dict[str, Any]:
    """The single alert of an outcome (its liquidation orders, if any, aside)."""
    alerts = [o.value for o in outcome.outputs if o.topic == "liquidations"]
    assert len(alerts) == 1, outcome.outputs
    return alerts[0]


def alert_kinds(outcome: Outcome) -> list[str]:
    return [o.value["type"] for o in outcome.outputs if o.topic == "liquidations"]


def kinds(outcome: Outcome) -> list[str]:
    return [o.value.get("type", o.topic) for o in outcome.outputs]
