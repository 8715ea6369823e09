"""Workers as real processes on the real broker, and the replay they are checked against.

Every stream test ends with `final_checks`, the same checks the soak ends with:

- the committed offsets reach the end of every input, within two commit intervals of
  the last record being applied;
- 0 account differences from the replay;
- every replay output id published, none the replay lacks, none twice, as a consumer
  that follows the output contract (read_committed) sees them;
- for every changelog key, the last record in the log carries the highest version;
- a fresh worker restored from the changelog alone serves the replay's states.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from aiokafka import AIOKafkaConsumer

from marginstream.cli.replay import replay_lines, state_lines
from marginstream.core import RiskEngine
from marginstream.core.delivery.parts import version_of
from marginstream.feeds.driver import produce_runs
from marginstream.localworker import LocalDeployment, LocalWorker
from marginstream.stream.settings import StreamSettings
from marginstream.stream.verify import verify

OUTPUT_TOPICS = ("liquidations", "decisions", "dead-letters", "liquidation-orders")
ACCOUNT_TOPICS = ("orders", "transfers")
COMMIT_INTERVAL = 0.2
NOTHING_WRONG = {"missing": [], "extra": [], "differing": [], "duplicated": []}


@dataclass
class Deployment(LocalDeployment):
    """A deployment of the stream tests: 4 partitions, commits every 0.2 s."""

    partitions: int = 4
    label: str = "t"

    def env(self) -> dict[str, str]:
        return {"MARGINSTREAM_COMMIT_INTERVAL": str(COMMIT_INTERVAL), **super().env()}

    def produce(self, records: list[dict[str, Any]], wait: bool = True) -> None:
        names = self.names if wait else None
        asyncio.run(produce_runs(records, self.bootstrap, self.prefix, names, timeout=300))

    def outputs(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything published to the output topics, as a read_committed consumer sees it:
        (SPEC topic, value)."""
        topics = [self.prefix + t for t in OUTPUT_TOPICS]
        return [
            (topic[len(self.prefix) :], orjson.loads(value))
            for topic, _, value in asyncio.run(read_all(self.bootstrap, topics))
        ]

    def changelog(self) -> list[tuple[int, bytes, bytes | None]]:
        """The committed changelog records: (partition, key, value), in log order."""
        records = asyncio.run(read_all(self.bootstrap, [self.names.changelog]))
        return [(partition, key, value) for _, (partition, key), value in records]


async def read_all(bootstrap: str, topics: list[str]) -> list[tuple[str, Any, Any]]:
    """Every committed record of topics, per partition in offset order:
    (topic, (partition, key), value)."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, isolation_level="read_committed",
    )  # fmt: skip
    await consumer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(list(consumer.assignment()))
        received = []
        async with asyncio.timeout(120):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                    received += [(tp.topic, (tp.partition, m.key), m.value) for m in messages]
        return received
    finally:
        await consumer.stop()


@dataclass
class Reference:
    """What `marginstream replay` says of the same records."""

    outputs: list[tuple[str, dict[str, Any]]]
    states: dict[str, dict[str, Any]]
    # Each partition's state root, with an engine per partition (Shards) as the replay of
    # `--partitions N --state`: the live partitions' last commitments must carry them.
    roots: dict[int, str] | None = None

    @classmethod
    def of(
        cls, records: Iterable[dict[str, Any]], engine: RiskEngine | None = None, roots: bool = True
    ) -> Reference:
        """roots=False: a deployment moved by `repartition`, whose accounts took their new
        partitions' leaves in the move's order, not the replay's (docs/verifiable-state.md)."""
        engine = engine or RiskEngine()
        lines = [orjson.dumps(r).decode() for r in records]
        outputs = [(o.topic, o.value) for o in replay_lines(engine, lines)]
        found = list(state_lines(engine))
        states = {s["key"]: s["value"] for s in found if s["topic"] == "state"}
        found_roots = {
            s["key"]: s["value"]["state_root"]
            for s in found
            if s["topic"] == "state-root" and s["key"] is not None
        }
        return cls(outputs, states, (found_roots or None) if roots else None)


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
    if topic == "liquidation-orders":  # an order and its cancel share the order's id
        return (value["type"], value.get("order_id") or value["adl_id"]), value
    return value.get("decision_id") or value["alert_id"], value


