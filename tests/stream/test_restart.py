"""A restart reuses an intact local RocksDB (reads only what it lacks) and rebuilds a lost one."""

from __future__ import annotations

import shutil

from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, final_checks, live_states


def test_restart_reads_only_what_the_local_store_lacks(deployment: Deployment):
    records = list(demo_events(DemoMarket(accounts=60, steps=3)))
    reference = Reference.of(records)
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    deployment.produce(records)
    written = len(deployment.changelog())  # committed records, as a restore reads them
    assert written > 100

    worker.stop()  # clean stop: the local store is complete
    worker.start()
    clean = worker.wait_ready()
    assert clean["changelog_records_read"] == 0
    assert live_states(worker, reference.states) == reference.states

    worker.kill9()  # unclean: at most the tail after the last local write is read
    worker.start()
    killed = worker.wait_ready()
    assert killed["changelog_records_read"] < written / 10
    assert live_states(worker, reference.states) == reference.states

    worker.stop()
    shutil.rmtree(worker.data_dir)  # lost: everything comes back from the changelog
    worker.start()
    rebuilt = worker.wait_ready()
    assert rebuilt["changelog_records_read"] == written
    assert live_states(worker, reference.states) == reference.states
    final_checks(deployment, reference)
