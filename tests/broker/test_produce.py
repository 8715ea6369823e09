"""`marginstream produce` sends every line of a file to Kafka, or nothing when a line is bad."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.kafka_admin import topic_names


def produce(path: Path, bootstrap: str, prefix: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "marginstream", "produce", str(path),
         "--bootstrap-servers", bootstrap, "--prefix", prefix, *extra],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


async def _consume(bootstrap: str, topics: list[str], expected: int) -> list[tuple]:
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    received = []
    try:
        async with asyncio.timeout(60):
            while len(received) < expected:
                for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                    received += [(tp.topic, m.key, m.value) for m in messages]
    finally:
        await consumer.stop()
    return received


def test_every_line_reaches_its_topic(kafka_bootstrap: str, tmp_path: Path):
    prefix = f"produce-{uuid.uuid4().hex[:6]}-"
    feed = tmp_path / "feed.jsonl"
    subprocess.run(
        [sys.executable, "-m", "marginstream", "feed", "--accounts", "30", "--out", str(feed)],
        check=True,
    )
    lines = [orjson.loads(line) for line in feed.read_bytes().splitlines()]
    refused = produce(feed, kafka_bootstrap, prefix)
    assert refused.returncode == 1
    assert f"no such topics on {kafka_bootstrap}: {prefix}instruments" in refused.stderr
    result = produce(feed, kafka_bootstrap, prefix, "--create-topics", "3")
    assert result.returncode == 0, result.stderr
    assert f"sent {len(lines):,} records" in result.stdout

    topics = sorted({prefix + line["topic"] for line in lines})
    received = asyncio.run(_consume(kafka_bootstrap, topics, len(lines)))
    sent = sorted(
        (prefix + line["topic"], line["key"].encode(), orjson.dumps(line["value"]))
        for line in lines
    )
    assert sorted(received) == sent


def test_a_bad_line_is_reported_and_nothing_is_sent(kafka_bootstrap: str, tmp_path: Path):
    prefix = f"bad-{uuid.uuid4().hex[:6]}-"
    feed = tmp_path / "bad.jsonl"
    feed.write_text(
        '{"topic": "orders", "key": "a", "value": {"type": "cancel"}}\n'
        '{"topic": "orders", "key": "a", "value": {"type": "cancel"}}\n'
        '{"topic": "orders", "key": "a", "value": {"type": \n'
    )
    result = produce(feed, kafka_bootstrap, prefix)
    assert result.returncode == 1
    assert result.stderr.startswith(f"marginstream: error: {feed}:3: not JSON")
    assert not any(t.startswith(prefix) for t in topic_names(kafka_bootstrap))


def test_a_line_naming_a_partition_the_topic_lacks_is_reported_and_nothing_is_sent(
    kafka_bootstrap: str, tmp_path: Path
):
    """An outside tester's file: line 1 went out, then aiokafka's traceback on line 2."""
    prefix = f"part-{uuid.uuid4().hex[:6]}-"
    deposit = {"type": "deposit", "transfer_id": "f", "account": "insurance-fund", "amount": "5"}
    feed = tmp_path / "partition.jsonl"
    feed.write_bytes(
        orjson.dumps({"topic": "instruments", "key": "X", "value": {"type": "instrument"}})
        + b"\n"
        + orjson.dumps(
            {"topic": "transfers", "key": "insurance-fund", "value": deposit, "partition": 3}
        )
    )
    result = produce(feed, kafka_bootstrap, prefix, "--create-topics", "3")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"marginstream: error: {feed}:2: partition 3 of {prefix}transfers: the topic has 3 "
        "partitions"
    )
    assert "Traceback" not in result.stderr
    # The topics were created (--create-topics) before the check, and nothing was sent.
    assert asyncio.run(_count(kafka_bootstrap, f"{prefix}instruments")) == (3, 0)


async def _count(bootstrap: str, topic: str) -> tuple[int, int]:
    """(partitions, records) of topic."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while not consumer.partitions_for_topic(topic):
                await consumer.topics()
                await asyncio.sleep(0.1)
        found = consumer.partitions_for_topic(topic)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in found])
        return len(found), sum(ends.values())
    finally:
        await consumer.stop()
