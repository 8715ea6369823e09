"""A worker's Prometheus metrics, served by GET /metrics (stream/web.py).

Every app has its own registry (never prometheus_client's global one): two apps in one
process count apart. The processing loop calls in once per batch of one input (records
applied, their processing time) and once per output sent (alerts, dead letters); what
the worker already counts (engine loads, consumer positions, restores under way) is
read when /metrics is scraped.

Labels are bounded: topic is one of the worker's inputs, level one of the alert types,
reason one of REASON_CLASSES (a dead letter's reason is free text), kind and operation
a few fixed words, partition one of the deployment's partitions.
"""

from __future__ import annotations

import asyncio
import re
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from marginstream.core.inputs.envelope import DEAD_LETTERS, LIQUIDATION_ORDERS
from marginstream.core.outputs.alerts import LIQUIDATION, MARGIN_CALL, RECOVERED
from marginstream.stream.commit import DeliveryRefused, PartitionLost, classified
from marginstream.stream.store import StoreFailed

if TYPE_CHECKING:
    from marginstream.core.inputs.envelope import Output
    from marginstream.stream.views import PartitionView, WorkerView

ALERTS = "liquidations"  # the SPEC topic of alerts
LIQUIDATION_TYPES = ("liquidation_order", "liquidation_cancel", "adl")
ALERT_LEVELS = (MARGIN_CALL, LIQUIDATION, RECOVERED)
WORKER_STATUSES = ("ok", "recovering", "failed")  # RiskService.status's
FAILURE_KINDS = ("fenced", "refused", "store", "other")
OPERATIONS = ("send", "commit", "close")

# A dead letter's reason, by class: the first pattern that matches it (else "other").
REASON_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("not_json", r"^not JSON"),
        ("too_large", r"^record of \d+ bytes is over"),
        ("no_value", r"^no value"),
        ("no_origin", r"^a record in the market fan-out topic without"),
        ("misrouted", r"^misrouted"),
        ("unknown_account", r"^unknown account"),
        ("unknown_instrument", r"^unknown instrument"),
        ("duplicate", r"^duplicate "),
        ("not_an_object", r"^a record must be a JSON object"),
        ("unknown_topic", r"^unknown topic"),
        ("wrong_type", r"does not belong on topic"),
        ("missing_field", r" is missing$"),
        ("out_of_bounds", r"absurd|out of range|longer than|more than|at most"),
        ("market_state", r"expired|settled|never settles|needs a price|no mark for"),
        ("invalid_field", r"must |is not "),
    )
)

# Per-record processing time, seconds (a batch's time shared by its records).
TIME_BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25,
)  # fmt: skip
POSITION_WAIT = 0.2  # seconds a scrape waits for a partition's consumer position


def reason_class(reason: str) -> str:
    """The bounded class of a dead letter's reason (its label value)."""
    for name, pattern in REASON_CLASSES:
        if pattern.search(reason):
            return name
    return "other"


