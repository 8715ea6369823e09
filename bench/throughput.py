"""Order and fill records per second through one worker, beside two references, in one run:

- ours: one marginstream worker, RocksDB state and changelogs (8 partitions);
- ceiling: a bare aiokafka consume -> decode -> encode -> produce loop on the same records;
- peer: the same perpetual-only margin logic as a Quix Streams application (bench/quix_peer).

    python -m bench.throughput --accounts 100000 --instruments 20 --records 150000

Each is timed from the first measured record it processed to the last: the peer by its
own clock, ours and the faust floor by the timestamps of what they wrote (state changelog,
output), the bare loop by its clock. Ours and the floor also report end to end, from the
first record produced to the last one committed (which adds the produce and up to one
commit interval).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.cluster import (
    bench_deployment,
    broker,
    create_topics,
    end_offsets,
    new_consumer,
    produce,
    write_span,
)
from bench.common import write_result
from bench.streams import deposits, market, trading
from marginstream.feeds.driver import produce_runs, wait_applied


def ours(bootstrap: str, root: Path, setup: list[dict], measured: list[dict]) -> dict[str, Any]:
    deployment = bench_deployment(bootstrap, root / "ours")
    worker = deployment.worker("w1").start()
    try:
        worker.wait_ready()
        asyncio.run(
            produce_runs(setup, bootstrap, deployment.prefix, deployment.app_id, timeout=3600)
        )
        changelog = f"{deployment.app_id}-state-changelog"
        before = asyncio.run(end_offsets(bootstrap, changelog))
        began = time.perf_counter()
        asyncio.run(produce(bootstrap, measured, deployment.prefix))
        deployment.wait_applied(3600)
        seconds = time.perf_counter() - began
        # Every record writes its account's part: the changelog's first and last write
        # after the setup are the first and last measured record processed.
        span = asyncio.run(write_span(bootstrap, changelog, before))
    finally:
        deployment.stop_all()
    return rates(len(measured), span, seconds)


def rates(records: int, span: float, seconds: float) -> dict[str, Any]:
    """Records per second first to last record processed (as the peer measures itself),
    and end to end: from the first record produced to the last one committed."""
    return {
        "records": records,
        "seconds": span,
        "records_per_second": records / span,
        "end_to_end_seconds": seconds,
        "end_to_end_records_per_second": records / seconds,
    }


async def bare_loop(bootstrap: str, measured: list[dict]) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    source, sink = f"bare-{tag}-in", f"bare-{tag}-out"
    await create_topics(bootstrap, [source, sink], 8)
    await produce(bootstrap, [{**r, "topic": source} for r in measured])
    consumer = new_consumer(bootstrap, source, group_id=f"bare-{tag}", enable_auto_commit=True)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        enable_idempotence=True,
        max_batch_size=256 * 1024,
    )
    await consumer.start()
    await producer.start()
    try:
        count, began = 0, None
        while count < len(measured):
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for messages in batches.values():
                if began is None and messages:
                    began = time.perf_counter()
                for message in messages:
                    value = orjson.loads(message.value)
                    await producer.send(sink, orjson.dumps(value), key=message.key)
                    count += 1
        await producer.flush()
        seconds = time.perf_counter() - (began or time.perf_counter())
    finally:
        await consumer.stop()
        await producer.stop()
    return {"records": count, "seconds": seconds, "records_per_second": count / seconds}


def faust_floor(bootstrap: str, root: Path, measured: list[dict]) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    source, sink, group = f"floor-{tag}-in", f"floor-{tag}-out", f"floor-{tag}"
    asyncio.run(create_topics(bootstrap, [source, sink], 8))
    env = {
        "FLOOR_BOOTSTRAP": bootstrap,
        "FLOOR_INPUT": source,
        "FLOOR_OUTPUT": sink,
        "FLOOR_GROUP": group,
    }
    log = (root / "floor.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faust",
            "-A",
            "bench.faust_floor",
            "--datadir",
            str(root / "floor-data"),
            "worker",
            "-l",
            "warn",
        ],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(8)  # the agent joins its group
        began = time.perf_counter()
        asyncio.run(produce(bootstrap, [{**r, "topic": source} for r in measured]))
        asyncio.run(wait_applied(bootstrap, group, [source], timeout=3600))
        seconds = time.perf_counter() - began
        span = asyncio.run(write_span(bootstrap, sink, {}))  # one output per record
    finally:
        process.terminate()
        process.wait(60)
        log.close()
    return rates(len(measured), span, seconds)


def quix_peer(bootstrap: str, root: Path, setup: list[dict], measured: list[dict]) -> dict:
    tag = uuid.uuid4().hex[:6]
    source, sink = f"quix-{tag}-in", f"quix-{tag}-out"
    accounts_only = [r for r in setup if r["topic"] == "transfers"]
    asyncio.run(create_topics(bootstrap, [source, sink], 8))
    asyncio.run(produce(bootstrap, [{**r, "topic": source} for r in accounts_only + measured]))
    result = root / "quix.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.quix_peer",
            bootstrap,
            source,
            sink,
            f"quix-{tag}",
            str(root / "quix-state"),
            str(len(measured)),
            str(result),
        ],
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the Quix peer failed:\n{completed.stderr[-3000:]}")
    return json.loads(result.read_text())


def shown(result: dict[str, Any]) -> str:
    return (
        f"{result['records_per_second']:,.0f} records/s "
        f"(end to end {result['end_to_end_records_per_second']:,.0f}/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--instruments", type=int, default=20)
    parser.add_argument("--records", type=int, default=150_000)
    parser.add_argument("--skip-peer", action="store_true", help="leave Quix Streams out")
    args = parser.parse_args()

    setup = market(args.instruments) + deposits(args.accounts)
    measured = list(trading(args.accounts, args.instruments, args.records))
    figures: dict[str, Any] = {
        "accounts": args.accounts,
        "instruments": args.instruments,
        "records": len(measured),
    }
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-") as directory:
        root = Path(directory)
        figures["ceiling"] = asyncio.run(bare_loop(bootstrap, measured))
        print(f"bare aiokafka loop: {figures['ceiling']['records_per_second']:,.0f} records/s")
        figures["faust_floor"] = faust_floor(bootstrap, root, measured)
        print(f"faust floor:        {shown(figures['faust_floor'])}")
        figures["ours"] = ours(bootstrap, root, setup, measured)
        print(f"marginstream:       {shown(figures['ours'])}")
        if not args.skip_peer:
            figures["peer"] = quix_peer(bootstrap, root, setup, measured)
            print(f"Quix Streams peer:  {figures['peer']['records_per_second']:,.0f} records/s")
    ours_rate = figures["ours"]["records_per_second"]
    figures["ours_over_ceiling"] = ours_rate / figures["ceiling"]["records_per_second"]
    print(f"ours / ceiling: {figures['ours_over_ceiling']:.2f} (goal >= 0.5)")
    figures["ours_over_faust_floor"] = ours_rate / figures["faust_floor"]["records_per_second"]
    print(f"ours / faust floor: {figures['ours_over_faust_floor']:.2f}")
    floor_rate = figures["faust_floor"]["records_per_second"]
    figures["faust_floor_over_ceiling"] = floor_rate / figures["ceiling"]["records_per_second"]
    print(f"faust floor / ceiling: {figures['faust_floor_over_ceiling']:.2f}")
    if "peer" in figures:
        figures["ours_over_peer"] = ours_rate / figures["peer"]["records_per_second"]
        print(f"ours / peer:    {figures['ours_over_peer']:.2f} (goal >= 1)")
    print(f"written to {write_result('throughput', figures)}")


if __name__ == "__main__":
    main()
