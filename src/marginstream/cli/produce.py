"""`marginstream produce EVENTS.jsonl`: send a file of {topic, key, value} lines to Kafka.

The whole file is checked before anything is sent: a bad line is reported with its
number and reason and nothing reaches Kafka, so a half-sent file is never left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from tqdm import tqdm

from marginstream.cli.errors import CommandError
from marginstream.stream.security import KafkaSecurity, SecurityError, refusal


class Record(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None  # None: the key's, by Kafka's default partitioner
    line: int


def read_records(path: Path, prefix: str) -> list[Record]:
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    records: list[Record] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise CommandError(f"{path}:{number}: not JSON ({error})") from None
            if not isinstance(item, dict):
                raise CommandError(f"{path}:{number}: expected an object with topic, key, value")
            topic, key, value = item.get("topic"), item.get("key"), item.get("value", ...)
            if not isinstance(topic, str) or not topic:
                raise CommandError(f"{path}:{number}: topic must be a non-empty string")
            if value is ...:
                raise CommandError(f"{path}:{number}: value is missing")
            if key is not None and not isinstance(key, str):
                raise CommandError(f"{path}:{number}: key must be a string or null")
            partition = item.get("partition")  # else the key's, by the default partitioner
            if partition is not None and (
                not isinstance(partition, int) or isinstance(partition, bool) or partition < 0
            ):
                raise CommandError(f"{path}:{number}: partition must be a whole number >= 0")
            encoded = None if key is None else key.encode()
            records.append(Record(prefix + topic, encoded, orjson.dumps(value), partition, number))
    return records


async def check_topics(
    records: list[Record], bootstrap: str, create: int | None, **options: Any
) -> dict[str, int]:
    """Every topic must exist (a worker creates its topics when it starts), or be created.
    Returns the partition count of each topic a record names a partition of."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await admin.start()
    try:
        missing = sorted({r[0] for r in records} - set(await admin.list_topics()))
        if missing and create is None:
            raise CommandError(
                f"no such topic{'s' if len(missing) > 1 else ''} on {bootstrap}: "
                f"{', '.join(missing)} (start a worker, which creates its topics, "
                "or pass --create-topics PARTITIONS)"
            )
        if missing:
            await admin.create_topics([NewTopic(t, create or 1, 1) for t in missing])
        placed = sorted({r.topic for r in records if r.partition is not None})
        described = await admin.describe_topics(placed) if placed else []
        return {entry["topic"]: len(entry["partitions"]) for entry in described}
    finally:
        await admin.close()


def check_partitions(records: list[Record], counts: dict[str, int], path: Path) -> None:
    """A line's partition must exist: Kafka would refuse it after earlier lines were sent."""
    for record in records:
        count = counts.get(record.topic, 0)
        if record.partition is not None and record.partition >= count:
            raise CommandError(
                f"{path}:{record.line}: partition {record.partition} of {record.topic}: the "
                f"topic has {count} partition{'' if count == 1 else 's'}"
            )


async def send_all(
    records: list[Record], bootstrap: str, rate: float | None, **options: Any
) -> float:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 (keeps `marginstream --help` fast)

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, **options
    )
    await producer.start()
    began = time.monotonic()
    try:
        with tqdm(total=len(records), unit="rec", unit_scale=True, desc="produce") as bar:
            pending = []
            for n, (topic, key, value, partition, _) in enumerate(records, start=1):
                sent = await producer.send(topic, value=value, key=key, partition=partition)
                pending.append(sent)
                if rate and n % 100 == 0:
                    ahead = n / rate - (time.monotonic() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if len(pending) >= 1000:
                    await asyncio.gather(*pending)
                    bar.update(len(pending))
                    pending.clear()
            await asyncio.gather(*pending)
            bar.update(len(pending))
    finally:
        await producer.stop()
    return time.monotonic() - began


def run(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    try:  # the worker's variables: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*
        security = KafkaSecurity.from_env()
    except SecurityError as error:
        raise CommandError(str(error)) from None
    options = security.options()
    records = read_records(args.events, args.prefix)
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its "Unable connect" log: the error below says it
    try:
        counts = asyncio.run(
            check_topics(records, args.bootstrap_servers, args.create_topics, **options)
        )
    except KafkaError as error:  # as the worker says it: refused credentials, untrusted CA
        reason = asyncio.run(refusal(args.bootstrap_servers, security))
        bootstrap = args.bootstrap_servers
        raise CommandError(reason or f"cannot reach Kafka at {bootstrap}: {error!r}") from None
    finally:
        quiet.setLevel(level)
    check_partitions(records, counts, args.events)
    seconds = asyncio.run(send_all(records, args.bootstrap_servers, args.rate, **options))
    print(f"sent {len(records):,} records in {seconds:.1f}s to {args.bootstrap_servers}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("produce", help="send a JSON-lines file of records to Kafka")
    parser.add_argument("events", type=Path, help="JSON lines of {topic, key, value}")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get("MARGINSTREAM_TOPIC_PREFIX", ""),
        help="prepended to every topic name (default: $MARGINSTREAM_TOPIC_PREFIX)",
    )
    parser.add_argument("--rate", type=float, help="at most this many records per second")
    parser.add_argument(
        "--create-topics",
        type=int,
        metavar="PARTITIONS",
        help="create missing topics with this many partitions (default: refuse)",
    )
    parser.set_defaults(run=run)