class StreamMetrics:
    def __init__(self, worker: WorkerView | None = None) -> None:
        self.worker = worker
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._records = Counter(
            "marginstream_records_applied", "Input records applied, by input topic "
            "(market: the fan-out copies of prices and instruments, one per partition)",
            ["topic"], registry=registry,
        )  # fmt: skip
        self._alert_counter = alerts = Counter(
            "marginstream_alerts", "Alerts published, by level", ["level"], registry=registry
        )
        self._alerts = {level: alerts.labels(level) for level in ALERT_LEVELS}  # from 0
        self._liquidation_counter = liquidation = Counter(
            "marginstream_liquidation_records", "Records published on liquidation-orders, by "
            "type (liquidation_order, liquidation_cancel, adl)", ["type"], registry=registry,
        )  # fmt: skip
        self._liquidation = {t: liquidation.labels(t) for t in LIQUIDATION_TYPES}
        self._dead_letters = Counter(
            "marginstream_dead_letters", "Dead letters published, by class of reason",
            ["reason"], registry=registry,
        )  # fmt: skip
        self._failures = Counter(
            "marginstream_producer_failures", "Sends and commits of a partition's transaction "
            "that failed, by kind (fenced, refused, store, other) and operation (send, commit, "
            "close)",
            ["kind", "operation"], registry=registry,
        )  # fmt: skip
        # Every series of a bounded label set from 0: a rule's increase() sees the first
        # failure, and the series exist before anything fails (tests/stream/test_risk_page).
        for kind in FAILURE_KINDS:
            for operation in OPERATIONS:
                self._failures.labels(kind, operation)
        for name, _ in (*REASON_CLASSES, ("other", None)):
            self._dead_letters.labels(name)
        self._changelog_read = Counter(
            "marginstream_changelog_records_read", "Changelog records read into the local "
            "store (restores and standbys), by partition", ["partition"], registry=registry,
        )  # fmt: skip
        self._changelog_applied = Counter(
            "marginstream_changelog_records_applied", "Changelog records written to the local "
            "store (the newest version of a key in a batch), by partition", ["partition"],
            registry=registry,
        )  # fmt: skip
        self.seconds = BatchHistogram(
            "marginstream_record_processing_seconds", "Time to apply an input record and "
            "hand its outputs to the producer (each record of a batch: the batch's average)",
            TIME_BUCKETS,
        )  # fmt: skip
        registry.register(self.seconds)
        self._by_topic: dict[str, Any] = {}
        self.lag: dict[tuple[str, int], int] = {}  # (input topic, partition): records behind
        registry.register(_WorkerCollector(self))

    # -- the processing loop's hooks -------------------------------------------------

    def applied(self, topic: str, records: int, started: float) -> None:
        """records of topic (a full name) applied since perf_counter() said started."""
        if records:
            self.seconds.observe((time.perf_counter() - started) / records, records)
            child = self._by_topic.get(topic)
            if child is None:
                child = self._by_topic[topic] = self._records.labels(self._label(topic))
            child.inc(records)

    def output(self, output: Output) -> None:
        """An output about to be sent."""
        if output.topic == ALERTS:
            child = self._alerts.get(output.value.get("type"))
            (child or self._alert_counter.labels("other")).inc()
        elif output.topic == LIQUIDATION_ORDERS:
            self._liquidation[output.value["type"]].inc()
        elif output.topic == DEAD_LETTERS:
            self._dead_letters.labels(reason_class(str(output.value.get("reason")))).inc()

    def failed(self, operation: str, error: BaseException) -> None:
        """A send or commit of a partition's transaction failed."""
        error = classified(error)
        kinds = ((PartitionLost, "fenced"), (DeliveryRefused, "refused"), (StoreFailed, "store"))
        kind = next((name for kind, name in kinds if isinstance(error, kind)), "other")
        self._failures.labels(kind, operation).inc()

    def restored(self, partition: int, read: int, applied: int) -> None:
        """A batch of changelog records read into partition's store."""
        self._changelog_read.labels(str(partition)).inc(read)
        self._changelog_applied.labels(str(partition)).inc(applied)

    def alert_counts(self) -> dict[str, int]:
        """Alerts published by this worker since it started, by level (the risk page's
        rates come from these): the alert counter's own samples."""
        counts = dict.fromkeys(ALERT_LEVELS, 0)
        for family in self._alert_counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["level"] in counts:
                    counts[sample.labels["level"]] = int(sample.value)
        return counts

    def _label(self, topic: str) -> str:
        if self.worker is None:
            return topic
        spec = self.worker.names.spec(topic)
        return "market" if topic == self.worker.names.fanout else spec

    # -- scraping --------------------------------------------------------------------

    async def refresh(self) -> None:
        """Before a scrape: each open partition's consumer lag, per input, from the last
        stable offset the broker reported (read_committed) and the consumer's position."""
        worker, lag = self.worker, {}
        if worker is None or not hasattr(worker, "consumer"):
            self.lag = lag
            return
        consumer = worker.consumer
        for owned in list(worker.partitions.values()):
            if not owned.active:
                continue
            for tp in owned.inputs:
                try:
                    end = consumer.last_stable_offset(tp)
                    if end is None or end < 0:
                        end = consumer.highwater(tp)
                    if end is None:
                        continue  # nothing fetched yet
                    position = await asyncio.wait_for(consumer.position(tp), POSITION_WAIT)
                except Exception:  # not assigned any more, or no position yet
                    continue
                lag[(self._label(tp.topic), owned.number)] = max(0, end - position)
        self.lag = lag


