"""The SPEC's topics under the configured prefix: created when missing, checked when present."""

from __future__ import annotations

from dataclasses import dataclass

from marginstream.stream.settings import StreamSettings

ACCOUNT_INPUTS = ("orders", "transfers")
MARKET_INPUTS = ("prices", "instruments")
OUTPUTS = ("liquidations", "decisions", "dead-letters")
MARKET_FANOUT = "marginstream-market"  # internal: market records, one copy per partition
RISK_INPUTS = (*ACCOUNT_INPUTS, MARKET_FANOUT)  # what the risk handler reads, co-partitioned


class TopicError(RuntimeError):
    """The topics exist in a shape the engine cannot run on."""


@dataclass(frozen=True)
class TopicNames:
    prefix: str

    def full(self, name: str) -> str:
        return self.prefix + name

    def spec(self, full_name: str) -> str:
        """The SPEC name of a topic (its full name without the prefix)."""
        return full_name[len(self.prefix) :] if full_name.startswith(self.prefix) else full_name

    def risk_inputs(self) -> list[str]:
        """What the risk handler reads: the account inputs and the market fan-out."""
        return [self.full(n) for n in RISK_INPUTS]

    def partitioned_like_orders(self) -> list[str]:
        return [self.full(n) for n in (*ACCOUNT_INPUTS, MARKET_FANOUT, *OUTPUTS)]


async def ensure_topics(settings: StreamSettings) -> dict[str, int]:
    """Create missing topics; refuse when the account inputs are not co-partitioned.

    Returns the partition count of every topic the engine uses.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    names = TopicNames(settings.topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        wanted = {name: settings.partitions for name in names.partitioned_like_orders()}
        wanted.update({names.full(n): settings.market_partitions for n in MARKET_INPUTS})
        existing = await _partition_counts(admin, list(wanted))
        missing = [
            NewTopic(
                name,
                count,
                settings.replication_factor,
                topic_configs={"cleanup.policy": "compact"}
                if name == names.full("instruments")
                else {},
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
