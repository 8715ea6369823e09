"""The core's CPU per account record, and where it goes, without Kafka or a framework.

The throughput benchmark's stream (bench/streams.py: deposits for N accounts, then per
trade the buyer's order, the buyer's fill and the seller's fill) goes through what a
worker runs per record: intake.envelope (bytes to JSON) and PartitionState.apply, sealed
and written to a MemoryPartStore every --commit records, as the shell does per commit.
Printed and written to results/core.json: account records per CPU second (process time:
the machine is shared) and the CPU split by module (cProfile, in a second pass; the
time of C functions goes to the module that called them).

    python -m bench.core --before main

--before REF runs the same loop on the core of REF (a git worktree, in a subprocess, this
script driving it), prints after/before, and checks that every record's outputs and every
sealed part are byte for byte the same (sha256 of each, record by record).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import hashlib
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from bench.common import write_result
from bench.oldcode import worktree
from bench.streams import deposits, market, trading
from marginstream import core
from marginstream.core import EngineConfig, RiskEngine
from marginstream.core.delivery.sources import Source
from marginstream.core.delivery.store import MemoryPartStore
from marginstream.core.delivery.unit import PartitionState
from marginstream.core.inputs import intake
from marginstream.core.inputs.keys import account_partition

PARTITIONS = 8  # as the throughput bench's topics: each record on its key's partition
# Module groups of the CPU split, by the file a function is defined in (first match).
GROUPS = (
    ("records parsing", ("core/inputs/records.py", "core/inputs/numbers.py",
                         "core/risk/instruments.py")),
    ("requests/ledger", ("core/books/requests.py", "core/books/ledger.py",
                         "core/outputs/decisions.py", "core/outputs/alerts.py",
                         "core/outputs/reports.py")),
    ("risk/margin", ("core/risk/figures.py", "core/risk/margin.py", "core/risk/view.py",
                     "core/risk/market.py", "core/risk/pricing.py")),
    ("seal/encode", ("core/delivery/unit.py", "core/delivery/parts.py",
                     "core/delivery/store.py")),
    ("seen ids", ("core/books/seenids.py",)),
    ("intake", ("core/inputs/intake.py", "core/inputs/envelope.py", "core/inputs/keys.py")),
    ("engine", ("core/engine.py", "core/delivery/guard.py")),
)  # fmt: skip

Record = tuple[str, int, str, bytes]  # topic, partition, key, value as read


def stream(accounts: int, instruments: int, records: int) -> tuple[list[Record], list[Record]]:
    """(the market's records, unmeasured; the account records, measured) as a worker reads them."""

    def read(item: dict[str, Any], partition: int | None = None) -> Record:
        key = item["key"]
        where = account_partition(key, PARTITIONS) if partition is None else partition
        return item["topic"], where, key, orjson.dumps(item["value"])

    setup = [read(item, 0) for item in market(instruments)]
    measured = [read(item) for item in deposits(accounts)]
    measured += [read(item) for item in trading(accounts, instruments, records)]
    return setup, measured


class Loop:
    """A partition's work as the shell does it: envelopes in, a seal and a write per commit."""

    def __init__(self, commit_every: int) -> None:
        self.state = PartitionState(RiskEngine(EngineConfig(partitions=PARTITIONS)), version=0)
        self.store = MemoryPartStore()
        self.commit_every = commit_every
        self.offsets: dict[tuple[str, int], int] = defaultdict(int)
        self.outcomes: list[Any] = []  # every record's outputs, in order
        self.seals: list[list[tuple[bytes, bytes | None]]] = []

    def run(self, records: list[Record]) -> None:
        state, offsets, outcomes = self.state, self.offsets, self.outcomes
        for topic, partition, key, value in records:
            offset = offsets[topic, partition]
            offsets[topic, partition] = offset + 1
            envelope = intake.envelope(topic, partition, offset, key.encode(), value)
            outcomes.append(state.apply(envelope, Source(topic, partition), offset).outputs)
            if state.records >= self.commit_every:
                self.seal()

    def seal(self) -> None:
        sealed = self.state.seal()
        self.store.write(sealed.parts, len(self.seals))
        self.seals.append(sealed.parts)


def digests(loop: Loop) -> list[str]:
    """sha256 of each record's outputs, then of each sealed part, in order."""
    found = [
        hashlib.sha256(orjson.dumps([list(output) for output in outputs])).hexdigest()
        for outputs in loop.outcomes
    ]
    for parts in loop.seals:
        found += [hashlib.sha256(key + b"=" + (value or b"-")).hexdigest() for key, value in parts]
    return found


def measure(
    args: argparse.Namespace, records: tuple[list[Record], list[Record]], profiled: bool
) -> tuple[dict[str, Any], list[str]]:
    """One timed run (and a profiled one for the split), and the digests of the timed one."""
    setup, measured = records
    loop = Loop(args.commit)
    loop.run(setup)
    if args.gc_freeze:  # what a worker that froze its restored state would see
        gc.collect()
        gc.freeze()
    began = time.process_time()
    loop.run(measured)
    loop.seal()
    cpu = time.process_time() - began
    figures: dict[str, Any] = {
        "records": len(measured),
        "cpu_seconds": cpu,
        "core_imported_from": str(Path(core.__file__).parent),  # evidence for --before
    }
    if profiled:
        figures["split_us_per_record"] = split(setup, measured, args.commit)
    return figures, digests(loop)


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of the run with the least CPU time (the machine is shared: the least
    disturbed), with every run's time and the last run's split."""
    chosen = min(runs, key=lambda run: run["cpu_seconds"])
    cpu, records = chosen["cpu_seconds"], chosen["records"]
    return {
        **chosen,
        "runs_cpu_seconds": [round(run["cpu_seconds"], 3) for run in runs],
        "cpu_seconds": round(cpu, 3),
        "records_per_cpu_second": round(records / cpu),
        "cpu_us_per_record": round(cpu / records * 1e6, 1),
        "split_us_per_record": runs[-1].get("split_us_per_record", {}),
    }


def split(setup: list[Record], measured: list[Record], commit_every: int) -> dict[str, float]:
    """CPU µs per record by module group, from a profiled second pass."""
    loop = Loop(commit_every)
    loop.run(setup)
    profile = cProfile.Profile()
    profile.enable()
    loop.run(measured)
    loop.seal()
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    totals: dict[str, float] = defaultdict(float)
    for (file, _, _), (_, _, own, _, callers) in stats.items():
        if file == "~" and callers:  # a C function: its time goes to its callers' modules
            for (caller_file, _, _), (_, _, caller_own, _) in callers.items():
                totals[group(caller_file)] += caller_own
        else:
            totals[group(file)] += own
    total = sum(totals.values())
    scale = 1e6 / len(measured)
    shares = {name: round(seconds * scale, 1) for name, seconds in sorted(totals.items())}
    return {**shares, "total (profiled)": round(total * scale, 1)}


def group(file: str) -> str:
    path = file.replace(os.sep, "/")
    return next((name for name, files in GROUPS if path.endswith(files)), "other")


def before(
    tree: Path, args: argparse.Namespace, out: Path, profiled: bool
) -> tuple[dict[str, Any], list[str]]:
    """One run of the same loop on the core in tree (on the path, in a subprocess)."""
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}:{Path(__file__).parent.parent}"}
    command = [sys.executable, "-m", "bench.core", "--accounts", str(args.accounts),
               "--instruments", str(args.instruments), "--records", str(args.records),
               "--commit", str(args.commit), "--out", str(out)]  # fmt: skip
    command += ["--profiled"] if profiled else []
    subprocess.run(command + (["--gc-freeze"] if args.gc_freeze else []), env=env, check=True)
    found = json.loads(out.read_text())
    return found["figures"], found["digests"]


def rounds(args: argparse.Namespace, directory: Path) -> tuple[dict, list[str], dict | None, list]:
    """--repeat rounds, each running before (if asked) then after: the machine's load
    changes over a run, and alternating shares it out between the two."""
    records = stream(args.accounts, args.instruments, args.records)
    after: list[dict[str, Any]] = []
    old: list[dict[str, Any]] = []
    old_digests: list[str] = []
    with contextlib.ExitStack() as stack:
        tree, commit = stack.enter_context(worktree(args.before)) if args.before else (None, "")
        for round_ in range(args.repeat):
            profiled = round_ == args.repeat - 1
            if tree is not None:
                figures, old_digests = before(tree, args, directory / "before.json", profiled)
                old.append(figures)
            figures, found = measure(args, records, profiled)
            after.append(figures)
    return best(after), found, ({**best(old), "commit": commit} if old else None), old_digests


def first_difference(after: list[str], old: list[str]) -> int | None:
    pairs: Iterator[tuple[int, tuple[str, str]]] = enumerate(zip(after, old, strict=False))
    differing = next((n for n, (a, b) in pairs if a != b), None)
    if differing is None and len(after) != len(old):
        return min(len(after), len(old))
    return differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--instruments", type=int, default=20)
    parser.add_argument("--records", type=int, default=60_000, help="trading records")
    parser.add_argument("--commit", type=int, default=1000, help="records per commit")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best run counts")
    parser.add_argument("--before", metavar="REF", help="also run the core of this commit")
    parser.add_argument("--out", help="write figures and digests here as JSON, and stop")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() after the setup, before and after"
    )
    parser.add_argument("--profiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out:  # one run, for the --before of a later commit
        records = stream(args.accounts, args.instruments, args.records)
        figures, found = measure(args, records, args.profiled)
        Path(args.out).write_text(json.dumps({"figures": figures, "digests": found}))
        return
    with tempfile.TemporaryDirectory(prefix="bench-core-") as directory:
        figures, found, old_figures, old_digests = rounds(args, Path(directory))
    result: dict[str, Any] = {"accounts": args.accounts, "instruments": args.instruments,
                              "commit_every": args.commit, "gc_freeze": args.gc_freeze,
                              "after": figures}  # fmt: skip
    print(f"after:  {figures['records_per_cpu_second']:,} records/CPU s, "
          f"{figures['cpu_us_per_record']} µs/record")  # fmt: skip
    differing = None
    if old_figures is not None:
        differing = first_difference(found, old_digests)
        result["before"] = old_figures
        result["after_over_before"] = round(
            figures["records_per_cpu_second"] / old_figures["records_per_cpu_second"], 2
        )
        result["digests_compared"] = len(found)
        result["identical"] = differing is None
        shown_before = f"{old_figures['cpu_us_per_record']} µs/record"
        print(f"before: {old_figures['records_per_cpu_second']:,} records/CPU s, "
              f"{shown_before} ({old_figures['commit'][:9]})")  # fmt: skip
        print(f"after/before: {result['after_over_before']}")
        print(f"outputs and sealed parts identical: {differing is None} ({len(found):,} sha256)")
    print("CPU µs per record by module (profiled pass):")
    old_split = old_figures["split_us_per_record"] if old_figures else {}
    names = sorted(set(figures["split_us_per_record"]) | set(old_split))
    for name in names:
        shown = f"{figures['split_us_per_record'].get(name, 0):>8}"
        if old_figures is not None:
            shown = f"{old_split.get(name, 0):>8} -> {shown}"
        print(f"  {name:>18}: {shown}")
    print(f"written to {write_result('core', result)}")
    if differing is not None:
        sys.exit(f"outputs or parts differ from {args.before}: first at digest {differing}")


if __name__ == "__main__":
    main()
