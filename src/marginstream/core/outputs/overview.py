"""What an operator watches of a partition, and of the deployment as one: the risk page's
figures (GET /risk/ and /risk/summary, stream/riskpage.py) and the metrics fed from them.

A partition's overview is made from its risk view's columns (NumPy, no account decoded)
except for the few accounts it names: the nearest to liquidation (their figures by the
exact path, as GET /accounts/{id}/ shows them), the open closing sets it lists and the
heads of each auto-deleveraging queue. Overviews of every partition merge into the
deployment's (`merged`), the way the fund and the ADL views gather theirs: sums, and
sorted lists merged and cut. Pure, so the replay's engines give the same page.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import numpy as np

from marginstream.core.books.accounts import Accounts
from marginstream.core.inputs.numbers import decimal_text, risk_text
from marginstream.core.liquidation import adl
from marginstream.core.liquidation.fund import InsuranceFund
from marginstream.core.outputs.alerts import LEVELS
from marginstream.core.risk.figures import figures
from marginstream.core.risk.market import Market
from marginstream.core.risk.view import RiskView, margin_ratios

# Margin ratio (maintenance / equity) buckets: tenths up to 1.0, where liquidation starts
# at the default threshold, then everything at or past it (equity <= 0 included).
RATIO_EDGES = tuple(n / 10 for n in range(1, 11))
RATIO_BUCKETS = (*(f"{n / 10:.1f}-{(n + 1) / 10:.1f}" for n in range(10)), "1.0+")


@dataclass(frozen=True)
class Limits:
    """How much of each list an overview keeps (the page shows these many)."""

    nearest: int = 50
    closing: int = 50
    ranked: int = 5  # per symbol and side
    history: int = 50  # fund entries


class Watched(Protocol):
    """An engine, as far as its overview reads it."""

    view: RiskView
    market: Market
    accounts: Accounts
    fund: InsuranceFund


def partition_overview(engine: Watched, limits: Limits = Limits()) -> dict[str, Any]:
    """One partition's figures: accounts by level, the ratio histogram, the nearest to
    liquidation, the open closing sets, the fund's slice and the ADL queues' heads."""
    view = engine.view
    equity, _, maintenance = view.totals(np.arange(view.account_count()))
    ratio = margin_ratios(equity, maintenance)
    level = view.account_column("level")
    fund = engine.fund.summary()
    return {
        "levels": {name: int(np.count_nonzero(level == n)) for n, name in enumerate(LEVELS)},
        "ratios": ratio_histogram(ratio),
        "nearest": _nearest(engine, ratio, limits.nearest),
        "closing": _closing(engine, limits.closing),
        "fund": {**fund, "history": fund["history"][-limits.history :][::-1]},
        "adl": {
            symbol: {
                side: [adl.shown(e, engine.accounts, symbol) for e in entries if e.side == side]
                for side in adl.SIDES
            }
            for symbol in view.symbols()
            if (entries := adl.heads(view, symbol, limits.ranked, equity))
        },
    }


def ratio_histogram(ratio: np.ndarray) -> dict[str, Any]:
    """Accounts per ratio bucket, and those with nothing to maintain (flat: ratio 0)."""
    held = ratio[ratio > 0.0]
    counts = np.bincount(np.searchsorted(RATIO_EDGES, held, side="right"), minlength=11)
    return {
        "buckets": list(RATIO_BUCKETS),
        "counts": [int(c) for c in counts],
        "flat": int(ratio.size - held.size),
    }


def _nearest(engine: Watched, ratio: np.ndarray, limit: int) -> list[dict[str, Any]]:
    """The `limit` accounts with the highest ratio (ties: by id), figured exactly."""
    view = engine.view
    held = np.flatnonzero(ratio > 0.0)
    held = held[view.first(held, -ratio[held], limit)]
    shown = []
    for number in held.tolist():
        account = engine.accounts[view.account_id(number)]
        found = figures(account, engine.market)
        shown.append(
            (
                (-found.margin_ratio, account.account_id),
                {
                    "account": account.account_id,
                    "ratio": risk_text(found.margin_ratio),
                    "level": account.level,
                    "equity": risk_text(found.equity),
                    "maintenance": risk_text(found.maintenance_margin),
                },
            )
        )
    shown.sort(key=lambda entry: entry[0])
    return [entry for _, entry in shown]


def _closing(engine: Watched, limit: int) -> dict[str, Any]:
    """Open closing sets: how many, and the `limit` due first (by deadline, then account;
    a set issued on a record without a time is due at the next one that has, first).
    Chosen from the view's deadline column, so only the shown accounts are decoded."""
    view = engine.view
    deadline = view.account_column("deadline")
    numbers = np.flatnonzero(deadline != math.inf)
    clock = engine.market.clock()
    sets = []
    for number in numbers[view.first(numbers, deadline[numbers], limit)].tolist():
        account = engine.accounts[view.account_id(number)]
        open_set = account.liquidation
        if open_set is not None:
            sets.append(
                {
                    "account": account.account_id,
                    "set": open_set.id,
                    "issued": open_set.issued,
                    "deadline": open_set.deadline,
                    "age_ms": max(0, clock - open_set.issued),
                    "orders": len(open_set.orders),
                    "sets_issued": account.liquidation_seq,
                }
            )
    return {"open": int(numbers.size), "sets": sets}


