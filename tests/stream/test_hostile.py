"""Hostile records of every class the outside test found, mixed into a live stream.

Each is dead-lettered (with the reason and bounded excerpt the core gives it offline),
the worker stays up, and everything else equals the replay of the good records.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from marginstream.core import DEAD_LETTERS, EngineConfig, RiskEngine
from marginstream.core.inputs import intake
from marginstream.core.inputs.envelope import NotJson
from marginstream.core.inputs.keys import account_partition
from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, final_checks

Hostile = tuple[str, bytes | None, bytes | None, int | None]  # topic, key, value, partition
NUMBERS = ["1E+999999999", "-1E+999999999", "1E-999999999", "NaN", "-Infinity", "sNaN",
           "1e15", "0.0000000000001", "0x10", [], {}, True, None]  # fmt: skip
RAW_NUMBERS = [b"1e400", b"-1e400", b"100000000000000000000000000000", b"NaN"]


def account_records(accounts: list[str], partitions: int) -> list[Hostile]:
    hostile: list[Hostile] = []
    for i, account in enumerate(accounts):
        key, home = account.encode(), account_partition(account, partitions)
        order = {"type": "order", "order_id": f"h{i}", "account": account, "symbol": "BTC-PERP",
                 "side": "buy", "qty": "1", "price": "100", "ts": 1}  # fmt: skip
        deposit = {"type": "deposit", "transfer_id": f"h{i}", "account": account,
                   "amount": "5000", "ts": 1}  # fmt: skip
        for number in NUMBERS:  # overflow, huge exponents, NaN and Infinity, wrong types
            field = ("qty", "price")[i % 2]
            hostile.append(("orders", key, orjson.dumps({**order, field: number}), None))
            hostile.append(("transfers", key, orjson.dumps({**deposit, "amount": number}), None))
        for raw in RAW_NUMBERS:
            text = orjson.dumps({**deposit, "amount": 0}).replace(b"0}", raw + b"}", 1)
            hostile.append(("transfers", key, text, None))
        hostile += [
            ("orders", key, b"[" * 3000 + b"]" * 3000, None),  # deeper than any parser allows
            ("orders", key, b'"' * 900_000, None),  # once a 1.8 MB dead letter: crash loop
            ("transfers", key, b"\xff" * 900_000, None),  # once 2.7 MB
            ("transfers", key, orjson.dumps({**deposit, "pad": "x" * 70_000}), None),
            ("orders", key, b"\x00\x01not json", None),
            ("orders", key, b"", None),
            ("orders", key, None, None),  # a tombstone
            ("transfers", None, orjson.dumps(deposit), home),  # no key
            ("transfers", b"someone-else", orjson.dumps(deposit), None),  # another's key
            ("transfers", key, orjson.dumps(deposit), (home + 1) % partitions),  # elsewhere
            ("transfers", key * 400, orjson.dumps(deposit), home),  # a huge key
            ("orders", key, orjson.dumps({**order, "ts": "yesterday"}), None),
            ("orders", key, orjson.dumps({**order, "type": "teleport"}), None),
        ]
    return hostile


def market_records() -> list[Hostile]:
    hostile: list[Hostile] = []
    for number in NUMBERS:  # an index at 1E+999999999 once stopped every worker
        hostile.append(("prices", b"BTC", orjson.dumps(
            {"type": "index", "underlying": "BTC", "price": number, "ts": 2}), None))  # fmt: skip
        hostile.append(("prices", b"BTC-PERP", orjson.dumps(
            {"type": "funding", "symbol": "BTC-PERP", "rate": number, "ts": 2}), None))  # fmt: skip
    hostile += [
        ("prices", b"BTC", b"\xff" * 900_000, None),
        ("prices", b"BTC", b"x" * 1_000_000, None),  # its copies must still fit in Kafka
        ("prices", None, b"[" * 3000 + b"]" * 3000, None),
        ("instruments", b"X", orjson.dumps({"type": "instrument", "symbol": "X"}), None),
    ]
    return hostile


def test_hostile_records_are_dead_lettered_and_the_rest_equals_the_replay(
    deployment: Deployment,
):
    records = list(demo_events(DemoMarket(accounts=30, steps=3)))
    accounts = sorted({r["key"] for r in records if r["topic"] == "transfers"})
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    names = deployment.names
    half = len(records) // 2

    # Records in the market fan-out topic that the fan-out did not write: no origin, or
    # one that is no market input's (the replay guard would keep a position for it).
    forged = [("ms-topic", b"orders"), ("ms-partition", b"0"), ("ms-offset", b"7")]
    fanout = [(names.fanout, b"BTC", b'{"type": "index"}', 0)] * 2
    letters = send(deployment, fanout, raw_topic=True, headers=[[], forged])
    deployment.produce(records[:half])
    account_hostile = account_records(accounts[:8], deployment.partitions)
    letters += send(deployment, account_hostile)
    deployment.produce(records[half:])
    letters += send(deployment, market_records())
    assert len(letters) >= 250

    deployment.wait_applied()
    assert worker.alive()
    live = [value for topic, value in deployment.outputs() if topic == DEAD_LETTERS]
    assert max(len(orjson.dumps(letter)) for letter in live) < 8 * 1024
    reference = Reference.of(records)
    reference.outputs.extend((DEAD_LETTERS, letter) for letter in letters)
    final_checks(deployment, reference)
    assert "Traceback" not in worker.log_path.read_text(errors="replace")


def send(
    deployment: Deployment,
    hostile: list[Hostile],
    raw_topic: bool = False,
    headers: list[list[tuple[str, bytes]]] | None = None,
) -> list[Any]:
    """Produce hostile records as they are; returns the dead letter the core gives each,
    offline, at the position Kafka gave it."""
    placed = asyncio.run(_produce(deployment, hostile, raw_topic, headers))
    offline = RiskEngine(EngineConfig(partitions=deployment.partitions))
    letters = []
    for (topic, key, value, _), (partition, offset) in zip(hostile, placed, strict=True):
        envelope = intake.envelope(topic, partition, offset, key, value)
        if raw_topic:
            lacking = NotJson("a record in the market fan-out topic without valid origin headers")
            envelope = envelope._replace(value=lacking)
        outputs = offline.apply(envelope).outputs
        assert [o.topic for o in outputs] == [DEAD_LETTERS], (topic, key, value and value[:80])
        letters.append(outputs[0].value)
    return letters


async def _produce(
    deployment: Deployment,
    hostile: list[Hostile],
    raw_topic: bool,
    headers: list[list[tuple[str, bytes]]] | None,
) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(
        bootstrap_servers=deployment.bootstrap, acks="all", max_request_size=2 * 1024 * 1024
    )
    await producer.start()
    try:
        sends = [
            await producer.send(
                topic if raw_topic else deployment.prefix + topic,
                value=value, key=key, partition=partition,
                headers=headers[i] if headers else None,
            )
            for i, (topic, key, value, partition) in enumerate(hostile)
        ]  # fmt: skip
        return [(m.partition, m.offset) for m in await asyncio.gather(*sends)]
    finally:
        await producer.stop()


def test_rejected_large_records_leave_nothing_behind_in_memory(deployment: Deployment):
    """Once, each rejected record's full text stayed in a dead-letter ring: 200 rejected
    900 KB values took a worker from 81 to 361 MB. Now 200 of them may cost fetch
    buffers, not their sum."""
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    assert worker.process is not None
    before = rss_mib(worker.process.pid)
    account = b"acct-00001"
    big = [("orders", account, bytes([65 + i % 26]) * 900_000, None) for i in range(200)]
    placed = asyncio.run(_produce(deployment, big, False, None))
    assert len(placed) == 200
    deployment.wait_applied()
    grown = rss_mib(worker.process.pid) - before
    letters = [v for t, v in deployment.outputs() if t == DEAD_LETTERS]
    assert len(letters) == 200 and all(v["value_bytes"] == 900_000 for v in letters)
    assert grown < 100, f"the worker grew by {grown:.0f} MiB for 180 MB of rejected records"
    assert worker.alive()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024
