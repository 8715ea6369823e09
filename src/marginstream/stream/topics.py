"""Every name a deployment creates or joins, under its prefix; topics created and checked.

Two deployments on one cluster share nothing unless they share the prefix and the app id:
the SPEC topics carry the prefix, and the internal topics, the consumer groups and the
transactional ids carry the prefix and the app id.
"""

from __future__ import annotations

from dataclasses import dataclass

from marginstream.stream.layout import Layout
from marginstream.stream.settings import StreamSettings

ACCOUNT_INPUTS = ("orders", "transfers")
MARKET_INPUTS = ("prices", "instruments")
COMMITMENTS = "commitments"  # one record per commit of each partition (core/commitments)
OUTPUTS = ("liquidations", "decisions", "dead-letters", "liquidation-orders", COMMITMENTS)
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

    def account_inputs(self) -> list[str]:
        return [self.full(n) for n in ACCOUNT_INPUTS]

    def internal(self) -> list[str]:
        """The deployment's own partitioned topics: one partition per account partition."""
        return [self.fanout, self.changelog]

    def every_topic(self) -> list[str]:
        """Every topic the deployment reads or writes."""
        return [*self.account_inputs(), *self.market_inputs(), *self.outputs(), *self.internal()]

    def consumed(self) -> dict[str, list[str]]:
        """Each consumer group of the deployment and the topics it commits offsets on."""
        return {self.group: self.risk_inputs(), self.fanout_group: self.market_inputs()}


COMPACTED = {"cleanup.policy": "compact"}


async def ensure_topics(settings: StreamSettings) -> Layout:
    """Refuse a layout the engine cannot run on, then create the missing topics.

    Returns the layout: every topic's partition count, which the worker then watches
    (stream/layout.py). Checked before anything is created, so that a refused start
    leaves the cluster as it found it.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    names = TopicNames(settings.topic_prefix, settings.app_id)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **settings.kafka_options()
    )
    await admin.start()
    try:
        existing = await existing_counts(admin, names.every_topic())
        refusal = layout_refusal(existing, names, settings.partitions, settings.market_partitions)
        if refusal:
            raise TopicError(refusal)
        wanted = dict.fromkeys(names.every_topic(), settings.partitions)
        wanted.update(dict.fromkeys(names.market_inputs(), settings.market_partitions))
        compacted = {names.full("instruments"), names.changelog}
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
        return Layout({**wanted, **existing})
    finally:
        await admin.close()


async def existing_counts(admin: object, topics: list[str]) -> dict[str, int]:
    """The partition count of each of topics that exists.

    Only topics that exist are described: a metadata request for a missing topic can make
    a broker with auto.create.topics.enable create it, with its default partition count."""
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


def layout_refusal(
    counts: dict[str, int], names: TopicNames, partitions: int, market_partitions: int
) -> str | None:
    """Why the engine cannot start on topics with these partition counts (None: it can):
    one line naming every topic whose count differs and the one thing to do.

    The output topics may have any count (outputs go to their key's partition among the
    topic's own count). Everything else must match: the account inputs, co-partitioned,
    and the deployment's fan-out and changelog have MARGINSTREAM_PARTITIONS partitions;
    prices and instruments MARGINSTREAM_MARKET_PARTITIONS. Which setting or step fixes a
    mismatch depends on where the deployment's state is: the count its changelog was made
    with (docs/operations.md: Changing the partition count).
    """
    expected = dict.fromkeys([*names.account_inputs(), *names.internal()], partitions)
    expected.update(dict.fromkeys(names.market_inputs(), market_partitions))
    differing = [
        f"{topic} has {counts[topic]}"
        for topic, count in expected.items()
        if topic in counts and counts[topic] != count
    ]
    if not differing:
        return None
    steps = []
    inputs = sorted({counts[t] for t in names.account_inputs() if t in counts})
    state = sorted({counts[t] for t in names.internal() if t in counts})
    if len(inputs) > 1:  # orders and transfers must be co-partitioned first
        smaller = [t for t in names.account_inputs() if counts[t] < inputs[-1]]
        steps.append(f"grow {', '.join(smaller)} to {inputs[-1]} partitions")
    if len(state) > 1:
        steps.append(
            f"the deployment's own topics disagree ({', '.join(names.internal())}): they "
            "were changed outside marginstream; run under a new MARGINSTREAM_APP_ID"
        )
    elif inputs and state and inputs[-1] != state[0]:
        steps.append(
            f"the account inputs were grown to {inputs[-1]} partitions under a deployment "
            f"whose state is on {state[0]}: stop its workers and move it with `marginstream "
            f"repartition --partitions {inputs[-1]} --to-app-id <new app id>`, then run the "
            f"workers with that app id and MARGINSTREAM_PARTITIONS={inputs[-1]}"
        )
    elif (state or inputs) and (state or inputs)[-1] != partitions:
        steps.append(f"set MARGINSTREAM_PARTITIONS={(state or inputs)[-1]}")
    market = sorted({counts[t] for t in names.market_inputs() if t in counts})
    if len(market) > 1:
        smaller = [t for t in names.market_inputs() if counts[t] < market[-1]]
        steps.append(f"grow {', '.join(smaller)} to {market[-1]} partitions")
    if market and market[-1] != market_partitions:
        steps.append(f"set MARGINSTREAM_MARKET_PARTITIONS={market[-1]}")
    return (
        f"partition counts do not match this deployment's settings "
        f"(MARGINSTREAM_PARTITIONS={partitions}, MARGINSTREAM_MARKET_PARTITIONS="
        f"{market_partitions}): {', '.join(differing)}; to start: {'; then '.join(steps)}"
    )
