"""What the risk page costs a partition: one overview (core/outputs/overview.py) of 100k accounts
after a 10% fall, all on standard margin and half on portfolio margin, and its parts.

Why: a worker makes each partition's overview at most once a second (stream/overviews.py)
on the processing loop, whoever asks (every open page, every scrape), so its time is the
share of each second the page can take from record processing. The ADL queues' heads are
measured against the whole ranking (adl.sides), which /adl/{symbol}/ still builds.

    python -m bench.overview --accounts 100000
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from bench.common import write_result
from bench.remargin import T0, build, engine_move
from marginstream.core.liquidation import adl
from marginstream.core.outputs.overview import partition_overview


def timed(run: Callable[[], Any], repeats: int = 5) -> tuple[float, Any]:
    """The median of repeats, in milliseconds, and the last result."""
    times, found = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        found = run()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), found


def measure(accounts: int, portfolio: float) -> dict[str, Any]:
    book, _ = build(accounts, 50, portfolio=portfolio)
    engine = book.engine
    engine_move(book, 60_000 * 0.9, T0 + 20_000_000)
    view = engine.view
    numbers = np.arange(view.account_count())
    figures: dict[str, Any] = {"accounts": view.account_count(), "portfolio_share": portfolio}
    figures["overview_ms"], overview = timed(lambda: partition_overview(engine))
    figures["ratios_ms"], _ = timed(lambda: view.margin_ratios(numbers))
    figures["adl_heads_ms"], _ = timed(lambda: adl.heads(view, "BTC-PERP", 10))
    figures["adl_whole_ranking_ms"], _ = timed(lambda: adl.sides(engine, "BTC-PERP", 10), 3)
    figures["summary_bytes"] = len(orjson.dumps(overview))
    figures["liquidating"] = overview["levels"]["liquidation"]
    figures["open_sets"] = overview["closing"]["open"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    args = parser.parse_args()
    runs = {}
    for share in (0.0, 0.5):
        found = runs[f"portfolio_{share}"] = measure(args.accounts, share)
        print(
            f"{found['accounts']} accounts, {share:.0%} portfolio: overview "
            f"{found['overview_ms']:.1f} ms (ratios {found['ratios_ms']:.1f}, ADL heads "
            f"{found['adl_heads_ms']:.1f} vs whole ranking {found['adl_whole_ranking_ms']:.1f}"
            f"), {found['summary_bytes']} bytes, {found['liquidating']} in liquidation, "
            f"{found['open_sets']} open sets"
        )
    print("results:", write_result("overview", {"runs": runs}))


if __name__ == "__main__":
    main()
