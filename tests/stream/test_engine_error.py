"""A bug in the engine stops the worker; it never skips the record it failed on.

An exception while a record is applied ends the worker at once with a non-zero status
(stream/runner.py): its open transaction, and with it the record's offset, is never
committed, so that a fixed (here: restarted) worker applies it and everything after it.
"""

from __future__ import annotations

from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, final_checks


def test_an_engine_error_stops_the_worker_and_holds_back_the_record(deployment: Deployment):
    records = list(demo_events(DemoMarket(accounts=10, steps=2)))
    template = next(r for r in records if r["value"].get("type") == "order")
    late = {
        **template,
        "value": {**template["value"], "order_id": "late-1", "ts": 1_900_000_000_000},
    }
    reference = Reference.of([*records, late])
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    deployment.produce(records)
    worker.stop()

    worker.start(fault="engine-error:1")  # the next record it is handed raises
    worker.wait_ready()
    deployment.produce([late], wait=False)
    assert worker.wait_exit(60) != 0
    assert "fault point engine-error reached" in worker.log_tail(200)
    assert deployment.lag() == 1, "the record the engine failed on was committed"

    worker.start()
    worker.wait_ready()
    final_checks(deployment, reference)
