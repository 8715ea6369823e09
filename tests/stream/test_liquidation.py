"""The liquidation engine on the real broker: an index crash liquidates hundreds of
accounts, their closing orders are filled back (better, worse, partly, not at all), the
unfilled ones are re-issued, deficits go to the insurance fund's slices and past them to
auto-deleveraging, one worker is killed -9 in the middle of the fills; and state,
outputs, fund and rankings all equal the replay's, which keeps one engine per partition
as the workers do (core/shards.py).
"""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

from marginstream.cli.replay import replay_lines
from marginstream.core import EngineConfig
from marginstream.core.liquidation.adl import merged_sides, sides
from marginstream.core.shards import Shards
from marginstream.stream.gather import fund_total
from tests.stream.harness import Deployment, Reference, final_checks, wait_settled

TOKEN = "liquidation-test-token"
T0 = 1_790_000_000_000
CRASH_AT = T0 + 60_000
REISSUE_AT = CRASH_AT + 31_000  # past the sets' deadline (30 s of event time)
SYMBOL = "BTC-PERP"
PUT = "BTC-54000-P"
TIERS = [
    {"up_to": "250000", "initial": "0.02", "maintenance": "0.01"},
    {"up_to": "1000000", "initial": "0.05", "maintenance": "0.025"},
    {"up_to": None, "initial": "0.10", "maintenance": "0.05"},
]


def rec(topic: str, key: str, value: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"topic": topic, "key": key, "value": value, **extra}


def fill(account: str, symbol: str, side: str, qty: str, price: str, fill_id: str, ts: int,
         order_id: str | None = None) -> dict[str, Any]:  # fmt: skip
    value = {"type": "fill", "fill_id": fill_id, "account": account, "symbol": symbol,
             "side": side, "qty": qty, "price": price, "ts": ts}  # fmt: skip
    if order_id is not None:
        value["order_id"] = order_id
    return rec("orders", account, value)


def market(price: str, ts: int) -> list[dict[str, Any]]:
    return [
        rec("prices", "BTC", {"type": "index", "underlying": "BTC", "price": price, "ts": ts}),
        rec("prices", SYMBOL, {"type": "mark", "symbol": SYMBOL, "price": price, "ts": ts}),
    ]


def setup(partitions: int, rng: random.Random) -> list[dict[str, Any]]:
    """600 longs (a third to be bankrupt, a third liquidated, a third safe), 150 profitable
    shorts to deleverage, 30 put writers; the fund funded on partitions 0 and 1 only."""
    records = [
        rec("instruments", SYMBOL, {"type": "instrument", "symbol": SYMBOL, "kind": "perpetual",
            "underlying": "BTC", "contract_size": "1", "status": "active",
            "margin": {"tiers": TIERS}}),
        rec("instruments", PUT, {"type": "instrument", "symbol": PUT, "kind": "option",
            "underlying": "BTC", "contract_size": "1", "status": "active",
            "expiry": "2026-12-17T08:00:00Z", "option_type": "put", "strike": "54000",
            "margin": {"short_initial": "0.15", "short_initial_floor": "0.10",
                       "short_maintenance": "0.075"}}),
        *market("60000", T0),
        rec("prices", PUT, {"type": "mark", "symbol": PUT, "iv": "0.6", "ts": T0}),
    ]  # fmt: skip
    funding = {0: "40000", 1: "150"}  # partitions 2 and 3: no capital, deficits go to ADL
    records += [
        rec("transfers", "insurance-fund", {"type": "deposit", "transfer_id": f"fund-{p}",
            "account": "insurance-fund", "amount": amount, "ts": T0}, partition=p)
        for p, amount in funding.items() if p < partitions
    ]  # fmt: skip
    deposits = [("mm", "1000000000")]
    trades = []
    for n in range(600):
        account, qty = f"long{n}", Decimal(rng.randrange(500, 3000)) / 1000
        rate = rng.choice([rng.uniform(0.05, 0.1), rng.uniform(0.1, 0.109), rng.uniform(0.11, 0.3)])
        deposits.append((account, str(round(qty * 60000 * Decimal(str(rate)), 2))))
        trades.append((account, "mm", SYMBOL, str(qty), "60000"))
    for n in range(150):
        account, qty = f"short{n}", Decimal(rng.randrange(500, 2000)) / 1000
        deposits.append((account, str(round(qty * 60000 * Decimal("0.3"), 2))))
        trades.append(("mm", account, SYMBOL, str(qty), "60000"))
    for n in range(30):
        account = f"writer{n}"
        puts = rng.randrange(1, 4)
        deposits.append((account, str(puts * rng.randrange(10000, 16000))))
        trades.append(("mm", account, PUT, str(puts), "4000"))  # about its model price
    records += [
        rec("transfers", a, {"type": "deposit", "transfer_id": f"d-{a}", "account": a,
            "amount": amount, "ts": T0 + 1}) for a, amount in deposits
    ]  # fmt: skip
    for n, (buyer, seller, symbol, qty, price) in enumerate(trades):
        records.append(fill(buyer, symbol, "buy", qty, price, f"t{n}-b", T0 + 2))
        records.append(fill(seller, symbol, "sell", qty, price, f"t{n}-s", T0 + 2))
    return records


