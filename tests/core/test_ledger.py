"""The exact ledger: fills, realised PnL, premiums, fees, funding and settlement by hand."""

from __future__ import annotations

from decimal import Decimal as D

import orjson

from marginstream.core.books.ledger import Account
from marginstream.core.inputs.records import FillRecord
from marginstream.core.risk.instruments import parse_instrument
from tests.core.venue import SPEC_TIERS, Venue

PERP = parse_instrument(
    {
        "symbol": "P",
        "kind": "perpetual",
        "underlying": "BTC",
        "contract_size": "1",
        "margin": {"tiers": SPEC_TIERS},
    }
)
MINI = parse_instrument(
    {
        "symbol": "M",
        "kind": "future",
        "underlying": "BTC",
        "contract_size": "0.1",
        "expiry": "2026-12-25T08:00:00Z",
        "margin": {"tiers": SPEC_TIERS},
    }
)
CALL = parse_instrument(
    {
        "symbol": "C",
        "kind": "option",
        "underlying": "BTC",
        "contract_size": "1",
        "expiry": "2026-12-25T08:00:00Z",
        "option_type": "call",
        "strike": "100",
    }
)
PUT = parse_instrument(
    {
        "symbol": "Q",
        "kind": "option",
        "underlying": "BTC",
        "contract_size": "1",
        "expiry": "2026-12-25T08:00:00Z",
        "option_type": "put",
        "strike": "100",
    }
)

_fills = iter(range(1, 10**6))


def fill(
    account: Account,
    instrument,
    side: str,
    qty: str,
    price: str,
    fee: str = "0",
    funding: str = "0",
) -> D:
    record = FillRecord(
        f"f{next(_fills)}",
        None,
        account.account_id,
        instrument.symbol,
        side,
        D(qty),
        D(price),
        D(fee),
        0,
    )
    return account.apply_fill(record, instrument, D(funding))


def test_opening_and_adding_keep_the_cost_exactly():
    account = Account("a", cash=D(1000))
    assert fill(account, PERP, "buy", "2", "100", fee="0.5") == 0
    assert fill(account, PERP, "buy", "1", "130") == 0
    position = account.positions["P"]
    assert (position.qty, position.cost) == (D(3), D(330))  # 2 x 100 + 1 x 130
    assert position.entry_price(D(1)) == D(110)
    assert account.cash == D("999.5")  # a future's trade moves cash by its fee only
    assert account.fees == D("0.5")


def test_reducing_realises_against_the_average_cost():
    account = Account("a", cash=D(1000))
    fill(account, PERP, "buy", "2", "100")
    fill(account, PERP, "buy", "1", "130")
    # Sell 1 at 120: removes 330 x 1/3 = 110 of cost; realises 120 - 110 = 10.
    assert fill(account, PERP, "sell", "1", "120") == D(10)
    assert (account.positions["P"].qty, account.positions["P"].cost) == (D(2), D(220))
    assert account.cash == D(1010)


def test_a_fill_through_zero_closes_then_opens_the_other_way():
    account = Account("a", cash=D(1000))
    fill(account, PERP, "buy", "2", "110")
    # Sell 3 at 90: closes 2 (realises 2 x 90 - 220 = -40), opens a short of 1 at 90.
    assert fill(account, PERP, "sell", "3", "90") == D(-40)
    position = account.positions["P"]
    assert (position.qty, position.cost) == (D(-1), D(-90))
    # Buy 1 back at 80: a short at 90 covered at 80 gains 10.
    assert fill(account, PERP, "buy", "1", "80") == D(10)
    assert (position.qty, position.cost, position.realized) == (D(0), D(0), D(-30))
    assert account.cash == D(970)


def test_contract_size_scales_pnl():
    account = Account("a")
    fill(account, MINI, "buy", "10", "50000")  # 10 contracts of 0.1: cost 50,000
    assert account.positions["M"].cost == D(50000)
    assert fill(account, MINI, "sell", "10", "51000") == D(1000)  # 10 x 0.1 x 1,000


def test_an_inexact_partial_close_rounds_only_the_split_not_the_value():
    account = Account("a")
    fill(account, PERP, "buy", "1", "33")
    fill(account, PERP, "buy", "1", "33")
    fill(account, PERP, "buy", "1", "34")  # cost 100 over 3 contracts
    realised = fill(account, PERP, "sell", "1", "40")
    # removed cost = 100 / 3 rounded half-even at 1e-18 = 33.333333333333333333
    assert realised == D(40) - D("33.333333333333333333")
    position = account.positions["P"]
    assert position.cost == D("66.666666666666666667")
    # Valued at the fill price, the account did not move: cash + qty x price - cost.
    assert account.cash + position.qty * 40 - position.cost == D(3 * 40) - D(100)


