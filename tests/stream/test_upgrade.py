"""State written by an earlier version is read by this one.

tests/fixtures/format1 holds every changelog record a worker of commit 93ca5cb (stored
format 1, at-least-once) wrote for 272 input records. Here the deployment's changelog
gets those records, in their partitions and order, and its input topics the same input
records; the new group has committed nothing, so a worker of this version restores the
old parts and then reads every old input again. It must recognise each as applied (the
replay guard it derives from the format-1 positions), publish nothing for them, serve
the replay's states, and go on from there equal to the replay of everything.

Keep this test and its fixture for every later format change.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from marginstream.feeds.driver import produce_runs
from marginstream.stream.settings import StreamSettings
from marginstream.stream.topics import ensure_topics
from tests.stream.harness import Deployment, Reference, final_checks, live_states

FIXTURE = Path(__file__).parents[1] / "fixtures" / "format1"
T1 = 1_795_000_200_000  # after everything in the fixture


def _lines(name: str) -> list[dict[str, Any]]:
    text = (FIXTURE / name).read_text()
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


async def _write_changelog(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for record in sorted(records, key=lambda r: (r["partition"], r["offset"])):
            await producer.send_and_wait(
                topic, base64.b64decode(record["value_b64"]), key=record["key"].encode(),
                partition=record["partition"],
            )  # fmt: skip
    finally:
        await producer.stop()


def _later_records() -> list[dict[str, Any]]:
    """What the venue sends after the upgrade: trades, transfers, market moves."""

    def rec(topic: str, key: str, **value: Any) -> dict[str, Any]:
        return {"topic": topic, "key": key, "value": value}

    def fill(fill_id: str, account: str, side: str, ts: int) -> dict[str, Any]:
        return rec(
            "orders", account, type="fill", fill_id=fill_id, account=account,
            symbol="BTC-PERP", side=side, qty="1", price="60000", fee="1.5", ts=ts,
        )  # fmt: skip

    a5 = "acct-00005"
    return [
        rec("transfers", a5, type="deposit", transfer_id="up-1", account=a5, amount="2500", ts=T1),
        rec(
            "orders",
            a5,
            type="order",
            order_id="up-o1",
            account=a5,
            symbol="BTC-PERP",
            side="buy",
            qty="1",
            price="60000",
            ts=T1 + 1,
        ),
        fill("up-f1", a5, "buy", T1 + 2),
        fill("up-f2", "mm", "sell", T1 + 3),
        fill("fill-1", "acct-00001", "buy", T1 + 4),  # an old fill id: a duplicate
        rec("prices", "BTC", type="index", underlying="BTC", price="52000", ts=T1 + 5),
        rec("prices", "BTC-PERP", type="mark", symbol="BTC-PERP", price="52000", ts=T1 + 6),
        rec(
            "transfers",
            "acct-00002",
            type="withdrawal",
            transfer_id="up-w1",
            account="acct-00002",
            amount="100",
            ts=T1 + 7,
        ),
        rec("prices", "BTC-PERP", type="mark", symbol="BTC-PERP", price="61000", ts=T1 + 8),
    ]


def test_a_format1_changelog_of_93ca5cb_is_restored_and_carried_on(deployment: Deployment):
    old_inputs = _lines("inputs.jsonl")
    assert len(old_inputs) == 272
    settings = StreamSettings(
        bootstrap_servers=deployment.bootstrap, topic_prefix=deployment.prefix,
        app_id=deployment.app_id, partitions=deployment.partitions,
    )  # fmt: skip
    asyncio.run(ensure_topics(settings))
    changelog = _lines("changelog.jsonl")
    asyncio.run(_write_changelog(deployment.bootstrap, deployment.names.changelog, changelog))
    asyncio.run(produce_runs(old_inputs, deployment.bootstrap, deployment.prefix))

    worker = deployment.worker("w1").start()
    health = worker.wait_ready()
    assert health["changelog_records_read"] == 481
    deployment.wait_applied()
    assert deployment.outputs() == []  # every old input recognised as applied
    before = Reference.of(old_inputs)
    assert live_states(worker, before.states) == before.states

    later = _later_records()
    deployment.produce(later)
    everything = Reference.of(old_inputs + later)
    assert len(everything.outputs) > len(before.outputs)
    since = Reference(everything.outputs[len(before.outputs) :], everything.states)
    final_checks(deployment, since)
