"""The soak's short version, in every CI run (the full one: `make soak`)."""

from __future__ import annotations

from pathlib import Path

from tests.stream.soak import SHORT, Soak


def test_short_soak_kills_pauses_and_broker_restarts(tmp_path: Path):
    figures = Soak(SHORT, tmp_path).run()
    print("soak:", figures)
    assert figures["kills"] >= 10
    assert figures["broker_restarts"] >= 2
    assert figures["broker_kills"] >= 1 and figures["broker_stops"] >= 1
    assert figures["pauses"] >= 2
    assert figures["pauses_regained_own"] >= 1 and figures["pauses_got_others"] >= 1
