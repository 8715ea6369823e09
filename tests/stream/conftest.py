"""Fixtures for tests that run workers: one isolated deployment per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from marginstream.localbroker import LocalBroker, free_port
from tests.stream.harness import Deployment


@pytest.fixture
def deployment(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(kafka_bootstrap, tmp_path)
    try:
        yield deployment
    finally:
        deployment.stop_all()


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker of the module's own, which its tests may kill and restart."""
    broker = LocalBroker(port=free_port(), data_dir=tmp_path_factory.mktemp("own-kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def deployment_on_own_broker(own_broker: LocalBroker, tmp_path: Path) -> Iterator[Deployment]:
    if own_broker.running_pid() is None:  # a test failed while the broker was down
        own_broker.start()
    deployment = Deployment(own_broker.bootstrap, tmp_path)
    try:
        yield deployment
    finally:
        deployment.stop_all()
