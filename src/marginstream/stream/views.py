"""The read-only views /health/ and /metrics read a worker through.

health.report and StreamMetrics need a few of a worker's figures, not the worker: these
protocols name exactly those, so neither module imports the runner that builds them both
(no import cycle in the shell). Read-only is what they name, not what they enforce: a
caller could still reach through `work` to the engine, or through a reading to its store;
health and metrics only read. RiskService, OwnedPartition and ChangelogReader satisfy them
as they are (tests/stream/test_views.py checks the names); a test can hand in a stub.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from aiokafka import TopicPartition

    from marginstream.core.delivery.unit import PartitionState
    from marginstream.core.engine import RiskEngine
    from marginstream.stream.changelog import Counts, Reading
    from marginstream.stream.commit import Transaction


class PartitionView(Protocol):
    """An owned partition: open (active) or still opening."""

    @property
    def number(self) -> int: ...
    @property
    def active(self) -> bool: ...
    @property
    def inputs(self) -> list[TopicPartition]: ...
    @property
    def work(self) -> PartitionState | None: ...
    @property
    def transaction(self) -> Transaction | None: ...
    @property
    def applied(self) -> int: ...
    @property
    def commits(self) -> int: ...
    @property
    def commit_delay(self) -> float: ...
    @property
    def pending_since(self) -> float | None: ...


class ChangelogView(Protocol):
    """The changelog reader's restores under way, standbys and counts."""

    @property
    def counts(self) -> Counts: ...
    @property
    def readings(self) -> Mapping[int, Reading]: ...
    def following(self) -> list[int]: ...


class NamesView(Protocol):
    """Full topic names back to SPEC's (a metric's topic label)."""

    @property
    def fanout(self) -> str: ...
    def spec(self, full_name: str) -> str: ...


class FanOutView(Protocol):
    @property
    def copied(self) -> int: ...


class ConsumerView(Protocol):
    """Where the worker's consumer stands on an input partition (its lag)."""

    def last_stable_offset(self, tp: TopicPartition) -> int | None: ...
    def highwater(self, tp: TopicPartition) -> int | None: ...
    async def position(self, tp: TopicPartition) -> int: ...


class OverviewSource(Protocol):
    """One overview per partition, made at most once a second (stream/overviews.py)."""

    def current(self, engines: dict[int, RiskEngine]) -> dict[int, dict[str, object]]: ...


class WorkerView(Protocol):
    """A worker as /health/ and /metrics see it (RiskService is one)."""

    @property
    def partitions(self) -> Mapping[int, PartitionView]: ...
    @property
    def changelog(self) -> ChangelogView: ...
    @property
    def names(self) -> NamesView: ...
    @property
    def fanout(self) -> FanOutView: ...
    @property
    def consumer(self) -> ConsumerView: ...  # made when the worker starts
    @property
    def overviews(self) -> OverviewSource: ...
    @property
    def loads(self) -> int: ...
    @property
    def fenced(self) -> int: ...
    @property
    def reopened(self) -> int: ...
    def status(self) -> str: ...
    def failing(self) -> str | None: ...