def fills_for(orders: list[dict[str, Any]], rng: random.Random, ts: int,
              leave_some: bool) -> list[dict[str, Any]]:  # fmt: skip
    """Each liquidation order filled back by the venue against mm: at its price, better,
    worse, or in part; with leave_some, some not at all (they are re-issued)."""
    records = []
    for n, order in enumerate(orders):
        how = rng.choice(["at", "at", "better", "worse", "part", "none"] if leave_some else ["at"])
        if how == "none":
            continue
        price, qty = Decimal(order["price"]), Decimal(order["qty"])
        up = order["side"] == "sell"  # better for a sell is higher
        if how in ("better", "worse"):
            step = price * Decimal("0.001") * (1 if (how == "better") == up else -1)
            price = (price + step).quantize(Decimal("0.01"))
        if how == "part" and qty > Decimal("0.002"):
            qty = (qty / 2).quantize(Decimal("0.001"))
        other = "buy" if order["side"] == "sell" else "sell"
        oid, at = order["order_id"], ts + n
        records.append(fill(order["account"], order["symbol"], order["side"], str(qty),
                            str(price), f"lf-{oid}", at, order_id=oid))  # fmt: skip
        records.append(fill("mm", order["symbol"], other, str(qty), str(price), f"mm-{oid}", at))
    return records


