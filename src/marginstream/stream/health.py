"""What a worker says of itself: /health/'s report, and the heartbeat lease it rests on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer

if TYPE_CHECKING:
    from marginstream.stream.views import WorkerView


def report(worker: WorkerView) -> dict[str, Any]:
    """/health/: the status (RiskService.status, whose rules are in runner.py's docstring),
    what the worker owns, and its counters."""
    counts = worker.changelog.counts
    owned = worker.partitions.values()
    return {
        "status": worker.status(),
        "failing": worker.failing(),
        "assigned": sorted(worker.partitions),
        "partitions": sorted(o.number for o in owned if o.active),
        "standby": worker.changelog.following(),
        "accounts": sum(len(o.work.engine.accounts) for o in owned if o.work),
        "records": sum(o.applied for o in owned),
        "commits": sum(o.commits for o in owned),
        "engine_loads": worker.loads,
        "fenced": worker.fenced,
        "reopened": worker.reopened,
        "changelog_records_read": counts.read,
        "changelog_records_applied": counts.applied,
        "changelog_records_stale": counts.stale,
        "market_copies": worker.fanout.copied,
        "commit_lag": {  # per partition: records applied, not committed; last delay
            o.number: {
                "pending": o.work.records if o.work else 0,
                "last_delay": round(o.commit_delay, 3),
                "step": o.transaction.step if o.transaction else None,  # of the commit
            }
            for o in owned
        },
    }


def watch_heartbeats(consumer: AIOKafkaConsumer, confirmed: Callable[[float], None]) -> None:
    """Call confirmed(sent) for every heartbeat the group coordinator answers.

    aiokafka has no hook for it; its coordinator's _do_heartbeat is wrapped (it returns
    True when the group still counts the member in).
    """
    coordinator = consumer._coordinator
    beat = coordinator._do_heartbeat

    async def do_heartbeat() -> bool:
        sent = time.monotonic()
        answered = await beat()
        if answered:
            confirmed(sent)
        return answered

    coordinator._do_heartbeat = do_heartbeat
