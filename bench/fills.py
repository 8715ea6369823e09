"""One market maker's fills: is the cost of a fill flat, and is every state record small?

One account receives N fills spread over 7 days of event time (the default duplicate
retention, so every id stays live: the worst case for the duplicate window). Records go
through the delivery layer as a worker applies them: PartitionState, sealed every
--commit records into a RocksDB part store, as a commit would. Printed and written to
results/fills.json: fills per second of this process's CPU time for each 10k window
(first and last, and their ratio: CPU time, because the machine is shared and wall time
moves with its other work), the largest record any commit wrote, the account part's
size, the store's keys, and the process's peak RSS.

    python -m bench.fills --fills 1000000 --before 9d0ffcc --before-fills 50000

--before REF runs the same loop on the core of an earlier commit (a git worktree, in a
subprocess), which kept used ids inside the account part.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import write_result
from bench.oldcode import worktree
from marginstream.core import EngineConfig, Envelope, RiskEngine
from marginstream.core.delivery.sources import Source
from marginstream.core.delivery.unit import PartitionState
from marginstream.stream.store import RocksPartStore

T0 = 1_795_000_000_000
WEEK_MS = 7 * 86_400_000
WINDOW = 10_000
TIERS = [{"up_to": None, "initial": "0.1", "maintenance": "0.05"}]


def market_maker() -> RiskEngine:
    engine = RiskEngine(EngineConfig())
    setup = [
        ("instruments", {"type": "instrument", "symbol": "BTC-PERP", "kind": "perpetual",
                         "underlying": "BTC", "contract_size": "1", "status": "active",
                         "margin": {"tiers": TIERS}}),
        ("prices", {"type": "mark", "symbol": "BTC-PERP", "price": "60000", "ts": T0}),
        ("transfers", {"type": "deposit", "transfer_id": "d", "account": "mm",
                       "amount": "10000000", "ts": T0}),
    ]  # fmt: skip
    for offset, (topic, value) in enumerate(setup):
        engine.apply(Envelope(topic, 1_000_000, offset, value.get("account"), value))
    return engine


def run(fills: int, commit_every: int, directory: Path) -> dict[str, object]:
    store = RocksPartStore(directory / "store")
    state = PartitionState(market_maker(), version=0)
    source = Source("orders", 0)
    spacing = WEEK_MS // fills
    rates: list[float] = []
    largest = 0
    began = time.perf_counter()
    window_began = time.process_time()
    for n in range(fills):
        value = {
            "type": "fill", "fill_id": f"mm-fill-{n:012d}", "account": "mm",
            "symbol": "BTC-PERP", "side": "buy" if n % 2 == 0 else "sell", "qty": "0.01",
            "price": "60000", "fee": "0.06", "ts": T0 + n * spacing,
        }  # fmt: skip
        outcome = state.apply(Envelope("orders", 0, n, "mm", value), source, n)
        assert not outcome.outputs or outcome.outputs[0].topic != "dead-letters", outcome
        if (n + 1) % commit_every == 0:
            sealed = state.seal()
            largest = max(largest, *(len(v) for _, v in sealed.parts if v is not None))
            store.write(sealed.parts, n)
        if (n + 1) % WINDOW == 0:
            now = time.process_time()
            rates.append(WINDOW / (now - window_began))
            window_began = now
    elapsed = time.perf_counter() - began
    keys = sum(1 for _ in store.items())
    account_bytes = len(store.get(b"account/mm") or b"")
    store.close()
    return {
        "fills": fills,
        "commit_every": commit_every,
        "seconds": round(elapsed, 1),
        "fills_per_wall_second": round(fills / elapsed),
        "first_10k_per_cpu_second": round(rates[0]),
        "last_10k_per_cpu_second": round(rates[-1]),
        "last_over_first": round(rates[-1] / rates[0], 3),
        "slowest_10k_over_first": round(min(rates) / rates[0], 3),
        "largest_record_bytes": largest,
        "account_part_bytes": account_bytes,
        "store_keys": keys,
        "peak_rss_mib": peak_rss_mib(),
    }


def peak_rss_mib() -> int:
    """This process's peak resident set (VmHWM: getrusage's maximum survives an exec, so
    a subprocess would report its parent's)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return round(int(line.split()[1]) / 1024)


def before(ref: str, fills: int, commit_every: int) -> dict[str, object]:
    """The same loop on the core of ref (its own worktree, in a subprocess)."""
    with worktree(ref) as (tree, commit):
        env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}:{Path(__file__).parent.parent}"}
        command = [sys.executable, "-m", "bench.fills", "--fills", str(fills),
                   "--commit", str(commit_every), "--json"]  # fmt: skip
        result = subprocess.run(command, env=env, capture_output=True, check=True)
        return {"commit": commit, **json.loads(result.stdout.splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fills", type=int, default=1_000_000)
    parser.add_argument("--commit", type=int, default=1000, help="records per commit")
    parser.add_argument("--before", help="also run the core of this earlier commit")
    parser.add_argument("--before-fills", type=int, default=50_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        figures: dict[str, object] = run(args.fills, args.commit, Path(directory))
    if args.json:
        print(json.dumps(figures))
        return
    if args.before:
        figures["before"] = before(args.before, args.before_fills, args.commit)
    for name, value in figures.items():
        print(f"{name:>24}: {value}")
    print(f"written to {write_result('fills', figures)}")


if __name__ == "__main__":
    main()