def fills_and_reissue(
    before: list[dict[str, Any]], partitions: int, rng: random.Random, price: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """After `before` (ending in the crash at CRASH_AT): the venue's fills of the closing
    orders, some left unfilled; the market at `price` again past the sets' deadline (the
    unfilled are re-issued); and the fills of every order then open."""
    shards, _ = replayed(before, partitions)
    first = fills_for(open_orders(shards), rng, CRASH_AT + 5_000, leave_some=True)
    later = market(price, REISSUE_AT)
    shards, _ = replayed(before + first + later, partitions)
    second = fills_for(open_orders(shards), rng, REISSUE_AT + 5_000, leave_some=False)
    return first, later, second


def replayed(records: list[dict[str, Any]], partitions: int) -> tuple[Shards, list[Any]]:
    import orjson

    shards = Shards(EngineConfig(partitions=partitions), partitions)
    outputs = list(replay_lines(shards, [orjson.dumps(r).decode() for r in records]))
    return shards, outputs


def open_orders(shards: Shards) -> list[dict[str, Any]]:
    """The open liquidation orders of every account, as liquidation_order records."""
    found = []
    for account_id in shards.account_ids():
        open_set = shards.accounts[account_id].liquidation
        for order in open_set.orders.values() if open_set else ():
            found.append({"order_id": order.order_id, "account": account_id,
                          "symbol": order.symbol, "side": order.side,
                          "qty": str(order.qty), "price": str(order.price)})  # fmt: skip
    return found


def test_an_index_crash_liquidates_hundreds_and_everything_equals_the_replay(
    deployment: Deployment,
):
    partitions = deployment.partitions
    rng = random.Random(13)
    before = setup(partitions, rng) + market("54000", CRASH_AT)
    first, later, second = fills_and_reissue(before, partitions, rng, "54000")
    records = before + first + later + second
    reference_shards = Shards(EngineConfig(partitions=partitions), partitions)
    reference = Reference.of(records, reference_shards)  # type: ignore[arg-type]

    types = [v.get("type") for topic, v in reference.outputs if topic != "decisions"]
    liquidated = {v["account"] for t, v in reference.outputs if v.get("type") == "liquidation"}
    assert len(liquidated) >= 200, len(liquidated)
    assert types.count("liquidation_order") > len(liquidated)  # some re-issued
    assert types.count("adl") >= 1 and types.count("liquidation_cancel") >= 1
    reasons = {v["reason"] for t, v in reference.outputs if v.get("type") == "liquidation_cancel"}
    assert "reissued" in reasons

    worker = deployment.worker("w1")
    worker.env = {**worker.env, "MARGINSTREAM_WEB_TOKEN": TOKEN}
    worker.start().wait_ready()
    deployment.produce(before)
    deployment.produce(first, wait=False)
    time.sleep(0.3)  # in the middle of the fills
    worker.kill9()
    worker.start()
    worker.wait_ready()
    deployment.wait_applied()
    second_worker = deployment.worker("w2")
    second_worker.env = {**second_worker.env, "MARGINSTREAM_WEB_TOKEN": TOKEN}
    second_worker.start()
    deployment.produce(later + second)
    deployment.wait_applied()

    # The fund and the ranking, as either worker gathers them from every partition (its
    # own and the other's), are the replay's; before final_checks, which stops them.
    alive = wait_settled(deployment)
    assert len(alive) == 2 and all(w.health()["assigned"] for w in alive)
    fund_slices = {str(p): e.fund.summary() for p, e in enumerate(reference_shards.engines)}
    ranked = [sides(e, SYMBOL, 1000) for e in reference_shards.engines]
    for asked in alive:
        assert asked.get("/insurance-fund/", headers={})[0] == 401
        assert asked.get(f"/adl/{SYMBOL}/", headers={})[0] == 401
        status, fund = asked.get("/insurance-fund/?limit=1000")
        assert status == 200, fund
        assert fund == fund_total(fund_slices, 1000)
        status, ranking = asked.get(f"/adl/{SYMBOL}/?limit=1000")
        assert status == 200, ranking
        assert ranking == {"symbol": SYMBOL, **merged_sides(ranked, 1000)}
    assert Decimal(fund["uncovered"]) > 0 and Decimal(fund["balance"]) >= 0
    assert ranking["short"] and ranking["long"]
    assert asked.get("/adl/NOPE/")[0] == 404
    assert asked.get("/insurance-fund/?limit=0")[0] == 400
    final_checks(deployment, reference)
    # A worker restored from the changelog alone serves the same fund and ranking.
    restored = deployment.worker("restored").start()
    restored.wait_ready(partitions=partitions)
    assert restored.get("/insurance-fund/?limit=1000") == (200, fund_total(fund_slices, 1000))
    assert restored.get(f"/adl/{SYMBOL}/?limit=1000") == (200, ranking)
    restored.stop()


def test_a_kill_between_the_alerts_and_their_closing_sets_loses_nothing(deployment: Deployment):
    """An index move's alerts are committed before the closing work they call for
    (RiskEngine.steps, owe=True). A worker killed -9 just after that commit (fault point
    before-settle) leaves the work owed in its state, and its group offsets short of the
    move: the next worker does the work, once, and everything equals the replay."""
    partitions = deployment.partitions
    records = setup(partitions, random.Random(5)) + market("54000", CRASH_AT)
    reference = Reference.of(records, Shards(EngineConfig(partitions=partitions), partitions))  # type: ignore[arg-type]
    orders = [v for t, v in reference.outputs if v.get("type") == "liquidation_order"]
    assert len(orders) >= 200
    first = deployment.worker("w1").start(fault="before-settle:1")
    first.wait_ready(partitions=partitions)
    deployment.produce(records[:-2])
    deployment.produce(records[-2:], wait=False)
    deadline = time.monotonic() + 120
    while first.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not first.alive(), "the fault point was never reached"
    alerts = [v for t, v in deployment.outputs() if v.get("type") == "liquidation"]
    published = [v for t, v in deployment.outputs() if v.get("type") == "liquidation_order"]
    # Killed in between: the alerts are out, closing sets are owed (the index record's
    # may be out: its work was done before the mark record's, if they came in one fetch).
    assert alerts and len(published) < len(orders), (len(alerts), len(published))
    assert deployment.lag() > 0  # the move is not counted as read: its work is owed
    deployment.worker("w2").start().wait_ready(partitions=partitions)
    final_checks(deployment, reference)
