"""Recovery and memory: restore N accounts from the changelog into an empty worker, restart
with the local store intact, take over a killed worker's partitions (with and without a
standby replica), and the worker's resident memory once it holds them.

The changelog is written directly, in the format workers write it (the same part keys and
stored values, core/delivery/parts.py, and the same partitions), so that a million accounts
do not first have to be traded through a worker. It is written outside any transaction
(a read_committed restore reads such records like committed ones), one record per part,
without the replay guard part ("delivery", "seen"): a state without it loads with an
empty guard, which is what a worker that never read a live record holds.

    python -m bench.recovery --accounts 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from bench.cluster import InFlight, bench_deployment, broker, create_topics
from bench.common import write_result
from bench.streams import TIERS, mark_of, symbols
from marginstream.core.books.ledger import Account
from marginstream.core.delivery.parts import encode_part, part_key
from marginstream.core.engine import FIRST_LEAF
from marginstream.core.inputs.records import FillRecord, MarkRecord
from marginstream.core.risk.instruments import Instrument, parse_instrument
from marginstream.core.risk.market import Market
from marginstream.localworker import LocalDeployment, LocalWorker

PARTITIONS = 8


def perpetual(symbol: str, tiers: list[dict[str, Any]] = TIERS) -> Instrument:
    """A perpetual of the benchmarks' books (by default on the tiers of bench/streams.py)."""
    return parse_instrument(
        {
            "symbol": symbol,
            "kind": "perpetual",
            "underlying": "U",
            "contract_size": "1",
            "margin": {"tiers": tiers},
        }
    )


def market_parts(instruments: int) -> dict[tuple[str, str], Any]:
    market = Market()
    for symbol in symbols(instruments):
        market.apply_instrument(perpetual(symbol))
        market.apply_mark(MarkRecord(symbol, Decimal(mark_of(symbol)), None, 0))
    return market.parts()


def account_part(number: int, books: list[str]) -> tuple[str, dict[str, Any]]:
    name = f"a{number:07d}"
    account = Account(name, cash=Decimal(100_000))
    symbol = books[number % len(books)]
    fill = FillRecord(
        f"f{number}",
        None,
        name,
        symbol,
        "buy" if number % 2 else "sell",
        Decimal(3),
        Decimal(mark_of(symbol)),
        Decimal("0.1"),
        1,
    )
    account.apply_fill(fill, perpetual(symbol), Decimal(0))
    data = account.to_dict()
    data["ids"] = {"fill": {"n": 0, "ids": {fill.fill_id: 1}}}  # its used ids' newest chunk
    return name, data


async def write_changelog(deployment: LocalDeployment, accounts: int, instruments: int) -> float:
    """The state changelog of a deployment holding `accounts` accounts; returns seconds."""
    books = symbols(instruments)

    def parts() -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
        yield from market_parts(instruments).items()
        for number in range(accounts):
            name, part = account_part(number, books)
            yield ("account", name), part

    return await write_parts(deployment, parts())


