"""Auto-deleveraging: which opposite positions give up profit for a deficit the fund
could not cover, in Binance's ranking.

score = PnL% x effective leverage when PnL% > 0, PnL% / effective leverage otherwise,
with PnL% = unrealised PnL / |position cost| and effective leverage = |notional at the
mark| / account equity (infinite at equity <= 0). Highest score first; ties by account.
The quantities named are those whose unrealised profit covers the deficit, position by
position down the ranking, in whole lots (a position's rest for its last).

Scores are risk figures computed from the risk view's columns for every holder at once
(no account decoded); an account is decoded only for the exact size of a position shown
or named. A partition ranks the positions it owns: the deciding engine has exact state
for no other. GET /adl/{symbol}/ and `replay --state` merge the partitions' rankings
(merged below), each partition's list being sorted already.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any, NamedTuple, Protocol

import numpy as np

from marginstream.core.books.ledger import Account
from marginstream.core.inputs.numbers import decimal_text, risk_text
from marginstream.core.risk.view import RiskView

LONG, SHORT = "long", "short"
SIDES = (LONG, SHORT)
MAX_NAMED = 100  # positions one adl record names: its size stays far below Kafka's limit


class Ranked(NamedTuple):
    # (-score, account), the score as shown (15 digits): ascending is the ranking's order,
    # here and wherever shown rankings are merged (stream/gather.py).
    sort_key: tuple[float, str]
    account: str
    side: str
    score: float
    pnl_percent: float
    leverage: float
    unrealized: float
    qty: float  # unsigned; exact_qty gives the ledger's


def ranking(view: RiskView, symbol: str) -> list[Ranked]:
    """Every open position in symbol among the view's accounts, highest score first."""
    scored = _scored(view, symbol)
    return _ranked(view, scored, np.arange(scored[0].size)) if scored else []


def heads(
    view: RiskView, symbol: str, limit: int, equity: np.ndarray | None = None
) -> list[Ranked]:
    """The first `limit` of each side of ranking(view, symbol), in its order, without
    making an entry for every holder (the risk page asks every second, of every symbol).
    Candidates are the `limit` highest raw scores of a side and every score within 1e-13
    of the lowest of them: a score outside cannot round (15 digits) to one inside, so
    cannot tie its way in on the account id. Ties can be many (every losing position of
    an account with no equity scores 0): candidates are ordered on their few distinct
    scores as shown and their ids, and only the first `limit` become entries. equity:
    every account's, if the caller has it (RiskView.open_positions)."""
    scored = _scored(view, symbol, equity)
    if not scored:
        return []
    accounts, score, long = scored[0], scored[2], scored[1] > 0.0
    chosen = []
    for side in (long, ~long):
        numbers = np.flatnonzero(side)
        if numbers.size > limit:
            kth = -np.partition(-score[numbers], limit - 1)[limit - 1]
            floor = kth if math.isinf(kth) else kth - abs(kth) * 1e-13
            numbers = numbers[score[numbers] >= floor]
            distinct, which = np.unique(score[numbers], return_inverse=True)
            shown = np.array([-float(risk_text(s)) for s in distinct.tolist()])[which]
            numbers = numbers[view.first(accounts[numbers], shown, limit)]
        chosen.append(numbers)
    ranked = _ranked(view, scored, np.concatenate(chosen))
    return [e for e in ranked if e.side == LONG] + [e for e in ranked if e.side == SHORT]


def _scored(
    view: RiskView, symbol: str, equity: np.ndarray | None = None
) -> tuple[np.ndarray, ...] | None:
    """(account numbers, qty, score, pnl%, leverage, unrealized) of every open position
    in symbol (None: there is none)."""
    columns = view.open_positions(symbol, equity)
    if not columns["account"].size:
        return None
    cost, unrealized = np.abs(columns["cost"]), columns["unrealized"]
    equity, notional = columns["equity"], columns["notional"]
    with np.errstate(divide="ignore", invalid="ignore"):
        pnl = np.where(cost > 0.0, unrealized / cost, 0.0)
        leverage = np.where(equity > 0.0, notional / equity, np.inf)
        losing = np.where(leverage > 0.0, pnl / leverage, pnl)
        score = np.where(pnl > 0.0, pnl * leverage, losing)
    return columns["account"], columns["qty"], score, pnl, leverage, unrealized


