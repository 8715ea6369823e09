"""Portfolio margin on the real broker: about half of a few hundred accounts switch to the
scenario grid with margin_mode records (hedged option books, protective puts, covered
writers, naked puts, outright futures), two switches are refused as under-margined, a
portfolio_params record re-margins BTC; then an index crash takes portfolio and standard
accounts alike into margin call and liquidation, the closing orders are filled back in
part (the rest re-issued), and one worker is killed -9 in the middle of the fills. State
and outputs equal the replay's (one engine per partition, core/shards.py), and the live
outputs show what portfolio margin is for: hedged books the grid sees through the crash
stay healthy where their standard twins (the same book, the same cash) do not.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

from marginstream.core import EngineConfig
from marginstream.core.risk.instruments import parse_expiry
from marginstream.core.risk.pricing import black76_price, years_to_expiry
from marginstream.core.shards import Shards
from tests.stream.harness import Deployment, Reference, final_checks, wait_settled
from tests.stream.test_liquidation import CRASH_AT, T0, fill, fills_and_reissue, market, rec

PERP = "BTC-PERP"
NEAR, FAR = "2026-10-30T08:00:00Z", "2026-12-17T08:00:00Z"
# symbol: (expiry, put?, strike, iv)
OPTIONS = {
    "BTC-30OCT26-58000-P": (NEAR, True, 58000, "0.65"),
    "BTC-17DEC26-58000-P": (FAR, True, 58000, "0.6"),
    "BTC-17DEC26-54000-P": (FAR, True, 54000, "0.6"),
    "BTC-17DEC26-66000-C": (FAR, False, 66000, "0.55"),
}
NEAR_58P, FAR_58P, FAR_54P, FAR_66C = OPTIONS
TIERS = [
    {"up_to": "250000", "initial": "0.02", "maintenance": "0.01"},
    {"up_to": "1000000", "initial": "0.05", "maintenance": "0.025"},
    {"up_to": None, "initial": "0.10", "maintenance": "0.05"},
]
# Wider and cheaper to maintain than the defaults (0.16, 0.8): the record matters.
PARAMS = {"type": "portfolio_params", "underlying": "BTC", "price_range": "0.18",
          "mm_factor": "0.75"}  # fmt: skip
# Hedged books: (symbol, qty) legs, the account's side.
BOOKS = {
    "spread": [(FAR_58P, "-1"), (FAR_54P, "1")],  # a put spread
    "calendar": [(NEAR_58P, "-1"), (FAR_58P, "1")],
    "protective": [(PERP, "1"), (FAR_54P, "1")],  # long perp, long put
    "covered": [(PERP, "-1"), (FAR_54P, "-1")],  # short put, short perp
}
# Cash a lot of each book: a spread's and a calendar's, about what keeps standard margin
# short of a margin call before the crash, not after it (the grid wants far less).
BOOK_CASH = {"spread": (13000, 16000), "calendar": (11000, 14000), "protective": (9000, 14000),
             "covered": (12000, 20000)}  # fmt: skip


def option_price(symbol: str, index: float, ts: int) -> str:
    """The model's price of an option (its iv, the index), as a fill's price."""
    expiry, put, strike, iv = OPTIONS[symbol]
    years = years_to_expiry(parse_expiry(expiry), ts)
    return str(round(Decimal(repr(black76_price(index, strike, years, float(iv), put))), 2))


def instruments() -> list[dict[str, Any]]:
    records = [
        rec("instruments", PERP, {"type": "instrument", "symbol": PERP, "kind": "perpetual",
            "underlying": "BTC", "contract_size": "1", "status": "active",
            "margin": {"tiers": TIERS}}),
    ]  # fmt: skip
    for symbol, (expiry, put, strike, _) in OPTIONS.items():
        records.append(rec("instruments", symbol, {
            "type": "instrument", "symbol": symbol, "kind": "option", "underlying": "BTC",
            "contract_size": "1", "status": "active", "expiry": expiry,
            "option_type": "put" if put else "call", "strike": str(strike),
            "margin": {"short_initial": "0.15", "short_initial_floor": "0.10",
                       "short_maintenance": "0.075"}}))  # fmt: skip
    return records


def mode(account: str, to: str, ts: int, tag: str = "") -> dict[str, Any]:
    return rec("transfers", account, {"type": "margin_mode", "transfer_id": f"mode-{account}{tag}",
               "account": account, "mode": to, "ts": ts})  # fmt: skip


class Setup:
    """The records before the crash, and who is who."""

    def __init__(self, partitions: int, rng: random.Random) -> None:
        self.portfolio: set[str] = set()  # accounts whose switch is meant to be accepted
        self.twins: dict[str, str] = {}  # hedged portfolio account -> its standard twin
        self.refused: list[str] = []
        deposits: list[tuple[str, str]] = [("mm", "1000000000")]
        trades: list[tuple[str, str, str]] = []  # (account, symbol, signed qty)
        early: list[str] = []  # switched before trading
        # Outright perpetual longs: 70 on portfolio margin (the grid wants ~19% of the
        # notional: deposits of 20% to 35%), 70 standard (5% to 20%).
        for n in range(140):
            account, qty = f"fut{n}", Decimal(rng.randrange(500, 3000)) / 1000
            on_portfolio = n % 2 == 0
            rate = rng.uniform(0.205, 0.35) if on_portfolio else rng.uniform(0.05, 0.2)
            deposits.append((account, str(round(qty * 60000 * Decimal(repr(rate)), 2))))
            trades.append((account, PERP, str(qty)))
            if on_portfolio:
                self.portfolio.add(account)
        # Accounts on portfolio margin from the start, then longs or shorts of the perp.
        for n in range(24):
            account, qty = f"early{n}", Decimal(rng.randrange(500, 2000)) / 1000
            deposits.append(
                (account, str(round(qty * 60000 * Decimal(repr(rng.uniform(0.22, 0.4))), 2)))
            )
            trades.append((account, PERP, str(qty if n % 3 else -qty)))
            early.append(account)
            self.portfolio.add(account)
        # Hedged books, each on portfolio margin and its twin (the same book and cash) on
        # standard margin.
        for n in range(60):
            kind = list(BOOKS)[n % len(BOOKS)]
            lots = rng.randrange(1, 4)
            cash = lots * rng.uniform(*BOOK_CASH[kind])
            for account in (f"hedge{n}", f"twin{n}"):
                deposits.append((account, str(round(Decimal(repr(cash)), 2))))
                trades += [(account, symbol, str(Decimal(q) * lots)) for symbol, q in BOOKS[kind]]
            self.portfolio.add(f"hedge{n}")
            self.twins[f"hedge{n}"] = f"twin{n}"
        # Short strangles: on portfolio margin (from the start) with cash near the grid's
        # margin (about 9,200 a lot), on standard margin near its own (about 23,000).
        for n in range(40):
            account, lots = f"writer{n}", rng.randrange(1, 4)
            on_portfolio = n % 2 == 0
            cash = rng.randrange(9300, 14000) if on_portfolio else rng.randrange(22000, 32000)
            deposits.append((account, str(lots * cash)))
            trades += [(account, FAR_58P, str(-lots)), (account, FAR_66C, str(-lots))]
            if on_portfolio:  # before trading: the strangle is too big for standard margin
                early.append(account)
                self.portfolio.add(account)
        # Naked put writers on portfolio margin from the start (the grid's margin: about
        # 8,000 a lot; the crash costs about 3,900 a lot).
        for n in range(20):
            account, lots = f"putter{n}", rng.randrange(1, 4)
            deposits.append((account, str(lots * rng.randrange(8100, 13000))))
            trades.append((account, FAR_58P, str(-lots)))
            early.append(account)
            self.portfolio.add(account)
        # Switches to refuse: perpetual positions at 5% and 10% of their notional.
        for account, cash, legs in [
            ("lever0", "6000", [(PERP, "2")]),
            ("lever1", "18000", [(PERP, "-3")]),
        ]:
            deposits.append((account, cash))
            trades += [(account, symbol, qty) for symbol, qty in legs]
            self.refused.append(account)
        # One goes to portfolio margin and back.
        deposits.append(("back0", "30000"))
        trades.append(("back0", PERP, "1"))

        self.records = [*instruments(), *market("60000", T0)]
        self.records += [
            rec("prices", s, {"type": "mark", "symbol": s, "iv": iv, "ts": T0})
            for s, (_, _, _, iv) in OPTIONS.items()
        ]
        self.records += [
            rec("transfers", "insurance-fund", {"type": "deposit", "transfer_id": f"fund-{p}",
                "account": "insurance-fund", "amount": "50000", "ts": T0}, partition=p)
            for p in range(partitions)
        ]  # fmt: skip
        self.records += [
            rec("transfers", a, {"type": "deposit", "transfer_id": f"d-{a}", "account": a,
                "amount": amount, "ts": T0 + 1}) for a, amount in deposits
        ]  # fmt: skip
        self.records += [mode(a, "portfolio", T0 + 2) for a in early]
        for n, (account, symbol, qty) in enumerate(trades):
            signed = Decimal(qty)
            price = "60000" if symbol == PERP else option_price(symbol, 60000.0, T0 + 3)
            side, other = ("buy", "sell") if signed > 0 else ("sell", "buy")
            self.records.append(
                fill(account, symbol, side, str(abs(signed)), price, f"t{n}-a", T0 + 3)
            )
            self.records.append(
                fill("mm", symbol, other, str(abs(signed)), price, f"t{n}-m", T0 + 3)
            )
        switching = sorted(self.portfolio - set(early)) + self.refused + ["back0"]
        rng.shuffle(switching)
        self.records += [mode(a, "portfolio", T0 + 4) for a in switching]
        self.records.append(mode("back0", "standard", T0 + 5, "-back"))
        self.records.append(rec("instruments", "BTC", {**PARAMS, "ts": T0 + 6}))
        self.portfolio.discard("back0")


def alerts_of(outputs: list[tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for topic, value in outputs:
        if topic == "liquidations":
            found.setdefault(value["account"], []).append(value)
    return found


def test_portfolio_margin_through_an_index_crash_equals_the_replay(deployment: Deployment):
    partitions = deployment.partitions
    rng = random.Random(7)
    setup = Setup(partitions, rng)
    before = setup.records + market("52000", CRASH_AT)
    first, later, second = fills_and_reissue(before, partitions, rng, "52000")
    records = before + first + later + second
    reference = Reference.of(records, Shards(EngineConfig(partitions=partitions), partitions))  # type: ignore[arg-type]
    assert reference.states["hedge0"]["margin_model"] == "portfolio"

    worker = deployment.worker("w1").start()
    worker.wait_ready()
    deployment.produce(before)
    deployment.produce(first, wait=False)
    time.sleep(0.1)  # in the middle of the fills
    worker.kill9()
    worker.start()
    worker.wait_ready()
    deployment.wait_applied()
    deployment.worker("w2").start()
    deployment.produce(later + second)
    deployment.wait_applied()
    alive = wait_settled(deployment)
    live = deployment.outputs()

    # The switches: accepted but the two under-margined ones; back0 went and came back.
    modes = [v for t, v in live if v.get("request") == "margin_mode"]
    assert len(modes) == len({v["decision_id"] for v in modes}) == len(setup.portfolio) + 4
    refused = {v["account"]: v for v in modes if not v["accepted"]}
    assert sorted(refused) == setup.refused, refused
    for value in refused.values():
        assert "insufficient margin" in value["reason"], value
        assert "under portfolio margin" in value["reason"], value
    assert [v["accepted"] for v in modes if v["account"] == "back0"] == [True, True]
    for account in [*setup.refused, "back0"]:
        status, state = alive[0].get(f"/accounts/{account}/")
        assert status == 200 and state["margin_model"] == "standard", state

    # The crash liquidated portfolio accounts, futures and option books alike, and their
    # closing orders went out.
    alerts = alerts_of(live)
    liquidated = {
        a for a, found in alerts.items() if any(v["type"] == "liquidation" for v in found)
    }
    on_portfolio = liquidated & setup.portfolio
    assert len(on_portfolio) >= 20, sorted(on_portfolio)
    assert {a.rstrip("0123456789") for a in on_portfolio} >= {"fut", "putter"}, on_portfolio
    assert len(liquidated - setup.portfolio) >= 20
    closing = {v["account"] for t, v in live if v.get("type") == "liquidation_order"}
    assert len(closing & setup.portfolio) >= 20

    # Hedged books that the grid sees through the crash, whose standard twins it hit.
    crashed = {"margin_call", "liquidation"}
    spared = [
        hedge for hedge, twin in setup.twins.items()
        if not alerts.get(hedge)
        and any(v["type"] in crashed and v["ts"] == CRASH_AT for v in alerts.get(twin, []))
    ]  # fmt: skip
    assert len(spared) >= 10, spared
    kind = {h: list(BOOKS)[int(h.removeprefix("hedge")) % len(BOOKS)] for h in spared}
    assert {"spread", "calendar"} <= set(kind.values()), kind
    for hedge in [h for h in spared if kind[h] in ("spread", "calendar")][:4]:
        status, state = alive[0].get(f"/accounts/{hedge}/")
        assert status == 200, state
        assert state["level"] == "healthy" and state["margin_model"] == "portfolio", state
        (grid,) = state["portfolio"]  # BTC's, under the portfolio_params record's values
        initial, maintenance = float(grid["initial_margin"]), float(grid["maintenance_margin"])
        assert abs(maintenance - 0.75 * initial) <= 1e-9 * initial, grid
        move = abs(float(grid["worst_scenario"]["move"]))  # 0.18 x k / 4, or 0.33
        assert any(abs(move - m) < 1e-9 for m in (0, 0.045, 0.09, 0.135, 0.18, 0.33)), grid
        status, twin = alive[0].get(f"/accounts/{setup.twins[hedge]}/")
        assert status == 200 and twin["margin_model"] == "standard", twin
        assert "portfolio" not in twin
        assert float(twin["maintenance_margin"]) > 2 * maintenance, (twin, grid)

    final_checks(deployment, reference)
