"""/metrics on a live worker counts what the worker did, checked against the records
produced and the replay's outputs; a worker restored from the changelog counts its
restore."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from marginstream.feeds.demo import DemoMarket, demo_events
from marginstream.localworker import LocalWorker
from marginstream.stream.metrics import REASON_CLASSES, reason_class
from tests.stream.harness import Deployment, Reference

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(worker: LocalWorker, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of the worker's /metrics: name -> [(labels, value)]."""
    request = urllib.request.Request(worker.url + "/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def by(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {labels[label]: value for labels, value in samples.get(name, [])}


def total(samples: Samples, name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def settled_scrape(worker: LocalWorker, inputs: int, timeout: float = 60.0) -> Samples:
    """A scrape once every input of every open partition has a lag, all 0."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(worker)
        lags = samples.get("marginstream_consumer_lag", [])
        if len(lags) == inputs and all(value == 0 for _, value in lags):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"lag never settled at 0: {lags}")
        time.sleep(0.5)


def test_metrics_count_what_the_worker_did(deployment: Deployment):
    records: list[dict[str, Any]] = list(demo_events(DemoMarket(accounts=20, steps=4)))
    order = next(r for r in records if r["topic"] == "orders")
    ghost = {**order["value"], "account": "ghost", "order_id": "ghost-1"}
    records.append({"topic": "orders", "key": "ghost", "value": ghost})  # no deposit
    reference = Reference.of(records)
    letters = [v for t, v in reference.outputs if t == "dead-letters"]
    assert len(letters) == 1
    alerts = Counter(v["type"] for t, v in reference.outputs if t == "liquidations")
    assert set(alerts) == {"margin_call", "liquidation", "recovered"}
    produced = Counter(r["topic"] for r in records)
    partitions = deployment.partitions

    worker = deployment.worker("w1").start()
    worker.wait_ready()
    deployment.produce(records)
    deployment.wait_applied()
    samples = settled_scrape(worker, inputs=3 * partitions)

    applied = by(samples, "marginstream_records_applied_total", "topic")
    assert applied == {
        "orders": produced["orders"],
        "transfers": produced["transfers"],
        # every market record is copied to every partition, and applied there
        "market": (produced["prices"] + produced["instruments"]) * partitions,
    }
    assert by(samples, "marginstream_alerts_total", "level") == dict(alerts)
    # Every class's series from 0 (a rule's increase() sees the first one), one counted.
    letter_counts = by(samples, "marginstream_dead_letters_total", "reason")
    assert set(letter_counts) == {name for name, _ in REASON_CLASSES} | {"other"}
    assert {k: v for k, v in letter_counts.items() if v} == {reason_class(letters[0]["reason"]): 1}
    assert reason_class(letters[0]["reason"]) == "unknown_account"
    assert total(samples, "marginstream_engine_loads_total") >= partitions
    assert total(samples, "marginstream_partitions_open") == partitions
    assert total(samples, "marginstream_partitions_restoring") == 0
    failures = samples["marginstream_producer_failures_total"]  # every kind and operation
    assert len(failures) == 4 * 3 and not any(value for _, value in failures)
    lags = samples["marginstream_consumer_lag"]
    assert {(labels["topic"], labels["partition"]) for labels, _ in lags} == {
        (topic, str(p)) for topic in ("orders", "transfers", "market") for p in range(partitions)
    }
    count = total(samples, "marginstream_record_processing_seconds_count")
    assert count == sum(applied.values())
    assert total(samples, "marginstream_record_processing_seconds_sum") > 0
    buckets = by(samples, "marginstream_record_processing_seconds_bucket", "le")
    assert buckets["+Inf"] == count
    assert list(buckets.values()) == sorted(buckets.values())  # cumulative

    # A worker with an empty store restores every partition from the changelog.
    worker.stop()
    fresh = deployment.worker("fresh").start()
    health = fresh.wait_ready(partitions=partitions)
    assert health["changelog_records_read"] > 0
    restored = settled_scrape(fresh, inputs=3 * partitions)
    read = by(restored, "marginstream_changelog_records_read_total", "partition")
    kept = by(restored, "marginstream_changelog_records_applied_total", "partition")
    assert sum(read.values()) == health["changelog_records_read"]
    assert sum(kept.values()) == health["changelog_records_applied"]
    assert set(read) <= {str(p) for p in range(partitions)}
    assert total(restored, "marginstream_engine_loads_total") == partitions
    assert total(restored, "marginstream_partitions_restoring") == 0
    assert "marginstream_restore_remaining_offsets" not in restored  # none under way
    assert "marginstream_records_applied_total" not in restored  # nothing left to apply