def compare_outputs(
    live: list[tuple[str, dict[str, Any]]], reference: list[tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """Missing, extra, differing and duplicated outputs of live against the reference."""
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
    duplicated = [i for i in seen if len(seen[i]) > len(expected.get(i, ()))]
    result: dict[str, Any] = {
        "missing": missing, "extra": extra, "differing": differing, "duplicated": duplicated
    }  # fmt: skip
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
        status, body = worker.get(f"/accounts/{quote(account, safe='')}/")  # any id
        assert status == 200, (account, status, body)
        body.pop("partition")
        states[account] = body
    return states


def changelog_version_breaches(records: list[tuple[int, bytes, bytes | None]]) -> list[Any]:
    """Changelog keys whose last record does not carry their highest version."""
    highest: dict[tuple[int, bytes], int] = {}
    last: dict[tuple[int, bytes], int] = {}
    for partition, key, value in records:
        version = version_of(value)
        highest[(partition, key)] = max(highest.get((partition, key), -1), version)
        last[(partition, key)] = version
    return [(k, last[k], highest[k]) for k in highest if last[k] != highest[k]]


def commit_liveness(worker: LocalWorker) -> dict[str, Any]:
    """Partitions of a worker with records applied and not committed, or whose last commit
    came later than two commit intervals after its last record (empty: none). The
    worker's own interval: a test may set another (test_commit_latency: 3 s), and a
    partition that committed less than one interval ago waits for it to pass."""
    interval = float(worker.env.get("MARGINSTREAM_COMMIT_INTERVAL", COMMIT_INTERVAL))
    health = worker.health() or {}
    return {
        p: lag
        for p, lag in health.get("commit_lag", {}).items()
        if lag["pending"] or lag["last_delay"] > 2 * interval
    }


def wait_settled(deployment: Deployment, timeout: float = 120.0) -> list[LocalWorker]:
    """The live workers, once each is open ("ok") and together they own every partition
    once (a rebalance may still be going on when the last record has been applied)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [w for w in deployment.workers if w.alive()]
        assert alive, "no worker left to check"
        healths = [w.health() or {} for w in alive]
        owned = sorted(p for h in healths for p in h.get("assigned", []))
        if all(h.get("status") == "ok" for h in healths) and owned == list(
            range(deployment.partitions)
        ):
            return alive
        if time.monotonic() > deadline:
            raise AssertionError(f"the group never settled: {healths}")
        time.sleep(0.2)


def final_checks(deployment: Deployment, reference: Reference) -> dict[str, int]:
    """The checks every stream test and the soak end with (see the module's docstring);
    returns what each found (all 0, or it fails)."""
    deployment.wait_applied()
    alive = wait_settled(deployment)
    late = {w.log_path.parent.name: commit_liveness(w) for w in alive}
    states = live_states(alive[0], reference.states)
    comparison = compare_outputs(deployment.outputs(), reference.outputs)
    breaches = changelog_version_breaches(deployment.changelog())
    report = verify_deployment(deployment)
    verified = report.partitions
    roots = {r.partition: r.last_root for r in verified}
    other_roots = [
        p for p, root in (reference.roots or {}).items() if roots.get(p) not in (None, root)
    ]
    deployment.stop_all()
    fresh = deployment.worker(f"fresh{len(deployment.workers)}").start()
    health = fresh.wait_ready(partitions=deployment.partitions)
    restored = live_states(fresh, reference.states)
    lag = deployment.lag()  # the fresh worker had nothing to re-apply
    fresh.stop()
    findings = {
        "late_commits": sum(len(partitions) for partitions in late.values()),
        "account_differences": sum(states[a] != want for a, want in reference.states.items()),
        **{f"outputs_{kind}": len(comparison[kind]) for kind in NOTHING_WRONG},
        "changelog_keys_not_ending_on_their_highest_version": len(breaches),
        "fresh_restore_differences": sum(
            restored[a] != want for a, want in reference.states.items()
        ),
        "fresh_restore_stale_records": health["changelog_records_stale"],
        "lag_after_fresh_restore": lag,
        "verify_divergences": sum(len(r.problems) for r in verified) + len(report.problems),
        "roots_other_than_the_replay_s": len(other_roots),
    }
    if comparison != NOTHING_WRONG:
        print(orjson.dumps(comparison, option=orjson.OPT_INDENT_2).decode()[:4000])
    problems = [line for line in report.lines() if "ok, " not in line]
    assert all(count == 0 for count in findings.values()), (findings, late, breaches[:5], problems)
    epochs = sum(r.audit.epochs for r in verified if r.audit)
    assert epochs > 0, "no commitment was checked"
    assert reference.roots is None or len(reference.roots) == len(roots), (reference.roots, roots)
    return {
        **findings,
        "verified_partitions": len(verified),
        "verified_epochs": epochs,
        "verified_records": sum(r.audit.records for r in verified if r.audit),
        "roots_compared_with_the_replay": len(reference.roots or ()),
    }


def verify_deployment(deployment: Deployment) -> list[Any]:
    """`marginstream verify` over the deployment, as its workers are configured."""
    settings = StreamSettings.from_env(deployment.env())
    return asyncio.run(verify(settings))
