"""Workers as real processes on the real broker, and the replay they are checked against."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from marginstream.cli.replay import replay_lines, state_lines
from marginstream.core import RiskEngine
from marginstream.feeds.driver import produce_runs
from marginstream.localworker import LocalDeployment, LocalWorker

OUTPUT_TOPICS = ("liquidations", "decisions", "dead-letters")
ACCOUNT_TOPICS = ("orders", "transfers")


@dataclass
class Deployment(LocalDeployment):
    """A deployment of the stream tests: 4 partitions, commits every 0.2 s."""

    partitions: int = 4
    label: str = "t"

    def env(self) -> dict[str, str]:
        return {"MARGINSTREAM_COMMIT_INTERVAL": "0.2", **super().env()}

    def produce(self, records: list[dict[str, Any]], wait: bool = True) -> None:
        group = self.app_id if wait else None
        asyncio.run(produce_runs(records, self.bootstrap, self.prefix, group, timeout=300))

    def outputs(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything published to the output topics so far, as (SPEC topic, value)."""
        return asyncio.run(_consume_all(self.bootstrap, [self.prefix + t for t in OUTPUT_TOPICS],
                                        self.prefix))  # fmt: skip


async def _consume_all(bootstrap: str, topics: list[str], prefix: str) -> list[tuple]:
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    try:
        await consumer.seek_to_beginning()
        partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))
        received = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                topic = tp.topic[len(prefix) :]
                received += [(topic, orjson.loads(m.value)) for m in messages]
        return received
    finally:
        await consumer.stop()


@dataclass
class Reference:
    """What `marginstream replay` says of the same records."""

    outputs: list[tuple[str, dict[str, Any]]]
    states: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, records: Iterable[dict[str, Any]], engine: RiskEngine | None = None) -> Reference:
        engine = engine or RiskEngine()
        lines = [orjson.dumps(r).decode() for r in records]
        outputs = [(o.topic, o.value) for o in replay_lines(engine, lines)]
        states = {s["key"]: s["value"] for s in state_lines(engine)}
        return cls(outputs, states)


def comparable(topic: str, value: dict[str, Any]) -> tuple[Any, Any]:
    """(identity, content) of an output, blind to where account records sat in Kafka.

    A replay puts every record on partition 0 at its ordinal; live records of orders and
    transfers sit wherever the partitioner put them. Market records keep their positions
    (single-partition topics, produced in file order), so their triggers must match.
    """
    value = dict(value)
    if topic == "dead-letters":
        if value["topic"] in ACCOUNT_TOPICS:
            value["partition"] = value["offset"] = None
        return ("dead-letter", value["topic"], value["partition"], value["offset"],
                value["value"]), value  # fmt: skip
    trigger = value.get("trigger")
    if trigger and trigger["topic"] in ACCOUNT_TOPICS:
        value["trigger"] = {"topic": trigger["topic"]}
    return value.get("decision_id") or value["alert_id"], value


def compare_outputs(
    live: list[tuple[str, dict[str, Any]]], reference: list[tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """Missing, extra and differing outputs of live against the reference (empty: equal)."""
    expected: dict[Any, Any] = {}
    for topic, value in reference:
        ident, content = comparable(topic, value)
        expected.setdefault(ident, []).append(content)
    seen: dict[Any, Any] = {}
    for topic, value in live:
        ident, content = comparable(topic, value)
        seen.setdefault(ident, []).append(content)
    missing = [i for i in expected if i not in seen]
    extra = [i for i in seen if i not in expected]
    differing = [
        i for i in expected
        if i in seen and any(content not in expected[i] for content in seen[i])
    ]  # fmt: skip
    result: dict[str, Any] = {"missing": missing, "extra": extra, "differing": differing}
    if differing:  # show one, field by field, to make a failure readable
        ident = differing[0]
        want, got = expected[ident][0], next(c for c in seen[ident] if c not in expected[ident])
        result["first_difference"] = {
            "id": ident,
            **{
                k: {"replay": want.get(k), "live": got.get(k)}
                for k in want
                if want.get(k) != got.get(k)
            },
        }
    return result


def live_states(worker: LocalWorker, accounts: Iterable[str]) -> dict[str, Any]:
    states = {}
    for account in accounts:
        status, body = worker.get(f"/accounts/{account}/")
        assert status == 200, (account, status, body)
        body.pop("partition")
        states[account] = body
    return states


def assert_matches_replay(
    deployment: Deployment, worker: LocalWorker, reference: Reference
) -> None:
    """Every output published and every account state served equal the offline replay's."""
    assert compare_outputs(deployment.outputs(), reference.outputs) == {
        "missing": [], "extra": [], "differing": []
    }  # fmt: skip
    assert live_states(worker, reference.states) == reference.states
