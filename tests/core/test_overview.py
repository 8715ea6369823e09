"""The operator's overview (core/outputs/overview.py) against figures made the slow way: every
account decoded and figured by the exact path, over the liquidation scenario of the
stream tests (a crash, fills back, re-issues, deficits, ADL) at each of its stages; and
the ADL queues' heads against the whole ranking, ties included."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marginstream.core.liquidation import adl
from marginstream.core.outputs.alerts import LEVELS
from marginstream.core.outputs.overview import (
    RATIO_BUCKETS,
    RATIO_EDGES,
    Limits,
    merged,
    partition_overview,
)
from marginstream.core.risk.figures import figures
from marginstream.core.shards import Shards
from tests.stream.test_liquidation import (
    CRASH_AT,
    SYMBOL,
    fills_and_reissue,
    market,
    replayed,
    setup,
)

SMALL = Limits(nearest=7, closing=5, ranked=3, history=4)


def stages() -> list[Shards]:
    """The scenario's engines before the crash, after it, after the first fills and the
    re-issue, and after the last fills."""
    rng = random.Random(13)
    before = setup(4, rng)
    crashed = before + market("54000", CRASH_AT)
    first, later, second = fills_and_reissue(crashed, 4, rng, "54000")
    return [
        replayed(records, 4)[0]
        for records in (before, crashed, crashed + first + later, crashed + first + later + second)
    ]


STAGES = stages()


def slowly(shards: Shards, limits: Limits) -> dict[str, Any]:
    """The deployment's overview, every account figured by the exact path."""
    everyone = []
    for p, engine in enumerate(shards.engines):
        for account_id in engine.view.account_ids():
            account = engine.accounts[account_id]
            everyone.append((p, engine, account, figures(account, engine.market)))
    held = [e for e in everyone if e[3].margin_ratio > 0.0]
    held.sort(key=lambda e: (-e[3].margin_ratio, e[2].account_id))
    counts = [0] * len(RATIO_BUCKETS)
    for _, _, _, found in held:
        counts[sum(found.margin_ratio >= edge for edge in RATIO_EDGES)] += 1
    sets = [
        (account.liquidation.deadline, account.account_id, p)
        for p, _, account, _ in everyone
        if account.liquidation is not None
    ]
    sets.sort()
    return {
        "levels": {name: sum(e[2].level == name for e in everyone) for name in LEVELS},
        "ratio_counts": counts,
        "flat": len(everyone) - len(held),
        "nearest": [(e[2].account_id, e[0]) for e in held[: limits.nearest]],
        "open": len(sets),
        "sets": [(account, p) for _, account, p in sets[: limits.closing]],
        "balance": sum((e.fund.balance for e in shards.engines), Decimal(0)),
    }


@pytest.mark.parametrize("stage", range(len(STAGES)))
@pytest.mark.parametrize("limits", [Limits(), SMALL], ids=["default", "small"])
def test_the_overview_is_what_every_account_figured_exactly_says(stage: int, limits: Limits):
    shards = STAGES[stage]
    whole = merged({p: partition_overview(e, limits) for p, e in enumerate(shards.engines)}, limits)
    want = slowly(shards, limits)
    assert whole["levels"] == want["levels"]
    assert whole["ratios"]["counts"] == want["ratio_counts"]
    assert whole["ratios"]["flat"] == want["flat"]
    assert [(e["account"], e["partition"]) for e in whole["nearest"]] == want["nearest"]
    assert whole["closing"]["open"] == want["open"]
    assert [(s["account"], s["partition"]) for s in whole["closing"]["sets"]] == want["sets"]
    assert Decimal(whole["fund"]["balance"]) == want["balance"]
    assert len(whole["fund"]["history"]) <= limits.history
    for symbol, sides in whole["adl"].items():
        ranked = adl.merged_sides((adl.sides(e, symbol) for e in shards.engines), limits.ranked)
        untagged = {
            side: [{k: v for k, v in e.items() if k != "partition"} for e in entries]
            for side, entries in sides.items()
        }
        assert untagged == ranked, symbol
    assert whole["adl"][SYMBOL]["short"]
    if stage in (1, 2):  # the crash, the first fills: liquidations under way
        assert whole["levels"]["liquidation"] > 0
        assert whole["closing"]["open"] > limits.closing


class _Engine:
    """Only what adl.sides reads of an engine."""

    def __init__(self, view: Any, accounts: Any) -> None:
        self.view, self.accounts = view, accounts

    def ranking(self, symbol: str) -> list[adl.Ranked]:
        return adl.ranking(self.view, symbol)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.sampled_from(["0.5", "1", "1", "2", "-1", "-1", "-0.5", "3"]), min_size=1,
                   max_size=25),
    cash=st.lists(st.sampled_from(["1000", "1000", "5000", "300"]), min_size=25, max_size=25),
    limit=st.integers(1, 6),
)  # fmt: skip
def test_the_queues_heads_are_the_ranking_s_first_entries_ties_and_all(
    sizes: list[str], cash: list[str], limit: int
):
    from tests.core.venue import Venue

    venue = Venue()
    venue.perpetual("P")
    venue.index("100")
    venue.mark("P", "100")
    for n, size in enumerate(sizes):
        account = f"a{99 - n:02d}"  # made in the reverse of the ranking's tie order
        venue.deposit(account, cash[n])
        side = "buy" if Decimal(size) > 0 else "sell"
        venue.fill(account, "P", side, str(abs(Decimal(size))), "100")
    venue.mark("P", "110")
    engine = venue.engine
    heads = adl.heads(engine.view, "P", limit)
    whole = adl.sides(_Engine(engine.view, engine.accounts), "P", limit)
    assert [e.account for e in heads if e.side == adl.LONG] == [e["account"] for e in whole["long"]]
    assert [e.account for e in heads if e.side == adl.SHORT] == [
        e["account"] for e in whole["short"]
    ]
