"""The read-only views health and metrics are given (stream/views.py) match what the worker
has: no type checker runs here, so a renamed attribute of RiskService or OwnedPartition
would otherwise surface only as an AttributeError on a scrape. Pure: nothing started."""

from __future__ import annotations

import ast
import inspect
from typing import Protocol

from marginstream.stream import partition, views
from marginstream.stream.changelog import ChangelogReader
from marginstream.stream.settings import StreamSettings
from marginstream.stream.worker import create_app

# Made when the worker starts (on_start), not when it is built.
STARTED = {"consumer"}


def members(protocol: type[Protocol]) -> set[str]:
    return {
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def assigned_attributes(cls: type) -> set[str]:
    """What a class's methods assign to self, and its properties and methods."""
    tree = ast.parse(inspect.getsource(cls))
    assigned = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }
    return assigned | {name for name in dir(cls) if not name.startswith("_")}


def test_the_service_has_every_member_of_the_worker_view():
    service = create_app(StreamSettings.from_env({})).risk
    missing = {name for name in members(views.WorkerView) if not hasattr(service, name)}
    assert missing == STARTED
    assert "consumer" in assigned_attributes(type(service))


def test_an_owned_partition_has_every_member_of_the_partition_view():
    wanted = members(views.PartitionView)
    assert {"number", "active", "work", "pending_since"} <= wanted
    assert wanted - assigned_attributes(partition.OwnedPartition) == set()


def test_the_changelog_reader_has_every_member_of_its_view():
    reader = ChangelogReader("unused:9092", "changelog")
    assert {name for name in members(views.ChangelogView) if not hasattr(reader, name)} == set()
