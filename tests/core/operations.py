"""Random histories for property tests: trades, orders, transfers and market moves."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from marginstream.core import Envelope
from tests.core.venue import Venue

ACCOUNTS = ("a0", "a1", "a2", "a3")
FUTURES = ("BTC-PERP", "BTC-FUT")
OPTIONS = ("BTC-60000-C", "BTC-50000-P")
SYMBOLS = FUTURES + OPTIONS

quantities = st.decimals(min_value="0.001", max_value="40", places=3)
prices = st.decimals(min_value="30000", max_value="90000", places=1)
premiums = st.decimals(min_value="1", max_value="9000", places=1)
vols = st.decimals(min_value="0.2", max_value="1.5", places=2)
fees = st.one_of(st.none(), st.decimals(min_value="-5", max_value="30", places=2))


def _price_for(symbol: str, draw: Any) -> Decimal:
    return draw(premiums) if symbol in OPTIONS else draw(prices)


@st.composite
def operation(draw: Any) -> tuple:
    kind = draw(
        st.sampled_from(
            ["trade"] * 6
            + ["order"] * 3
            + [
                "cancel",
                "mark",
                "mark",
                "index",
                "index",
                "iv",
                "funding",
                "deposit",
                "withdraw",
                "option_mark",
                "margin_mode",
                "margin_mode",
                "params",
            ]
        )
    )
    account = draw(st.sampled_from(ACCOUNTS))
    match kind:
        case "trade":
            symbol = draw(st.sampled_from(SYMBOLS))
            other = draw(st.sampled_from([a for a in ACCOUNTS if a != account]))
            return (
                kind,
                account,
                other,
                symbol,
                draw(quantities),
                _price_for(symbol, draw),
                draw(fees),
                draw(fees),
            )
        case "order":
            symbol = draw(st.sampled_from(SYMBOLS))
            return (
                kind,
                account,
                symbol,
                draw(st.sampled_from(["buy", "sell"])),
                draw(quantities),
                _price_for(symbol, draw),
                draw(st.booleans()),
            )
        case "cancel":
            return (kind, account, draw(st.integers(0, 30)))
        case "mark":
            return (kind, draw(st.sampled_from(FUTURES)), draw(prices))
        case "option_mark":
            return (kind, draw(st.sampled_from(OPTIONS)), draw(premiums))
        case "index":
            return (kind, draw(prices))
        case "iv":
            return (kind, draw(st.sampled_from(OPTIONS)), draw(vols))
        case "funding":
            return (kind, draw(st.decimals(min_value="-0.01", max_value="0.01", places=5)))
        case "margin_mode":
            return (kind, account, draw(st.sampled_from(["portfolio", "standard"])))
        case "params":
            return (
                kind,
                draw(st.sampled_from(["0.08", "0.16", "0.25"])),
                draw(st.sampled_from(["0.5", "0.8", "1"])),
            )
        case "deposit" | "withdraw":
            return (kind, account, draw(st.decimals(min_value="1", max_value="500000", places=2)))
    raise AssertionError(kind)


histories = st.lists(operation(), min_size=1, max_size=60)


def opened_venue(**kwargs: Any) -> Venue:
    """Instruments defined, every account funded; no prices yet."""
    venue = Venue(**kwargs)
    venue.perpetual("BTC-PERP")
    venue.future("BTC-FUT")
    venue.option("BTC-60000-C", "60000", "call")
    venue.option("BTC-50000-P", "50000", "put")
    for account in ACCOUNTS:
        venue.deposit(account, "20000")
    return venue


def envelopes(history: list[tuple], venue: Venue) -> list[Envelope]:
    """The records a history stands for, numbered on from the venue's own ids and offsets."""
    records: list[tuple[str, str, dict]] = []
    for op in history:
        venue.counter += 1
        step = venue.counter
        ts = venue.next_ts()
        kind = op[0]
        if kind == "trade":
            _, buyer, seller, symbol, qty, price, buyer_fee, seller_fee = op
            for who, side, fee in ((buyer, "buy", buyer_fee), (seller, "sell", seller_fee)):
                value = {
                    "type": "fill",
                    "fill_id": f"f{step}-{side}",
                    "account": who,
                    "symbol": symbol,
                    "side": side,
                    "qty": str(qty),
                    "price": str(price),
                    "ts": ts,
                }
                if fee is not None:
                    value["fee"] = str(fee)
                records.append(("orders", who, value))
        elif kind == "order":
            _, account, symbol, side, qty, price, reduce_only = op
            records.append(
                (
                    "orders",
                    account,
                    {
                        "type": "order",
                        "order_id": f"o{step}",
                        "account": account,
                        "symbol": symbol,
                        "side": side,
                        "qty": str(qty),
                        "price": str(price),
                        "reduce_only": reduce_only,
                        "ts": ts,
                    },
                )
            )
        elif kind == "cancel":
            _, account, which = op
            records.append(
                (
                    "orders",
                    account,
                    {"type": "cancel", "order_id": f"o{which}", "account": account, "ts": ts},
                )
            )
        elif kind in ("mark", "option_mark"):
            records.append(
                ("prices", op[1], {"type": "mark", "symbol": op[1], "price": str(op[2]), "ts": ts})
            )
        elif kind == "index":
            records.append(
                (
                    "prices",
                    "BTC",
                    {"type": "index", "underlying": "BTC", "price": str(op[1]), "ts": ts},
                )
            )
        elif kind == "iv":
            records.append(
                ("prices", op[1], {"type": "mark", "symbol": op[1], "iv": str(op[2]), "ts": ts})
            )
        elif kind == "funding":
            records.append(
                (
                    "prices",
                    "BTC-PERP",
                    {"type": "funding", "symbol": "BTC-PERP", "rate": str(op[1]), "ts": ts},
                )
            )
        elif kind == "margin_mode":
            _, account, mode = op
            value = {"type": "margin_mode", "transfer_id": f"m{step}", "account": account,
                     "mode": mode, "ts": ts}  # fmt: skip
            records.append(("transfers", account, value))
        elif kind == "params":
            value = {"type": "portfolio_params", "underlying": "BTC", "price_range": op[1],
                     "mm_factor": op[2], "ts": ts}  # fmt: skip
            records.append(("instruments", "BTC", value))
        else:
            _, account, amount = op
            records.append(
                (
                    "transfers",
                    account,
                    {
                        "type": "deposit" if kind == "deposit" else "withdrawal",
                        "transfer_id": f"t{step}",
                        "account": account,
                        "amount": str(amount),
                        "ts": ts,
                    },
                )
            )
    result = []
    for topic, key, value in records:
        result.append(Envelope(topic, 0, venue.offsets[topic], key, value))
        venue.offsets[topic] += 1
    return result


def play(venue: Venue, history: list[tuple]) -> list:
    """Apply a history after the venue's own records; returns every outcome."""
    return [venue.engine.apply(envelope) for envelope in envelopes(history, venue)]
