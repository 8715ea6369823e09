"""The bounds of the settings that only the brokers know, read from them at start.

A value inside its static range (bounds.py) can still be one the cluster refuses, and
then not at start but later, deep in a client: a session timeout outside the brokers'
group range fails the group join; a record limit above what the brokers or the fan-out
topic take makes every large market record a send Kafka refuses for good, which stops
the worker; a transaction timeout above the brokers' maximum fails every producer's
start; a replication factor above the brokers fails the topics' creation. So the worker
reads the limits once, before it creates its topics, and refuses with one line.

Cheap: the cluster's metadata (brokers and topic names), then one DescribeConfigs of
one broker's four limits and, when it exists, the fan-out topic's record size, sent
together. Without the right to describe configs (ACLs), the worker logs one warning
and goes on: the clients' own errors (stream/runner.py) still stop it with one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code

from marginstream.stream.bounds import HEADROOM_BYTES, TRANSACTION_TIMEOUT_MS
from marginstream.stream.settings import StreamSettings
from marginstream.stream.topics import TopicNames

log = logging.getLogger(__name__)

BROKER_LIMITS = (
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "message.max.bytes",
    "transaction.max.timeout.ms",
)
TOPIC_LIMIT = "max.message.bytes"


@dataclass(frozen=True)
class BrokerLimits:
    """What the cluster allows; None for a limit it did not say (not allowed to)."""

    brokers: int
    missing_topics: tuple[str, ...]  # of the deployment's, to be created at start
    configs: dict[str, int]  # of BROKER_LIMITS, by name
    fanout_max_message_bytes: int | None  # None too when the fan-out topic does not exist


def refusal(limits: BrokerLimits, settings: StreamSettings) -> str | None:
    """Why the settings do not fit the cluster (one line), or None."""
    configs, names = limits.configs, TopicNames(settings.topic_prefix, settings.app_id)
    low, high = configs.get(BROKER_LIMITS[0]), configs.get(BROKER_LIMITS[1])
    session_ms = int(settings.session_timeout * 1000)  # as the consumers send it
    if low is not None and high is not None and not low <= session_ms <= high:
        return (
            f"MARGINSTREAM_SESSION_TIMEOUT={settings.session_timeout:g}: outside what the "
            f"brokers accept: must be {low / 1000:g} to {high / 1000:g} seconds "
            f"(their group.min.session.timeout.ms={low}, group.max.session.timeout.ms={high})"
        )
    caps = []
    if (message_max := configs.get("message.max.bytes")) is not None:
        caps.append((message_max - HEADROOM_BYTES, f"the brokers' message.max.bytes={message_max}"))
    if (topic_max := limits.fanout_max_message_bytes) is not None:
        caps.append(
            (topic_max - HEADROOM_BYTES, f"max.message.bytes={topic_max} of {names.fanout}")
        )
    for cap, whose in caps:
        if settings.max_record_bytes > cap:
            return (
                f"MARGINSTREAM_MAX_RECORD_BYTES={settings.max_record_bytes}: above what Kafka "
                f"takes: must be at most {cap} ({whose}, less 1 KiB for the headers the "
                "market fan-out adds to a copy)"
            )
    transaction_max = configs.get("transaction.max.timeout.ms")
    if transaction_max is not None and transaction_max < TRANSACTION_TIMEOUT_MS:
        return (
            f"the brokers' transaction.max.timeout.ms={transaction_max} is below the "
            f"{TRANSACTION_TIMEOUT_MS} ms transaction timeout of the worker's producers: "
            f"raise it on the brokers to at least {TRANSACTION_TIMEOUT_MS}"
        )
    if limits.missing_topics and settings.replication_factor > limits.brokers:
        return (
            f"MARGINSTREAM_REPLICATION_FACTOR={settings.replication_factor}: above the "
            f"{limits.brokers} broker(s) of the cluster, which cannot hold that many copies "
            f"of the topics to create ({', '.join(limits.missing_topics)})"
        )
    return None


async def read_limits(admin: AIOKafkaAdminClient, settings: StreamSettings) -> BrokerLimits:
    names = TopicNames(settings.topic_prefix, settings.app_id)
    cluster = await admin.describe_cluster()
    present = set(await admin.list_topics())
    wanted = names.every_topic()
    missing = tuple(name for name in wanted if name not in present)
    node = str(cluster["brokers"][0]["node_id"])
    resources = [ConfigResource(ConfigResourceType.BROKER, node, dict.fromkeys(BROKER_LIMITS))]
    if names.fanout in present:
        resources.append(
            ConfigResource(ConfigResourceType.TOPIC, names.fanout, {TOPIC_LIMIT: None})
        )
    try:
        responses = await admin.describe_configs(resources)
    except KafkaError as error:
        log.warning("cannot read the brokers' limits (%r): not checked before start", error)
        responses = []
    configs, refused = _configs(responses)
    if refused:
        log.warning(
            "not allowed to read the configs of %s (%s): the session timeout and the "
            "record size are not checked against them before start",
            ", ".join(refused), ", ".join(sorted(set(refused.values()))),
        )  # fmt: skip
    topic_max = configs.get(names.fanout, {}).get(TOPIC_LIMIT)
    return BrokerLimits(len(cluster["brokers"]), missing, configs.get(node, {}), topic_max)


def _configs(responses: list[Any]) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Each resource's whole-number configs by name; and the resources refused, with the
    error code's name."""
    configs: dict[str, dict[str, int]] = {}
    refused: dict[str, str] = {}
    for response in responses:
        for error_code, _message, _type, name, entries, *_ in response.resources:
            if error_code:
                refused[name] = for_code(error_code).__name__
                continue
            configs[name] = {
                entry[0]: int(entry[1]) for entry in entries if str(entry[1]).isdigit()
            }
    return configs, refused


async def broker_refusal(admin: AIOKafkaAdminClient, settings: StreamSettings) -> str | None:
    """Why the settings do not fit the cluster admin talks to, or None."""
    return refusal(await read_limits(admin, settings), settings)


async def beyond_broker_limits(settings: StreamSettings) -> str | None:
    """broker_refusal with an admin client of its own (KafkaError: no broker reached)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **settings.kafka_options()
    )
    await admin.start()
    try:
        return await broker_refusal(admin, settings)
    finally:
        await admin.close()