def test_option_premium_changes_hands_at_each_trade():
    buyer, seller = Account("b", cash=D(1000)), Account("s", cash=D(1000))
    fill(buyer, CALL, "buy", "2", "50", fee="1")
    fill(seller, CALL, "sell", "2", "50", fee="1")
    assert buyer.cash == D(1000 - 100 - 1)
    assert seller.cash == D(1000 + 100 - 1)
    # The buyer sells them on at 60: +120 of premium; the realised 20 is bookkeeping only.
    assert fill(buyer, CALL, "sell", "2", "60") == D(20)
    assert buyer.cash == D(1000 - 100 - 1 + 120)


def test_lazy_funding_is_paid_at_the_next_fill_and_longs_pay_positive_rates():
    account = Account("a", cash=D(1000))
    fill(account, PERP, "buy", "2", "100", funding="0")
    # Funding index moved by mark 100 x rate 0.001 = 0.1: a long of 2 owes 2 x 1 x 0.1.
    assert account.accrued_funding(PERP, D("0.1")) == D("-0.2")
    fill(account, PERP, "buy", "1", "100", funding="0.1")
    assert account.cash == D("999.8")
    assert account.funding == D("-0.2")
    assert account.positions["P"].funding_index == D("0.1")


def test_settlement_closes_futures_at_the_price_and_options_at_intrinsic_value():
    account = Account("a", cash=D(1000))
    fill(account, MINI, "buy", "20", "100")  # 20 x 0.1 = 2 units at 100: cost 200
    fill(account, CALL, "buy", "2", "5")  # premium 10 paid
    fill(account, PUT, "sell", "1", "3")  # premium 3 received
    assert account.cash == D(1000 - 10 + 3)
    assert account.settle(MINI, D(110)) == D(20)  # 2 x (110 - 100)
    assert account.settle(CALL, D(130)) == D(60 - 10)  # intrinsic 2 x 30, paid 10
    assert account.settle(PUT, D(130)) == D(3)  # out of the money: keeps the premium
    assert account.cash == D(1000 - 10 + 3 + 20 + 60)
    assert all(p.qty == 0 and p.cost == 0 for p in account.positions.values())


def test_a_short_put_settles_in_the_money_against_its_writer():
    account = Account("a", cash=D(1000))
    fill(account, PUT, "sell", "2", "4")  # receives 8
    assert account.settle(PUT, D(90)) == D(-20 + 8)  # pays 2 x (100 - 90)
    assert account.cash == D(1000 + 8 - 20)


def test_account_state_round_trips_through_its_dict():
    account = Account("a", cash=D("1000.25"))
    fill(account, PERP, "buy", "2", "100.5", fee="0.1")
    fill(account, CALL, "sell", "1", "3")
    restored = Account.from_dict(account.to_dict())
    assert restored == account


def test_figures_keep_a_bounded_number_of_places_through_thousands_of_partial_closes():
    """An outside test's market maker: 15.999 long, then 1-lot buys and sells. Each partial
    close divided the cost exactly by the quantity (1/16 is exact), adding places until a
    figure filled the context's 200 digits and the next fill trapped Inexact: the worker
    crash-looped. Quotients now keep at most 18 places."""
    venue = Venue()
    venue.perpetual("BTC-PERP")
    venue.mark("BTC-PERP", "60000")
    venue.deposit("mm", "1000000")
    venue.fill("mm", "BTC-PERP", "buy", "15.999", "60000")
    for _ in range(3000):
        venue.fill("mm", "BTC-PERP", "buy", "0.001", "60003")
        venue.fill("mm", "BTC-PERP", "sell", "0.001", "60002")
    account = venue.engine.accounts["mm"]
    position = account.positions["BTC-PERP"]
    for figure in (account.cash, position.cost, position.realized):
        assert -figure.as_tuple().exponent <= 40, figure
    assert position.qty == D("15.999")


def test_an_account_record_does_not_grow_with_every_instrument_it_ever_traded():
    """An outside test traded 12k option listings once each, opened and closed: the closed
    positions stayed in the account's record until it passed Kafka's 1 MB and the worker
    crash-looped. A closed position now leaves the account, its realised PnL kept."""
    venue = Venue()
    venue.perpetual("BTC-PERP")
    venue.mark("BTC-PERP", "60000")
    venue.deposit("mm", "1000000")
    for n in range(2000):
        symbol = f"BTC-{n:07d}-PERP"
        venue.perpetual(symbol)
        venue.mark(symbol, "100")
        venue.fill("mm", symbol, "buy", "1", "100")
        venue.fill("mm", symbol, "sell", "1", "101")
    account = venue.engine.accounts["mm"]
    assert account.positions == {} and account.closed_realized == 2000
    assert len(orjson.dumps(venue.engine.part(("account", "mm")))) < 2048
    assert account.cash == 1000000 + 2000
