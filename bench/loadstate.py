"""Loading a partition's state from its local store: seconds and bytes per account.

A RocksDB part store is filled with N accounts (each with one perpetual position from a
fill and its used fill id, as bench/recovery.py writes them) and the market; then, each
in a fresh process on that same store, core/delivery/unit.py load() runs:

- before: the load of --before REF (a git worktree), which decodes every part;
- parts: this tree's load, which builds the risk view from the raw account parts;
- snapshot: this tree's load once a clean close saved the view's snapshot.

Printed and written to results/loadstate-N.json: seconds of load(), and the process's
resident memory after load() minus before it, per account.

    python -m bench.loadstate --accounts 1000000 --before main
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import write_result
from bench.oldcode import worktree
from bench.recovery import perpetual
from marginstream.core.books.ledger import Account
from marginstream.core.delivery import unit
from marginstream.core.delivery.parts import encode_part, part_key
from marginstream.core.inputs.records import FillRecord, MarkRecord
from marginstream.core.risk.market import Market
from marginstream.stream.store import RocksPartStore

TIERS = [
    {"up_to": "1000000", "initial": "0.02", "maintenance": "0.01"},
    {"up_to": None, "initial": "0.05", "maintenance": "0.025"},
]


def build(path: Path, accounts: int, instruments: int) -> None:
    """The store of a partition holding accounts accounts, as a worker would write it."""
    market, books = Market(), []
    for number in range(instruments):
        symbol = f"P{number:03d}-PERP"
        books.append(perpetual(symbol, TIERS))
        market.apply_instrument(books[-1])
        market.apply_mark(MarkRecord(symbol, Decimal(1000 + number), None, 0))
    store = RocksPartStore(path)
    batch = [(part_key(k), encode_part(1, v)) for k, v in market.parts().items()]
    for number in range(accounts):
        name = f"a{number:07d}"
        account = Account(name, cash=Decimal(100_000), leaf=1 + number)
        instrument = books[number % instruments]
        side = "buy" if number % 2 else "sell"
        price = Decimal(1000 + number % instruments)
        fill = FillRecord(
            f"f{number}", None, name, instrument.symbol, side, Decimal(3), price, Decimal("0.1"), 1
        )
        account.apply_fill(fill, instrument, Decimal(0))
        data = account.to_dict()
        data["ids"] = {"fill": {"n": 0, "ids": {fill.fill_id: 1}}}
        batch.append((part_key(("account", name)), encode_part(1 + number, data)))
        if len(batch) >= 20_000:
            store.write(batch, number)
            batch = []
    store.write(batch, accounts)
    store.close()


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def measure(path: Path, save: bool) -> dict[str, Any]:
    """load() of the store at path in this process (this tree's or --before's code)."""
    store = RocksPartStore(path)
    gc.collect()
    rss = rss_bytes()
    began = time.perf_counter()
    work = unit.load(store)
    seconds = time.perf_counter() - began
    gc.collect()
    grown = rss_bytes() - rss
    accounts = len(work.engine.accounts)
    figures = {
        "seconds": round(seconds, 3),
        "accounts": accounts,
        "bytes_per_account": round(grown / max(accounts, 1)),
        "loaded_from": getattr(work, "loaded_from", "eager"),
    }
    if save:
        began = time.perf_counter()
        unit.save_view(work, store)
        figures["snapshot_save_seconds"] = round(time.perf_counter() - began, 3)
    store.close()
    return figures


def in_process(path: Path, src: Path | None, save: bool) -> dict[str, Any]:
    """measure() in a fresh process; src: another tree's source directory."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = f"{src}:{Path(__file__).parent.parent}"
    command = [sys.executable, "-m", "bench.loadstate", "--measure", str(path)]
    command += ["--save"] if save else []
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--instruments", type=int, default=20)
    parser.add_argument("--before", help="also load with the code of this earlier commit")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--save", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.save)))
        return
    figures: dict[str, Any] = {"accounts": args.accounts, "instruments": args.instruments}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as directory:
        path = Path(directory) / "p0"
        began = time.perf_counter()
        build(path, args.accounts, args.instruments)
        figures["build_seconds"] = round(time.perf_counter() - began, 1)
        if args.before:
            with worktree(args.before) as (tree, commit):
                figures["before"] = {"commit": commit, **in_process(path, tree / "src", False)}
        figures["parts"] = in_process(path, None, save=True)
        figures["snapshot"] = in_process(path, None, save=False)
    for name in ("before", "parts", "snapshot"):
        if name in figures:
            shown = figures[name]
            print(
                f"{name:>9}: load {shown['seconds']:.2f}s, "
                f"{shown['bytes_per_account']:,} bytes per account ({shown['loaded_from']})"
            )
    print(f"written to {write_result(f'loadstate-{args.accounts}', figures)}")


if __name__ == "__main__":
    main()
