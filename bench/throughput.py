"""Order and fill records per second through one worker, beside references, in one run:

- ours: one marginstream worker of the current code (8 partitions, one Kafka transaction
  per partition per commit interval);
- before (with --before REF): one worker of the code at REF, run from a git worktree on
  the same broker with the same records: at 93ca5cb the at-least-once faust-tables
  worker. after / before is what the fenced (transactional) shell costs or gains in
  throughput as a whole: it also drops the per-record changelog writes and the outputs
  remembered in account parts, so it is not the cost of the transactions alone;
- ceiling: a bare aiokafka consume -> decode -> encode -> produce loop on the same records;
- faust floor: a faust agent that only decodes and re-encodes (bench/faust_floor);
- peer: the same perpetual-only margin logic as a Quix Streams application (bench/quix_peer).

    python -m bench.throughput --accounts 100000 --instruments 20 --records 150000
    python -m bench.throughput --accounts 10000 --records 15000 --before 93ca5cb

How each is timed:

- end to end (ours, before, floor): from the first measured record produced until the
  consumer groups' committed offsets reach the end of every input they read. This adds
  the produce and up to one commit interval, and is the figure after / before compares.
- first to last (as the peer times itself by its own clock): the bare loop by its clock;
  the floor by the producer timestamps of its output topic (one output per record); ours
  and before by the producer timestamps of their decisions, read as a read_committed
  consumer reads them. Every order gets exactly one decision, sent when the order is
  applied, and the first measured record is an order, so the first and last decision
  bracket the processing of all but the few fills after each partition's last order
  (the run counts the decisions and warns unless there is one per order). The final
  commit is left out, as it always was.

  Until the transactional rewrite ours was timed by its state changelog, which got one
  write per input record; the changelog now gets one record per changed part per commit,
  written at commit time, so its timestamps no longer say when records were processed.
  The before worker still writes per record: its changelog span is reported beside its
  decision span as a check of the decision method.
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
from collections.abc import Sequence
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
from bench.oldcode import (
    OLD_GROUP_TOPICS,
    old_code_evidence,
    old_settings,
    recent_code_evidence,
    worktree,
)
from bench.streams import deposits, market, trading
from marginstream.feeds.driver import Consumed, GaveUp, produce_runs, wait_applied
from marginstream.feeds.segments import segments
from marginstream.localworker import LocalDeployment, LocalWorker
from marginstream.stream.settings import StreamSettings


def ours(
    bootstrap: str,
    root: Path,
    setup: list[dict],
    measured: list[dict],
    extra_env: dict[str, str],
    workers: int = 1,
) -> dict[str, Any]:
    """Our workers (one unless scaling out) on the stream, set-up first then timed."""
    deployment = bench_deployment(bootstrap, root / f"ours-{workers}", extra_env=extra_env)
    started = [deployment.worker(f"w{n}").start() for n in range(1, workers + 1)]
    try:
        for worker in started:
            worker.wait_ready()
        consumed = deployment.names.consumed()
        feed(setup, deployment, consumed, started)
        result = timed(deployment, consumed, measured, started)
        result["health"] = [worker.health() for worker in started]
        result["workers"] = workers
    finally:
        deployment.stop_all()
    result["commit_interval"] = commit_interval(extra_env, StreamSettings().commit_interval)
    return result


def before(
    bootstrap: str,
    root: Path,
    ref: str,
    setup: list[dict],
    measured: list[dict],
    extra_env: dict[str, str],
) -> dict[str, Any]:
    """The same as ours, through one worker of the code at ref (a temporary worktree)."""
    with worktree(ref) as (tree, commit):
        source = tree / "src"
        env = {**extra_env, "PYTHONPATH": str(source)}
        imported = old_settings(env)
        if not imported["file"].startswith(str(source)):
            raise RuntimeError(f"PYTHONPATH={source} imports {imported['file']}, not {ref}")
        deployment = bench_deployment(bootstrap, root / "before", extra_env=env)
        worker = deployment.worker("w1").start()
        try:
            worker.wait_ready()
            if imported.get("current_names"):  # 9d0ffcc and later: named as ours
                consumed = deployment.names.consumed()
                feed(setup, deployment, consumed, [worker])
                result = timed(deployment, consumed, measured, [worker])
                result["evidence"] = recent_code_evidence(worker, source, imported["file"])
            else:
                consumed = {deployment.app_id: [deployment.prefix + t for t in OLD_GROUP_TOPICS]}
                feed(setup, deployment, consumed, [worker])
                changelog = f"{deployment.app_id}-state-changelog"
                result = timed(deployment, consumed, measured, [worker], changelog)
                result["evidence"] = old_code_evidence(worker, deployment, source, changelog)
        finally:
            deployment.stop_all()
    result["ref"], result["commit"] = ref, commit
    result["commit_interval"] = commit_interval(extra_env, imported["commit_interval"])
    return result


def commit_interval(extra_env: dict[str, str], default: float) -> float:
    return float(extra_env.get("MARGINSTREAM_COMMIT_INTERVAL") or default)


def feed(
    setup: Sequence[dict],
    deployment: LocalDeployment,
    consumed: Consumed,
    workers: Sequence[LocalWorker],
) -> None:
    """Produce the set-up run by run (one topic at a time), each applied before the next."""
    for run in segments(setup):
        asyncio.run(produce_runs(run, deployment.bootstrap, deployment.prefix))
        applied(deployment.bootstrap, consumed, workers)


def applied(bootstrap: str, consumed: Consumed, workers: Sequence[LocalWorker]) -> None:
    """Wait until the groups have committed everything; a dead worker ends the wait."""

    def gone() -> bool:
        return not all(worker.alive() for worker in workers)

    try:
        asyncio.run(wait_applied(bootstrap, consumed, timeout=3600, give_up=gone))
    except (GaveUp, TimeoutError) as error:
        tails = "\n".join(worker.log_tail() for worker in workers if not worker.alive())
        raise RuntimeError(f"{error}; the dead workers' logs end:\n{tails}") from error


def timed(
    deployment: LocalDeployment,
    consumed: Consumed,
    measured: list[dict],
    workers: Sequence[LocalWorker],
    changelog: str | None = None,
) -> dict[str, Any]:
    """End to end, and first to last by the decisions' producer timestamps (the module's
    docstring says why); with changelog (a worker that writes one changelog record per
    input record), that changelog's span as well."""
    bootstrap = deployment.bootstrap
    decisions = deployment.prefix + "decisions"
    orders = sum(1 for r in measured if r["value"]["type"] == "order")
    decided_before = asyncio.run(end_offsets(bootstrap, decisions))
    logged_before = asyncio.run(end_offsets(bootstrap, changelog)) if changelog else {}
    began = time.perf_counter()
    asyncio.run(produce(bootstrap, measured, deployment.prefix))
    applied(bootstrap, consumed, workers)
    seconds = time.perf_counter() - began
    span, decided = asyncio.run(write_span(bootstrap, decisions, decided_before, committed=True))
    result = rates(len(measured), span, seconds)
    result.update(timed_by="decisions", orders=orders, decisions=decided)
    if decided != orders:
        print(f"warning: {decided} decisions for {orders} orders", file=sys.stderr)
    if changelog:
        logged, written = asyncio.run(write_span(bootstrap, changelog, logged_before))
        result.update(
            changelog_span_seconds=logged,
            changelog_records=written,
            changelog_span_records_per_second=len(measured) / logged,
        )
    return result


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
        asyncio.run(wait_applied(bootstrap, {group: [source]}, timeout=3600))
        seconds = time.perf_counter() - began
        span, _ = asyncio.run(write_span(bootstrap, sink, {}))  # one output per record
    finally:
        process.terminate()
        process.wait(60)
        log.close()
    return rates(len(measured), span, seconds)


