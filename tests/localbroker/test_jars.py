"""The jar cache: fetched once from Maven Central, then reused without Maven."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from marginstream.localbroker import BrokerError, cached_jars, ensure_jars
from marginstream.localbroker.jars import COMPLETE_MARKER, jar_dir


def test_a_second_run_reuses_the_cache_without_maven(monkeypatch: pytest.MonkeyPatch):
    first = ensure_jars()  # fetches on a clean machine, reuses otherwise
    before = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}

    monkeypatch.setenv("PATH", "")  # no mvn (nor anything else) to be found
    second = ensure_jars()

    assert second == first == cached_jars()
    assert {p.name: p.stat().st_mtime_ns for p in second.iterdir()} == before
    names = {p.name for p in second.iterdir()}
    assert any(n.startswith("kafka_2.13-") for n in names)
    assert any(n.startswith("log4j-slf4j2-impl-") for n in names)  # a logging backend


def test_an_unfinished_fetch_is_not_taken_for_a_cache(tmp_path: Path, monkeypatch):
    partial = jar_dir(tmp_path)
    partial.mkdir(parents=True)
    (partial / "kafka_2.13-half.jar").write_bytes(b"")  # no completion marker
    assert not (partial / COMPLETE_MARKER).exists()
    assert cached_jars(tmp_path) is None

    monkeypatch.setenv("PATH", "")
    with pytest.raises(BrokerError, match=r"^mvn not found on PATH"):
        ensure_jars(tmp_path)


def test_cache_location_follows_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MARGINSTREAM_CACHE", str(tmp_path))
    assert jar_dir().parent == tmp_path
    monkeypatch.delenv("MARGINSTREAM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jar_dir().parent == tmp_path / "xdg" / "marginstream"
    assert os.environ["XDG_CACHE_HOME"].endswith("xdg")
