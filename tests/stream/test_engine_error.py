"""A bug of the engine stops the partition it met it on: it never skips the record, and it
never stops the worker.

An exception while a record is applied (bad input is a dead letter: this is a bug) stops
that partition on the worker (stream/runner.py): its open transaction, and with it the
record's offset, is never committed, and /health/ says failed, naming the record. The
worker goes on with its other partitions: were it to stop, the group would hand the
partition to the next worker, which would fail on it too, until none was left. A fixed
(here: restarted) worker applies the record and everything after it.
"""

from __future__ import annotations

import time

from marginstream.core.inputs.keys import account_partition
from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, final_checks


def test_an_engine_error_stops_its_partition_and_the_worker_goes_on(deployment: Deployment):
    records = list(demo_events(DemoMarket(accounts=10, steps=2)))
    template = next(r for r in records if r["value"].get("type") == "order")
    late = {
        **template,
        "value": {**template["value"], "order_id": "late-1", "ts": 1_900_000_000_000},
    }
    broken = account_partition(late["key"], deployment.partitions)
    accounts = {r["key"] for r in records if r["topic"] == "transfers"}
    elsewhere = sorted(a for a in accounts if account_partition(a, deployment.partitions) != broken)
    assert elsewhere
    deposits = [
        {"topic": "transfers", "key": account, "value": {
            "type": "deposit", "transfer_id": f"after-{account}", "account": account,
            "amount": "7", "ts": 1_900_000_000_000}}
        for account in elsewhere
    ]  # fmt: skip
    reference = Reference.of([*records, late, *deposits])
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    deployment.produce(records)
    worker.stop()

    worker.start(fault="engine-error:1")  # the next record it is handed raises, every time
    worker.wait_ready()
    deployment.produce([late], wait=False)
    health = wait_for_failed(worker)
    assert (
        f"partition {broken} stopped: the engine failed on orders[{broken}]@" in (health["failing"])
    ), health
    assert "fault point engine-error" in health["failing"]
    # The other partitions go on: everything but the record is applied, by a live worker.
    deployment.produce(deposits, wait=False)
    deadline = time.monotonic() + 60
    while deployment.lag() != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    assert deployment.lag() == 1, "the record the engine failed on was committed"
    assert worker.alive()
    assert (worker.health() or {})["status"] == "failed"

    worker.stop()
    worker.start()
    worker.wait_ready()
    final_checks(deployment, reference)


def wait_for_failed(worker, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = worker.health() or {}
        if health.get("status") == "failed":
            return health
        time.sleep(0.2)
    raise AssertionError(f"health never said failed: {worker.health()}")
