"""Portfolio accounts' liquidation prices on the shared grid of index scales: time and
accuracy by grid step (core/portfolio/prices.py).

Why: the grid's step trades the search's cost (fewer shared points) against the error of
the last step's linear interpolation. Each step is measured on the same liquidated books,
against a grid fifty times finer than the chosen one.

    python -m bench.portfolio --accounts 3000
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import marginstream.core.portfolio.prices as grid_prices
from bench.common import write_result
from bench.remargin import T0, build, engine_move
from marginstream.core.liquidation.prices import many_portfolio_prices
from marginstream.core.risk.figures import risk_rows


def _with_step(step: float) -> None:
    grid_prices.STEP = step
    grid_prices.LADDER = sorted(
        [(d, grid_prices._j(1.0 - d), -1) for d in grid_prices._DOWN]
        + [(d, grid_prices._j(1.0 + d), 1) for d in grid_prices._UP]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=3000)
    args = parser.parse_args()
    book, _ = build(args.accounts, 50, portfolio=0.5)
    engine = book.engine
    engine_move(book, 60_000 * 0.9, T0 + 20_000_000)
    books = [
        (a, risk_rows(a, engine.market))
        for a in engine.accounts.values()
        if a.portfolio and any(s != "BTC-PERP" and p.qty for s, p in a.positions.items())
    ]
    chosen = grid_prices.STEP

    def run(step: float) -> tuple[list[Any], float]:
        _with_step(step)
        engine.market.shifted_exposures = (-1, {})
        began = time.perf_counter()
        found = many_portfolio_prices(books, engine.market, 1.0)
        return found, time.perf_counter() - began

    reference, _ = run(1.0 + (chosen - 1.0) / 50)
    figures: dict[str, Any] = {"books": len(books), "chosen_step": chosen, "steps": {}}
    print(f"{len(books)} portfolio books with options, after a 10% fall")
    for step in (chosen, 1.0025, 1.005, 1.01):
        found, seconds = run(step)
        errors = {}
        for name in ("liquidation", "bankruptcy"):
            errors[name] = max(
                abs(getattr(x[s], name) - getattr(y[s], name)) / getattr(y[s], name)
                for x, y in zip(found, reference, strict=True)
                for s in y
                if getattr(y[s], name)
            )
        figures["steps"][str(step)] = {"seconds": seconds, "relative_error": errors}
        print(
            f"step {step}: {seconds * 1000:.0f} ms, largest error liquidation "
            f"{errors['liquidation']:.1e}, bankruptcy {errors['bankruptcy']:.1e}"
        )
    _with_step(chosen)
    print(f"written to {write_result('portfolio-prices', figures)}")


if __name__ == "__main__":
    main()
