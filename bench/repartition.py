"""The cost of `marginstream repartition`: a stopped deployment of N accounts on 8
partitions moved to 16, then a worker of the new deployment restored and serving them.

The old deployment's changelog is written directly (bench/recovery.py: the workers'
format and partitions, one perpetual position per account), with its account inputs
made and empty (nothing left to finish on the old layout: the move reads and spreads).
Reported: the command's wall time and peak resident memory (it holds one old
partition's accounts as objects at a time), and the new deployment's restore until a
worker serves every one of the accounts.

    python -m bench.repartition --accounts 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster import bench_deployment, broker, create_topics
from bench.common import write_result
from bench.recovery import PARTITIONS, serving, write_changelog

MOVED_TO = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--instruments", type=int, default=20)
    args = parser.parse_args()
    figures: dict[str, Any] = {"accounts": args.accounts, "from": PARTITIONS, "to": MOVED_TO}
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-") as directory:
        root = Path(directory)
        old = bench_deployment(bootstrap, root / "old", partitions=PARTITIONS)
        names = old.names
        asyncio.run(create_topics(bootstrap, names.account_inputs(), PARTITIONS, {}))
        asyncio.run(create_topics(bootstrap, names.market_inputs(), 1, {}))
        figures["changelog_write_seconds"] = asyncio.run(
            write_changelog(old, args.accounts, args.instruments)
        )
        app_id = f"{old.app_id}-{MOVED_TO}"
        began = time.perf_counter()
        moved = subprocess.run(
            [sys.executable, "-m", "marginstream", "repartition", "--partitions",
             str(MOVED_TO), "--to-app-id", app_id],
            env={**os.environ, **old.env()}, capture_output=True, text=True, check=False,
        )  # fmt: skip
        figures["move_seconds"] = time.perf_counter() - began
        if moved.returncode:
            raise RuntimeError(f"the move failed:\n{moved.stderr}")
        figures["move_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"repartition of {args.accounts:,} accounts, {PARTITIONS} -> {MOVED_TO} partitions: "
            f"{figures['move_seconds']:.1f}s, peak RSS {figures['move_peak_rss_mib']:.0f} MiB"
        )
        new = bench_deployment(bootstrap, root / "new", partitions=MOVED_TO, tag=old.tag,
                               app_name=app_id)  # fmt: skip
        worker = new.worker("w1")
        began = time.perf_counter()
        worker.start()
        try:
            figures["new_deployment_serving_seconds"] = serving(worker, partitions=MOVED_TO)
            figures["new_deployment_accounts"] = (worker.health() or {}).get("accounts")
        finally:
            new.stop_all()
        if figures["new_deployment_accounts"] != args.accounts:
            raise RuntimeError(f"the new deployment serves {figures['new_deployment_accounts']}")
        print(
            f"new deployment restored and serving all {args.accounts:,} accounts: "
            f"{figures['new_deployment_serving_seconds']:.1f}s"
        )
    print(f"written to {write_result(f'repartition-{args.accounts}', figures)}")


if __name__ == "__main__":
    main()
