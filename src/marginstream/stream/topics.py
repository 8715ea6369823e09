"""Every name a deployment creates or joins, under its prefix; topics created and checked.

Two deployments on one cluster share nothing unless they share the prefix and the app id:
the SPEC topics carry the prefix, and the internal topics, the consumer groups and the
transactional ids carry the prefix and the app id.
"""

from __future__ import annotations

from dataclasses import dataclass

from marginstream.stream.settings import StreamSettings

ACCOUNT_INPUTS = ("orders", "transfers")
MARKET_INPUTS = ("prices", "instruments")
OUTPUTS = ("liquidations", "decisions", "dead-letters", "liquidation-orders")
MARKET_FANOUT = "marginstream-market"  # the core's name for the fan-out topic


class TopicError(RuntimeError):
    """The topics exist in a shape the engine cannot run on."""


@dataclass(frozen=True)
class TopicNames:
    prefix: str
    app_id: str = "marginstream"

    def full(self, name: str) -> str:
        """A SPEC topic's name on the cluster."""
        return self.prefix + name

    def spec(self, full_name: str) -> str:
        """The core's name of a topic this deployment reads (its full name without prefix)."""
        if full_name == self.fanout:
            return MARKET_FANOUT
        return full_name[len(self.prefix) :] if full_name.startswith(self.prefix) else full_name

    @property
    def deployment(self) -> str:
        return self.prefix + self.app_id

    @property
    def group(self) -> str:
        """The risk workers' consumer group (it commits inside the transactions)."""
        return self.deployment

    @property
    def fanout_group(self) -> str:
        return f"{self.deployment}-fanout"

    @property
    def fanout(self) -> str:
        """Internal: every market record, one copy per partition."""
        return f"{self.deployment}-market"

    @property
    def changelog(self) -> str:
        """Internal, compacted: the state parts of every partition."""
        return f"{self.deployment}-state-changelog"

    def transactional_id(self, partition: int) -> str:
        """One per partition: a new owner's producer fences the previous owner's."""
        return f"{self.deployment}-p{partition}"

    def risk_inputs(self) -> list[str]:
        """What the risk workers read, co-partitioned: the account inputs and the fan-out."""
        return [*(self.full(n) for n in ACCOUNT_INPUTS), self.fanout]

    def market_inputs(self) -> list[str]:
        return [self.full(n) for n in MARKET_INPUTS]

    def outputs(self) -> list[str]:
        return [self.full(n) for n in OUTPUTS]

    def partitioned_like_orders(self) -> list[str]:
        return [*self.risk_inputs(), *self.outputs(), self.changelog]

    def consumed(self) -> dict[str, list[str]]:
        """Each consumer group of the deployment and the topics it commits offsets on."""
        return {self.group: self.risk_inputs(), self.fanout_group: self.market_inputs()}


COMPACTED = {"cleanup.policy": "compact"}


async def ensure_topics(settings: StreamSettings) -> dict[str, int]:
    """Create missing topics; refuse when the account inputs are not co-partitioned.

    Returns the partition count of every topic the engine uses.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    names = TopicNames(settings.topic_prefix, settings.app_id)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **settings.kafka_options()
    )
    await admin.start()
    try:
        wanted = {name: settings.partitions for name in names.partitioned_like_orders()}
        wanted.update({name: settings.market_partitions for name in names.market_inputs()})
        compacted = {names.full("instruments"), names.changelog}
        existing = await _partition_counts(admin, list(wanted))
        missing = [
            NewTopic(
                name,
                count,
                settings.replication_factor,
                topic_configs=COMPACTED if name in compacted else {},
            )
            for name, count in wanted.items()
            if name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        counts = {**wanted, **existing}
    finally:
        await admin.close()
    check_copartitioned(counts, names, settings.partitions)
    return counts


async def _partition_counts(admin: object, topics: list[str]) -> dict[str, int]:
    # Describe only topics that exist: a metadata request for a missing topic can make a
    # broker with auto.create.topics.enable create it, with its default partition count.
    present = set(await admin.list_topics())  # type: ignore[attr-defined]
    wanted = [t for t in topics if t in present]
    if not wanted:
        return {}
    described = await admin.describe_topics(wanted)  # type: ignore[attr-defined]
    return {
        entry["topic"]: len(entry["partitions"])
        for entry in described
        if entry.get("error_code", 0) == 0 and entry["partitions"]
    }


def check_copartitioned(counts: dict[str, int], names: TopicNames, partitions: int) -> None:
    orders, transfers = names.full("orders"), names.full("transfers")
    if counts[orders] != counts[transfers]:
        raise TopicError(
            f"{orders} has {counts[orders]} partitions and {transfers} has {counts[transfers]}: "
            "they must be co-partitioned (same count) so that one worker owns each account; "
            "recreate one of them"
        )
    for name in names.partitioned_like_orders():
        if counts[name] != partitions:
            raise TopicError(
                f"{name} has {counts[name]} partitions but MARGINSTREAM_PARTITIONS is "
                f"{partitions}: set MARGINSTREAM_PARTITIONS={counts[orders]} (the count of "
                f"{orders}) or recreate the topics"
            )