class BatchHistogram:
    """A histogram that takes n equal observations at once, for one bucket search and a
    few additions per batch (prometheus_client's Histogram observes one at a time)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n

    def collect(self) -> Iterator[Metric]:
        cumulative, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            cumulative.append((_bound_text(bound), total))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self.sum
        )


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class _WorkerCollector:
    """What the worker counts anyway, read at scrape time."""

    def __init__(self, metrics: StreamMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # unchecked: the families are only known at collect time

    def collect(self) -> Iterator[Metric]:
        worker = self.metrics.worker
        if worker is None:
            return
        yield CounterMetricFamily(
            "marginstream_engine_loads", "Engines loaded from the local store (one per "
            "partition opened: at each assignment and after each reopen)", value=worker.loads,
        )  # fmt: skip
        owned = list(worker.partitions.values())
        yield GaugeMetricFamily(
            "marginstream_partitions_open", "Owned partitions open and applying records",
            value=sum(o.active for o in owned),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "marginstream_partitions_restoring", "Owned partitions being opened (restoring "
            "their store from the changelog, or waiting to)",
            value=sum(not o.active for o in owned),
        )  # fmt: skip
        remaining = GaugeMetricFamily(
            "marginstream_restore_remaining_offsets", "Changelog offsets a restore under "
            "way has still to read, by partition", labels=["partition"],
        )  # fmt: skip
        for partition, reading in sorted(worker.changelog.readings.items()):
            if reading.until is not None:
                left = max(0, reading.until - reading.store.changelog_offset())
                remaining.add_metric([str(partition)], left)
        yield remaining
        lag = GaugeMetricFamily(
            "marginstream_consumer_lag", "Records of an open partition's inputs not yet "
            "applied (at the last scrape), by input topic and partition",
            labels=["topic", "partition"],
        )  # fmt: skip
        for (topic, partition), behind in sorted(self.metrics.lag.items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
        yield from _commit_figures(owned)
        yield from _risk_figures(worker)


def _commit_figures(owned: list[PartitionView]) -> Iterator[Metric]:
    pending = GaugeMetricFamily(
        "marginstream_commit_pending_seconds", "Age of an open partition's oldest record "
        "applied and not yet committed (0: none), by partition", labels=["partition"],
    )  # fmt: skip
    delay = GaugeMetricFamily(
        "marginstream_commit_delay_seconds", "From an open partition's last record applied "
        "to the commit that took it, at its last commit, by partition", labels=["partition"],
    )  # fmt: skip
    now = time.monotonic()
    for o in sorted(owned, key=lambda o: o.number):
        if o.active:
            pending.add_metric([str(o.number)], now - o.pending_since if o.pending_since else 0.0)
            delay.add_metric([str(o.number)], o.commit_delay)
    yield pending
    yield delay


def _risk_figures(worker: WorkerView) -> Iterator[Metric]:
    """The risk page's figures that make metrics with bounded labels (never an account):
    per open partition, its fund slice, accounts by level and by ratio bucket, and its
    open closing sets; and the worker's status."""
    status = GaugeMetricFamily(
        "marginstream_worker_status", "1 for the worker's status (as /health/ says it), 0 "
        "for the others", labels=["status"],
    )  # fmt: skip
    now = worker.status()
    for name in WORKER_STATUSES:
        status.add_metric([name], 1.0 if name == now else 0.0)
    yield status
    families = {
        "balance": GaugeMetricFamily(
            "marginstream_insurance_fund_balance", "An open partition's slice of the "
            "insurance fund (the fund is their sum), by partition", labels=["partition"],
        ),
        "uncovered": GaugeMetricFamily(
            "marginstream_insurance_fund_uncovered", "Deficits an open partition's slice "
            "could not cover, handed to auto-deleveraging, by partition",
            labels=["partition"],
        ),
        "levels": GaugeMetricFamily(
            "marginstream_accounts_by_level", "Accounts of an open partition by margin "
            "level, by partition and level", labels=["partition", "level"],
        ),
        "ratios": GaugeMetricFamily(
            "marginstream_accounts_by_margin_ratio", "Accounts of an open partition with a "
            "margin requirement, by partition and margin-ratio bucket (maintenance / "
            "equity; 1.0+ includes equity <= 0)", labels=["partition", "ratio"],
        ),
        "closing": GaugeMetricFamily(
            "marginstream_liquidations_open", "Open closing sets (liquidations in "
            "progress) of an open partition, by partition", labels=["partition"],
        ),
    }  # fmt: skip
    engines = {
        o.number: o.work.engine
        for o in worker.partitions.values()
        if o.active and o.work is not None
    }
    overviews = worker.overviews.current(engines)
    for number, engine in sorted(engines.items()):
        partition = str(number)
        figures = overviews[number]
        families["balance"].add_metric([partition], float(engine.fund.balance))
        families["uncovered"].add_metric([partition], float(engine.fund.uncovered))
        for level, count in figures["levels"].items():
            families["levels"].add_metric([partition, level], count)
        ratios = figures["ratios"]
        for bucket, count in zip(ratios["buckets"], ratios["counts"], strict=True):
            families["ratios"].add_metric([partition, bucket], count)
        families["closing"].add_metric([partition], figures["closing"]["open"])
    yield from families.values()
