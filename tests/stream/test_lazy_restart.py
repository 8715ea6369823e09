"""A restart takes the risk view from the snapshot a clean stop saved, and rebuilds it
from the parts after a kill -9 (the snapshot is then stale): either way the market moves
after it raise exactly the reference's alerts (core/delivery/viewsnapshot.py)."""

from __future__ import annotations

from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, final_checks


def _opened(worker, how: str) -> int:
    """How many partitions this worker's log says opened with their view from how."""
    return worker.log_path.read_text(errors="replace").count(f"(view from {how})")


def test_market_moves_after_a_snapshot_and_after_a_kill_alert_as_the_reference(
    deployment: Deployment,
):
    records = list(demo_events(DemoMarket(accounts=80, steps=6)))
    reference = Reference.of(records)
    opened = min(i for i, r in enumerate(records) if i > 0 and r["topic"] == "prices"
                 and records[i - 1]["topic"] == "orders")  # fmt: skip
    half = (opened + len(records)) // 2  # moves (and withdrawals) on both sides of the kill
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    deployment.produce(records[:opened])  # every position opened
    worker.stop()  # clean: each partition saves its view
    parts_before = _opened(worker, "parts")
    worker.start()
    worker.wait_ready(partitions=deployment.partitions)
    assert _opened(worker, "snapshot") == deployment.partitions
    deployment.produce(records[opened:half])
    worker.kill9()  # committed since the snapshot: it is stale now
    worker.start()
    worker.wait_ready(partitions=deployment.partitions)
    assert _opened(worker, "snapshot") == deployment.partitions  # none more
    assert _opened(worker, "parts") == parts_before + deployment.partitions
    deployment.produce(records[half:])
    final_checks(deployment, reference)
