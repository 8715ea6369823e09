"""Every benchmark, quick (`make bench`, a few minutes) or full (`make bench-full`).

Each script prints its figures and writes bench/results/<name>.json (the quick run:
bench/results/quick/<name>.json); BENCHMARKS.md tabulates them with the machine,
versions and date of the run. With --before REF the throughput, core, restore and
load-state benchmarks also run the code at REF beside the current one, in the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

QUICK_RESULTS = Path(__file__).parent / "results" / "quick"
QUICK = [
    ["bench.remargin", "--accounts", "20000", "--moves", "10", "--naive-moves", "2"],
    ["bench.throughput", "--accounts", "10000", "--records", "15000"],
    [
        "bench.latency",
        "--accounts",
        "10000",
        "--moves",
        "6",
        "--rates",
        "500",
        "2000",
        "--seconds",
        "5",
    ],
    ["bench.recovery", "--accounts", "50000", "--takeover-accounts", "20000"],
    ["bench.core", "--accounts", "4000", "--records", "12000", "--repeat", "1"],
    ["bench.restore", "--accounts", "100000", "--rounds", "1"],
    ["bench.cascade", "--quick"],  # 1,000 accounts liquidated by one index move, 2 cascades
    ["bench.repartition", "--accounts", "20000"],  # a stopped deployment moved, 8 -> 16
]
FULL = [
    ["bench.remargin", "--accounts", "100000", "--strikes", "50", "--moves", "20"],
    [
        "bench.throughput",
        *("--accounts", "100000", "--instruments", "20", "--records", "150000"),
        *("--scale-out", "2", "4"),
    ],
    ["bench.latency", "--accounts", "100000", "--moves", "20", "--rates", "1000", "5000"],
    ["bench.recovery", "--accounts", "100000", "--takeover-accounts", "100000"],
    ["bench.recovery", "--accounts", "1000000", "--takeover-accounts", "100000"],
    ["bench.core"],
    ["bench.restore", "--accounts", "1000000"],
    ["bench.loadstate", "--accounts", "1000000"],
    ["bench.cascade", "--accounts", "10000", "--cascades", "3"],  # liquidation cascades
    ["bench.repartition", "--accounts", "1000000"],
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument(
        "--before", metavar="REF", help="also run this commit's code where compared"
    )
    args = parser.parse_args()
    failed = []
    for module, *sizes in QUICK if args.quick else FULL:
        compared = ("bench.throughput", "bench.core", "bench.restore", "bench.loadstate")
        before = ["--before", args.before] if args.before and module in compared else []
        options = [*sizes, *before]
        print(f"=== {module} {' '.join(options)}", flush=True)
        began = time.monotonic()
        env = {**os.environ, "BENCH_RESULTS": str(QUICK_RESULTS)} if args.quick else None
        result = subprocess.run([sys.executable, "-m", module, *options], env=env, check=False)
        print(f"=== {module}: {time.monotonic() - began:.0f}s", flush=True)
        if result.returncode:
            failed.append(module)
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