def _by_deadline(entry: dict[str, Any]) -> tuple[int, str]:
    return (entry["deadline"], entry["account"])


def merged(parts: dict[int, dict[str, Any]], limits: Limits = Limits()) -> dict[str, Any]:
    """Partitions' overviews ({partition: overview}) as the deployment's: every entry
    named with its partition. The fund is summed only over every partition given; the
    caller passes None for it when some are missing (a sum over some slices is wrong)."""
    ordered = sorted(parts.items())
    tagged = {p: _tagged(p, part) for p, part in ordered}
    histogram = [part["ratios"] for _, part in ordered]
    return {
        "levels": {n: sum(part["levels"][n] for _, part in ordered) for n in LEVELS},
        "ratios": {
            "buckets": list(RATIO_BUCKETS),
            "counts": [sum(h["counts"][n] for h in histogram) for n in range(len(RATIO_BUCKETS))],
            "flat": sum(h["flat"] for h in histogram),
        },
        "nearest": list(heapq.merge(*(t["nearest"] for t in tagged.values()), key=_by_ratio))[
            : limits.nearest
        ],
        "closing": {
            "open": sum(part["closing"]["open"] for _, part in ordered),
            "sets": list(
                heapq.merge(
                    *(t["closing"]["sets"] for t in tagged.values()),
                    key=_by_deadline,
                )
            )[: limits.closing],
        },
        "fund": _fund(tagged, limits.history),
        "adl": _adl(tagged, limits.ranked),
    }


def _tagged(partition: int, part: dict[str, Any]) -> dict[str, Any]:
    def tag(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**entry, "partition": partition} for entry in entries]

    return {
        "nearest": tag(part["nearest"]),
        "closing": {"sets": tag(part["closing"]["sets"])},
        "fund": {**part["fund"], "history": tag(part["fund"]["history"])},
        "adl": {
            symbol: {side: tag(entries) for side, entries in sides.items()}
            for symbol, sides in part["adl"].items()
        },
    }


def _by_ratio(entry: dict[str, Any]) -> tuple[float, str]:
    return (-float(entry["ratio"]), entry["account"])


def _fund(tagged: dict[int, dict[str, Any]], limit: int) -> dict[str, Any]:
    slices = [t["fund"] for t in tagged.values()]
    history = sorted(
        (entry for s in slices for entry in s["history"]),
        key=lambda e: (e["ts"], e["partition"], e["seq"]),
        reverse=True,
    )
    return {
        "balance": decimal_text(sum((Decimal(s["balance"]) for s in slices), Decimal(0))),
        "uncovered": decimal_text(sum((Decimal(s["uncovered"]) for s in slices), Decimal(0))),
        "history": history[:limit],
    }


def _adl(tagged: dict[int, dict[str, Any]], limit: int) -> dict[str, Any]:
    symbols = sorted({symbol for t in tagged.values() for symbol in t["adl"]})
    return {
        symbol: adl.merged_sides(
            (t["adl"].get(symbol, {side: [] for side in adl.SIDES}) for t in tagged.values()),
            limit,
        )
        for symbol in symbols
    }
