"""The bounds only the brokers know (stream/brokerlimits.py): compared with made-up
limits, read from the real broker, and a worker refused at start with one line."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import InvalidSessionTimeoutError

from marginstream.stream import brokerlimits, runner
from marginstream.stream.bounds import RECORD_BYTES_LIMIT
from marginstream.stream.brokerlimits import BrokerLimits, beyond_broker_limits, refusal
from marginstream.stream.settings import StreamSettings
from tests.stream.harness import Deployment

KAFKA_DEFAULTS = {
    "group.min.session.timeout.ms": 6000,
    "group.max.session.timeout.ms": 1_800_000,
    "message.max.bytes": 1_048_588,
    "transaction.max.timeout.ms": 900_000,
}
ERROR = "marginstream: error: "


def limits(**changes: object) -> BrokerLimits:
    configs = {**KAFKA_DEFAULTS, **changes.pop("configs", {})}  # type: ignore[dict-item]
    fields = {"brokers": 3, "missing_topics": (), "configs": configs}
    return BrokerLimits(**{**fields, "fanout_max_message_bytes": None, **changes})  # type: ignore[arg-type]


def test_settings_within_kafka_s_defaults_fit():
    assert refusal(limits(), StreamSettings()) is None
    unread = BrokerLimits(brokers=1, missing_topics=(), configs={}, fanout_max_message_bytes=None)
    assert refusal(unread, StreamSettings(session_timeout=0.1)) is None


def test_a_session_timeout_outside_the_brokers_range_names_both_bounds():
    for seconds in (5.9, 1801.0):
        said = refusal(limits(), StreamSettings(session_timeout=seconds))
        assert said is not None and said.startswith(f"MARGINSTREAM_SESSION_TIMEOUT={seconds:g}: ")
        assert "group.min.session.timeout.ms=6000" in said
        assert "group.max.session.timeout.ms=1800000" in said
    assert refusal(limits(), StreamSettings(session_timeout=6.0)) is None


def test_the_record_limit_leaves_a_kib_under_the_brokers_and_the_fan_out_topic():
    # The static bound (aiokafka's request size less 1 KiB) is below the brokers' default.
    assert refusal(limits(), StreamSettings(max_record_bytes=RECORD_BYTES_LIMIT)) is None
    lower = limits(configs={"message.max.bytes": 500_000})
    assert refusal(lower, StreamSettings(max_record_bytes=500_000 - 1024)) is None
    said = refusal(lower, StreamSettings(max_record_bytes=500_000 - 1023))
    assert said is not None and "message.max.bytes=500000" in said
    topic = limits(fanout_max_message_bytes=32768)
    said = refusal(topic, StreamSettings(max_record_bytes=40_000))
    assert said is not None and said.startswith("MARGINSTREAM_MAX_RECORD_BYTES=40000: ")
    assert (
        "must be at most 31744" in said and "max.message.bytes=32768 of marginstream-market" in said
    )


def test_brokers_whose_transactions_time_out_sooner_than_the_producers_are_refused():
    said = refusal(limits(configs={"transaction.max.timeout.ms": 30_000}), StreamSettings())
    assert said is not None and "transaction.max.timeout.ms=30000" in said
    assert "raise it on the brokers to at least 60000" in said
    assert refusal(limits(configs={"transaction.max.timeout.ms": 60_000}), StreamSettings()) is None


def test_a_replication_factor_above_the_brokers_matters_only_for_a_topic_to_create():
    settings = StreamSettings(replication_factor=3)
    assert refusal(limits(brokers=1), settings) is None  # every topic exists
    said = refusal(limits(brokers=1, missing_topics=("orders",)), settings)
    assert said is not None and said.startswith("MARGINSTREAM_REPLICATION_FACTOR=3: ")
    assert "1 broker(s)" in said and "orders" in said
    assert refusal(limits(brokers=3, missing_topics=("orders",)), settings) is None


class AdminWithoutConfigs:
    """An admin client whose user may not describe configs (ACLs): error 31 per resource."""

    async def describe_cluster(self) -> dict:
        return {"brokers": [{"node_id": 1}, {"node_id": 2}]}

    async def list_topics(self) -> list[str]:
        return ["marginstream-market"]

    async def describe_configs(self, resources: list) -> list:
        return [
            SimpleNamespace(resources=[(31, "", r.resource_type, r.name, []) for r in resources])
        ]


def test_without_the_right_to_describe_configs_one_warning_and_no_refusal(caplog):
    with caplog.at_level(logging.WARNING, logger=brokerlimits.__name__):
        read = asyncio.run(brokerlimits.read_limits(AdminWithoutConfigs(), StreamSettings()))  # type: ignore[arg-type]
    assert read.configs == {} and read.fanout_max_message_bytes is None and read.brokers == 2
    [warning] = caplog.records
    assert "ClusterAuthorizationFailedError" in warning.getMessage()
    assert refusal(read, StreamSettings(session_timeout=0.1, max_record_bytes=1_047_552)) is None


def test_a_group_join_refused_for_its_session_timeout_stops_the_worker_with_a_sentence(monkeypatch):
    said = []
    monkeypatch.setattr(runner, "fail", said.append)

    async def join() -> None:
        raise InvalidSessionTimeoutError()

    asyncio.run(runner._guarded("processing", join))
    assert said == [
        "the processing task failed: Kafka refused MARGINSTREAM_SESSION_TIMEOUT as the "
        "group's session timeout: it must be within the brokers' "
        "group.min.session.timeout.ms and group.max.session.timeout.ms"
    ]


def test_the_real_broker_s_limits(kafka_bootstrap: str):
    """The session broker's group.min.session.timeout.ms is 1000 (localbroker/server.py)."""
    settings = StreamSettings(bootstrap_servers=kafka_bootstrap, topic_prefix="limits-")
    assert asyncio.run(beyond_broker_limits(settings)) is None
    slow = StreamSettings(bootstrap_servers=kafka_bootstrap, session_timeout=0.5)
    said = asyncio.run(beyond_broker_limits(slow))
    assert said is not None and "group.min.session.timeout.ms=1000" in said