def quix_peer(
    bootstrap: str, root: Path, setup: list[dict], measured: list[dict], guarantee: str
) -> dict:
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
            guarantee,
        ],
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the Quix peer ({guarantee}) failed:\n{completed.stderr[-3000:]}")
    return {**json.loads(result.read_text()), "processing_guarantee": guarantee}


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
    parser.add_argument(
        "--before",
        metavar="REF",
        help="also run one worker of the code at this git commit (e.g. 93ca5cb), same stream",
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        help="MARGINSTREAM_COMMIT_INTERVAL for ours and before (default: each code's own)",
    )
    parser.add_argument(
        "--scale-out",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also ours with N workers on the 8 partitions (e.g. 2 4), each in a fresh deployment",
    )
    args = parser.parse_args()

    setup = market(args.instruments) + deposits(args.accounts)
    measured = list(trading(args.accounts, args.instruments, args.records))
    extra_env = {}
    if args.commit_interval is not None:
        extra_env["MARGINSTREAM_COMMIT_INTERVAL"] = str(args.commit_interval)
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
        figures["ours"] = ours(bootstrap, root, setup, measured, extra_env)
        print(f"marginstream:       {shown(figures['ours'])}")
        if args.before:
            figures["before"] = before(bootstrap, root, args.before, setup, measured, extra_env)
            old = figures["before"]
            span = old.get("changelog_span_records_per_second")  # a worker of 93ca5cb or before
            print(
                f"before ({args.before}): {shown(old)}"
                + (f"; its changelog span {span:,.0f} records/s" if span else "")
            )
        for workers in args.scale_out:
            scaled = figures.setdefault("scale_out", {})
            scaled[workers] = ours(bootstrap, root, setup, measured, extra_env, workers)
            print(f"marginstream, {workers} workers: {shown(scaled[workers])}")
        if not args.skip_peer:  # like for like: exactly once, as ours runs; and at least once
            for name, guarantee in (
                ("peer", "exactly-once"),
                ("peer_at_least_once", "at-least-once"),
            ):
                figures[name] = quix_peer(bootstrap, root, setup, measured, guarantee)
                print(f"Quix Streams peer, {guarantee}: "
                      f"{figures[name]['records_per_second']:,.0f} records/s")  # fmt: skip
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
        print(f"ours / peer (both exactly once): {figures['ours_over_peer']:.2f} (goal >= 1.5)")
        loose = figures["peer_at_least_once"]["records_per_second"]
        figures["ours_over_peer_at_least_once"] = ours_rate / loose
        print(f"ours / peer at least once: {figures['ours_over_peer_at_least_once']:.2f}")
    if "before" in figures:
        after, old = figures["ours"], figures["before"]
        figures["after_over_before_end_to_end"] = (
            after["end_to_end_records_per_second"] / old["end_to_end_records_per_second"]
        )
        figures["after_over_before"] = ours_rate / old["records_per_second"]
        print(
            f"after / before, end to end: {figures['after_over_before_end_to_end']:.2f} "
            f"(first to last: {figures['after_over_before']:.2f}); commit interval "
            f"{after['commit_interval']:g}s after, {old['commit_interval']:g}s before"
        )
    # A run with --before is another comparison: it never replaces the plain run's file.
    name = f"throughput-before-{args.before}" if args.before else "throughput"
    print(f"written to {write_result(name, figures)}")


if __name__ == "__main__":
    main()
