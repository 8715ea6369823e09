"""What verifiable state costs (core/commitments): the state tree per path update, a
commitment per commit, a market move's re-pricing of every holder's sums, and building a
partition's tree when it is opened. Printed and written to bench/results/commitments.json.

    python -m bench.commitments --leaves 131072 --accounts 20000
"""

from __future__ import annotations

import argparse
import random
import time
from decimal import Decimal
from typing import Any

import orjson

from bench.common import write_result
from bench.remargin import Book, build
from marginstream.core.commitments import leaf
from marginstream.core.commitments.record import Commitments
from marginstream.core.commitments.tree import SumTree, leaf_node
from marginstream.core.inputs.records import IndexRecord, MarkRecord


def tree_figures(leaves: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    tree = SumTree()
    began = time.perf_counter()
    for index in range(leaves):
        tree.set(index, leaf_node(index.to_bytes(8, "big"), index, 0))
    tree.root()
    built = time.perf_counter() - began
    figures: dict[str, Any] = {"leaves": leaves, "build_s": round(built, 3)}
    for batch in (1, 100, 10_000, 100_000):
        rounds = max(1, 2_000 // batch)
        spent = 0.0
        for _ in range(rounds):
            nodes = [(rng.randrange(leaves), leaf_node(rng.randbytes(8), rng.randrange(10**12), 0))
                     for _ in range(batch)]  # fmt: skip
            began = time.perf_counter()
            for index, node in nodes:
                tree.set(index, node)
            tree.root()
            spent += time.perf_counter() - began
        figures[f"update_us_batch_{batch}"] = round(spent / (rounds * batch) * 1e6, 2)
    return figures


def engine_figures(book: Book, moves: int) -> dict[str, Any]:
    engine = book.engine
    accounts = len(engine.accounts)
    began = time.perf_counter()
    commitments = Commitments.of_engine(engine, 0)
    from_accounts = time.perf_counter() - began
    names = sorted(engine.accounts)
    parts = [orjson.loads(orjson.dumps(engine.part(("account", a)))) for a in names]
    began = time.perf_counter()
    Commitments.of_parts(parts, engine.market, engine.fund, 0, commitments.params, None)
    from_parts = time.perf_counter() - began
    # One record's commit: one account changed (its part re-encoded, its leaf re-hashed).
    names = names[:2000]
    began = time.perf_counter()
    for epoch, name in enumerate(names, start=1):
        commitments.seal(engine, {name: engine.part(("account", name))}, False, set(), epoch)
    per_commit = (time.perf_counter() - began) / len(names)
    # A market move: every holder's sums re-priced (the index re-prices every option).
    spent = []
    for n in range(moves):
        price, ts = Decimal(60_000 + 600 * (n % 5 - 2)), 1_800_000_000_000 + n
        repriced = engine.market.apply_index(IndexRecord("BTC", price, ts))
        repriced |= engine.market.apply_mark(MarkRecord("BTC-PERP", price, None, ts))
        began = time.perf_counter()
        commitments.seal(engine, {}, False, repriced, len(names) + n + 1)
        spent.append(time.perf_counter() - began)
    move = sorted(spent)[len(spent) // 2]
    return {
        "accounts": accounts,
        "tree_from_accounts_s": round(from_accounts, 3),
        "tree_from_parts_s": round(from_parts, 3),
        "tree_from_parts_us_per_account": round(from_parts / accounts * 1e6, 1),
        "commit_of_one_account_us": round(per_commit * 1e6, 1),
        "market_move_reprice_s": round(move, 3),
        "market_move_reprice_us_per_account": round(move / accounts * 1e6, 2),
        "equity_place": leaf.SCALE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=131_072)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--moves", type=int, default=5)
    args = parser.parse_args()
    figures = {"tree": tree_figures(args.leaves)}
    print("tree:", figures["tree"], flush=True)
    book, _ = build(args.accounts, strikes=20)
    figures["engine"] = engine_figures(book, args.moves)
    print("engine:", figures["engine"], flush=True)
    print("written:", write_result("commitments", figures))


if __name__ == "__main__":
    main()