def error_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith(ERROR)]


def test_workers_refused_by_the_broker_s_limits_exit_2_with_one_line(
    kafka_bootstrap: str, tmp_path: Path
):
    """A session timeout inside the static range but below the broker's; a record limit
    above the max.message.bytes of a fan-out topic made beforehand. Both workers at once."""
    slow = Deployment(kafka_bootstrap, tmp_path / "slow",
                      extra_env={"MARGINSTREAM_SESSION_TIMEOUT": "0.5"})  # fmt: skip
    large = Deployment(kafka_bootstrap, tmp_path / "large",
                       extra_env={"MARGINSTREAM_MAX_RECORD_BYTES": "40000"})  # fmt: skip
    fanout = large.names.fanout

    async def make_fanout_topic() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            topic = NewTopic(
                fanout, large.partitions, 1, topic_configs={"max.message.bytes": "32768"}
            )
            await admin.create_topics([topic])
        finally:
            await admin.close()

    asyncio.run(make_fanout_topic())
    fits = StreamSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=large.prefix,
                          app_id=large.app_id, max_record_bytes=31744)  # fmt: skip
    assert asyncio.run(beyond_broker_limits(fits)) is None
    workers = [slow.worker("w1").start(), large.worker("w1").start()]
    try:
        codes = [worker.wait_exit(60) for worker in workers]
    finally:
        for deployment in (slow, large):
            deployment.stop_all()
    assert codes == [2, 2], [w.log_tail() for w in workers]
    [slow_line], [large_line] = (error_lines(w.log_path) for w in workers)
    assert slow_line.startswith(f"{ERROR}MARGINSTREAM_SESSION_TIMEOUT=0.5: ")
    assert "group.min.session.timeout.ms=1000" in slow_line
    assert large_line.startswith(f"{ERROR}MARGINSTREAM_MAX_RECORD_BYTES=40000: ")
    assert f"max.message.bytes=32768 of {fanout}" in large_line
    for worker in workers:
        assert "Traceback" not in worker.log_path.read_text()
    assert not [t for t in asyncio.run(topics(kafka_bootstrap)) if t.startswith(slow.prefix)]


async def topics(bootstrap: str) -> list[str]:
    """Refused before it creates any topic: the refused deployment has none."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()