def _ranked(view: RiskView, scored: tuple[np.ndarray, ...], chosen: np.ndarray) -> list[Ranked]:
    """The chosen positions (indexes into scored's columns) as Ranked, sorted."""
    accounts, qty, score, pnl, leverage, unrealized = (column[chosen] for column in scored)
    ranked = [
        Ranked(
            (-float(risk_text(s)), account), account, LONG if q > 0.0 else SHORT,
            s, p, lev, u, abs(q),
        )
        for account, q, s, p, lev, u in zip(
            map(view.account_id, accounts.tolist()),
            qty.tolist(), score.tolist(), pnl.tolist(), leverage.tolist(),
            unrealized.tolist(), strict=True,
        )
    ]  # fmt: skip
    ranked.sort()
    return ranked


def merged(rankings: Iterable[list[Ranked]]) -> list[Ranked]:
    """Sorted rankings (one per partition) as one ranking."""
    return list(heapq.merge(*rankings))


class Ranks(Protocol):
    """An engine, as a ranking of its positions is shown."""

    accounts: Mapping[str, Account]

    def ranking(self, symbol: str) -> list[Ranked]: ...


def sides(engine: Ranks, symbol: str, limit: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """An engine's ranking of symbol, as shown, per side: the first limit of each (None:
    all)."""
    shown_sides: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for entry in engine.ranking(symbol):
        side = shown_sides[entry.side]
        if limit is None or len(side) < limit:
            side.append(shown(entry, engine.accounts, symbol))
    return shown_sides


def merged_sides(
    rankings: Iterable[dict[str, list[dict[str, Any]]]], limit: int | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Partitions' shown rankings (sides) as one, limit per side: merged on the score as
    shown, then account, the order each partition's is sorted in (Ranked.sort_key)."""

    def key(entry: dict[str, Any]) -> tuple[float, str]:
        return (-float(entry["score"]), entry["account"])

    rankings = list(rankings)
    return {
        side: list(heapq.merge(*(r[side] for r in rankings), key=key))[:limit] for side in SIDES
    }


def exact_qty(accounts: Mapping[str, Account], entry: Ranked, symbol: str) -> Decimal:
    return abs(accounts[entry.account].positions[symbol].qty)


def shown(
    entry: Ranked, accounts: Mapping[str, Account], symbol: str, qty: Decimal | None = None
) -> dict[str, Any]:
    """A ranked position as GET /adl/{symbol}/, `replay --state` and `adl` records show it."""
    return {
        "account": entry.account,
        "side": entry.side,
        "qty": decimal_text(exact_qty(accounts, entry, symbol) if qty is None else qty),
        "score": risk_text(entry.score),
        "pnl_percent": risk_text(entry.pnl_percent),
        "effective_leverage": risk_text(entry.leverage),
        "unrealized_pnl": risk_text(entry.unrealized),
    }


def deleverage(
    ranked: list[Ranked],
    accounts: Mapping[str, Account],
    symbol: str,
    side: str,
    deficit: float,
    lot: Decimal,
) -> tuple[list[tuple[Ranked, Decimal]], float]:
    """The positions of side (in ranking order) and quantities whose unrealised profit
    covers deficit, at most MAX_NAMED of them; and what it leaves uncovered (> 0: not
    enough profit on that side among them)."""
    chosen = []
    left = deficit
    for entry in ranked:
        if left <= 0.0 or len(chosen) == MAX_NAMED:
            break
        if entry.side != side or entry.unrealized <= 0.0:
            continue
        held = exact_qty(accounts, entry, symbol)
        per_unit = entry.unrealized / float(held)
        lots = (Decimal(repr(left / per_unit)) / lot).to_integral_value(rounding=ROUND_CEILING)
        qty = min(lots * lot, held)
        chosen.append((entry, qty))
        left -= float(qty) * per_unit
    return chosen, max(left, 0.0)