async def write_parts(
    deployment: LocalDeployment, parts: Iterable[tuple[tuple[str, str], dict[str, Any] | None]]
) -> float:
    """Write state parts to the deployment's changelog as its workers would: an account to
    the partition its orders go to, every other part (market, replay guard) to every one."""
    topic = deployment.names.changelog
    await create_topics(
        deployment.bootstrap, [topic], deployment.partitions, {"cleanup.policy": "compact"}
    )
    partitioner = DefaultPartitioner()
    everyone = list(range(deployment.partitions))
    producer = AIOKafkaProducer(
        bootstrap_servers=deployment.bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    began = time.perf_counter()
    version = 0
    sends = InFlight(20_000)
    leaves = dict.fromkeys(everyone, FIRST_LEAF)  # each partition's next leaf of its tree
    try:
        for key, part in parts:
            if key[0] == "account":
                targets = [partitioner(key[1].encode(), everyone, everyone)]
                if part is not None and "leaf" not in part:
                    part = {**part, "leaf": leaves[targets[0]]}  # noqa: PLW2901
                    leaves[targets[0]] += 1
            else:
                targets = everyone
            for partition in targets:
                version += 1
                await sends.add(
                    await producer.send(
                        topic, encode_part(version, part), key=part_key(key), partition=partition
                    )
                )
        await sends.wait()
    finally:
        await producer.stop()
    return time.perf_counter() - began


def rss_mib(worker: LocalWorker) -> float:
    assert worker.process is not None
    for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serving(worker: LocalWorker, timeout: float = 3600.0, partitions: int = PARTITIONS) -> float:
    """Seconds until the worker answers for an account of every partition it owns."""
    began = time.perf_counter()
    worker.wait_ready(timeout=timeout, partitions=partitions)
    while True:
        health = worker.health() or {}
        if len(health.get("partitions", [])) == partitions:
            return time.perf_counter() - began
        if time.perf_counter() - began > timeout:
            raise TimeoutError("engines never loaded")
        time.sleep(0.1)


def takeover(root: Path, bootstrap: str, accounts: int, instruments: int, standby: int) -> float:
    deployment = bench_deployment(
        bootstrap,
        root / f"takeover-{standby}",
        partitions=PARTITIONS,
        extra_env={"MARGINSTREAM_STANDBY_REPLICAS": str(standby)},
    )
    asyncio.run(write_changelog(deployment, accounts, instruments))
    first, second = deployment.worker("w1").start(), deployment.worker("w2").start()
    try:
        first.wait_ready(timeout=3600)
        second.wait_ready(timeout=3600)
        deadline = time.perf_counter() + 3600
        while time.perf_counter() < deadline:  # split, loaded, and standbys caught up
            owned = [len((w.health() or {}).get("partitions", [])) for w in (first, second)]
            if sum(owned) == PARTITIONS and min(owned) > 0:
                break
            time.sleep(0.5)
        time.sleep(5 if standby else 0)
        first.kill9()
        killed = time.perf_counter()
        serving(second)
        return time.perf_counter() - killed
    finally:
        deployment.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--instruments", type=int, default=20)
    parser.add_argument("--takeover-accounts", type=int, default=100_000)
    args = parser.parse_args()
    figures: dict[str, Any] = {"accounts": args.accounts, "partitions": PARTITIONS}
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-") as directory:
        root = Path(directory)
        deployment = bench_deployment(bootstrap, root / "restore", partitions=PARTITIONS)
        figures["changelog_write_seconds"] = asyncio.run(
            write_changelog(deployment, args.accounts, args.instruments)
        )
        worker = deployment.worker("w1")
        began = time.perf_counter()
        worker.start()
        figures["restore_seconds"] = serving(worker)
        figures["restore_seconds_from_process_start"] = time.perf_counter() - began
        health = worker.health() or {}
        figures["restored_accounts"] = health.get("accounts")
        figures["changelog_records_read"] = health.get("changelog_records_read")
        figures["changelog_records_stale"] = health.get("changelog_records_stale")
        figures["rss_mib"] = rss_mib(worker)
        # restore and load together (bench/restore.py times the restore alone)
        figures["changelog_records_per_second_to_serving"] = round(
            (figures["changelog_records_read"] or 0) / figures["restore_seconds"]
        )
        print(
            f"restore {figures['restored_accounts']:,} accounts from the changelog into an "
            f"empty worker: {figures['restore_seconds']:.1f}s "
            f"({figures['changelog_records_per_second_to_serving']:,} changelog records/s "
            f"until every partition serves); RSS {figures['rss_mib']:.0f} MiB"
        )
        worker.stop()
        began = time.perf_counter()
        worker.start()
        figures["restart_intact_seconds"] = serving(worker)
        restarted = worker.health() or {}
        figures["restart_changelog_records_read"] = restarted.get("changelog_records_read")
        print(
            f"restart with the local store intact: {figures['restart_intact_seconds']:.1f}s, "
            f"{figures['restart_changelog_records_read']} changelog records read"
        )
        deployment.stop_all()
        for standby in (0, 1):
            seconds = takeover(root, bootstrap, args.takeover_accounts, args.instruments, standby)
            figures[f"takeover_seconds_standby_{standby}"] = seconds
            print(
                f"takeover of {args.takeover_accounts:,} accounts, standby replicas "
                f"{standby}: {seconds:.1f}s from kill -9 to serving"
            )
    print(f"written to {write_result(f'recovery-{args.accounts}', figures)}")


if __name__ == "__main__":
    main()
