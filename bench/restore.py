"""Restore speed: the changelog of N accounts read into empty RocksDB stores by the
worker's ChangelogReader, without the rest of the worker (the engines' load is not in it).

The changelog is written once (bench/recovery.py writes it as workers do), then read, in
turns, by separate processes on the same broker:
- ours: this code's reader, at its batch size (and, with --batches, at others);
- before (with --before REF): the reader of the code at REF, from a git worktree;
- bare: an aiokafka consumer that reads the same partitions read_committed and does
  nothing with the records: what Kafka and aiokafka's parser give, the ceiling.

A bare read warms the broker up first; then each reader runs --rounds times, in turns
(each round in another order: a later run gains from a warmer broker), and the median
run is reported: records/s (wall), CPU µs per record of its own process (RocksDB's
background threads included), and a digest of the stores it leaves; ours and before
must leave the same stores.

    python -m bench.restore --accounts 1000000 --before main
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.cluster import bench_deployment, broker
from bench.common import write_result
from bench.oldcode import worktree
from bench.recovery import PARTITIONS, write_changelog

ROOT = Path(__file__).resolve().parent.parent


async def read_into_stores(bootstrap: str, topic: str, directory: Path) -> dict[str, Any]:
    """Restore every partition of topic into empty stores under directory, as a worker's
    partitions open together (marginstream from wherever it is imported)."""
    from marginstream.stream import changelog  # noqa: PLC0415 (the code under test)
    from marginstream.stream.store import StoreDirectory  # noqa: PLC0415

    batch = os.environ.get("BENCH_RESTORE_BATCH")
    if batch:
        changelog.BATCH = int(batch)
    reader = changelog.ChangelogReader(bootstrap, topic)
    stores = StoreDirectory(directory)
    await reader.start()
    running = asyncio.create_task(reader.run())
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(reader.restore(p, stores.of(p)) for p in range(PARTITIONS)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        running.cancel()
        await reader.stop()
    digest, keys = hashlib.sha256(), 0
    for partition in range(PARTITIONS):
        for key, value in stores.of(partition).items():
            digest.update(len(key).to_bytes(4, "big") + key + value)
            keys += 1
    stores.close()
    return {
        "records": reader.counts.read,
        "stale": reader.counts.stale,
        "batch": changelog.BATCH,
        "stored_keys": keys,
        "stores_sha256": digest.hexdigest(),
        **rates(reader.counts.read, wall, cpu),
    }


async def read_bare(bootstrap: str, topic: str) -> dict[str, Any]:
    """Every committed record of topic through aiokafka's getmany, and nothing else."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        records = 0
        wall, cpu = time.perf_counter(), time.process_time()
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for messages in (await consumer.getmany(timeout_ms=200, max_records=50_000)).values():
                records += len(messages)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await consumer.stop()
    return {"records": records, **rates(records, wall, cpu)}


def rates(records: int, wall: float, cpu: float) -> dict[str, float]:
    return {
        "seconds": round(wall, 2),
        "records_per_second": round(records / wall),
        "cpu_us_per_record": round(cpu / max(records, 1) * 1e6, 2),
    }


def in_process(
    mode: str, source: Path, bootstrap: str, topic: str, batch: int | None = None
) -> dict[str, Any]:
    """One reading in a process of its own, importing marginstream from source."""
    env = {**os.environ, "PYTHONPATH": f"{source}:{ROOT}"}
    if batch:
        env["BENCH_RESTORE_BATCH"] = str(batch)
    command = [sys.executable, "-m", "bench.restore", "--read", mode, bootstrap, topic]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{mode} reading failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def show(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run of a reader (by records/s), printed with the spread."""
    rates = sorted(run["records_per_second"] for run in runs)
    median = next(r for r in runs if r["records_per_second"] == rates[len(rates) // 2])
    print(
        f"{name:>22}: {median['records']:,} records, median {median['records_per_second']:,}/s "
        f"(runs {', '.join(f'{r:,}' for r in rates)}), {median['cpu_us_per_record']} µs "
        f"CPU/record"
    )
    return {**median, "runs_records_per_second": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--instruments", type=int, default=20)
    parser.add_argument("--before", help="also read with the reader of this earlier commit")
    parser.add_argument("--batches", type=int, nargs="*", default=[], help="ours at these too")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each reader, in turns")
    parser.add_argument("--read", nargs=3, metavar=("MODE", "BOOTSTRAP", "TOPIC"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.read:
        mode, bootstrap, topic = args.read
        with tempfile.TemporaryDirectory(prefix="bench-restore-") as directory:
            if mode == "bare":
                figures = asyncio.run(read_bare(bootstrap, topic))
            else:
                figures = asyncio.run(read_into_stores(bootstrap, topic, Path(directory)))
        print(json.dumps(figures))
        return
    figures: dict[str, Any] = {"accounts": args.accounts, "partitions": PARTITIONS}
    with contextlib.ExitStack() as stack:
        bootstrap = stack.enter_context(broker())
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        deployment = bench_deployment(bootstrap, directory, partitions=PARTITIONS)
        topic = deployment.names.changelog
        seconds = asyncio.run(write_changelog(deployment, args.accounts, args.instruments))
        figures["changelog_write_seconds"] = round(seconds, 1)
        ours = ROOT / "src"
        readers: dict[str, tuple[str, Path, int | None]] = {
            "bare": ("bare", ours, None),
            "ours": ("stores", ours, None),
        }
        if args.before:
            tree, commit = stack.enter_context(worktree(args.before))
            readers["before"] = ("stores", tree / "src", None)
            figures["before_commit"] = commit
        for batch in args.batches:
            readers[f"ours_batch_{batch}"] = ("stores", ours, batch)
        in_process("bare", ours, bootstrap, topic)  # the broker warmed up, its files cached
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in readers}
        for round_ in range(args.rounds):  # in turns, each round in another order
            names = list(readers)
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                runs[name].append(in_process(*readers[name][:2], bootstrap, topic,
                                             readers[name][2]))  # fmt: skip
        for name in readers:
            figures[name] = show(name, runs[name])
        rate = {name: figures[name]["records_per_second"] for name in readers}
        if args.before:
            figures["ours_over_before"] = round(rate["ours"] / rate["before"], 2)
            same = figures["ours"]["stores_sha256"] == figures["before"]["stores_sha256"]
            figures["same_stores"] = same
            print(f"ours / before: {figures['ours_over_before']:.2f}x; the same stores: {same}")
        figures["ours_over_bare"] = round(rate["ours"] / rate["bare"], 2)
        print(f"ours / bare aiokafka: {figures['ours_over_bare']:.2f}x")
    print(f"written to {write_result(f'restore-{args.accounts}', figures)}")


if __name__ == "__main__":
    main()
