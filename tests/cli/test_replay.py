"""`marginstream replay` and `marginstream feed` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from marginstream.stream.bounds import SETTINGS


def marginstream(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "marginstream", *args],
        capture_output=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("feed") / "demo.jsonl"
    assert marginstream("feed", "--accounts", "120", "--out", str(path)).returncode == 0
    return path


def lines(output: bytes, roots: bool = False) -> list[dict]:
    """The output's records; the partitions' state-root lines (--state's last) if asked."""
    found = [orjson.loads(line) for line in output.splitlines()]
    return found if roots else [r for r in found if r["topic"] != "state-root"]


def test_replay_of_the_demo_is_identical_byte_for_byte(demo_feed: Path):
    first = marginstream("replay", str(demo_feed), "--state")
    second = marginstream("replay", str(demo_feed), "--state")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    records = lines(first.stdout, roots=True)
    topics = {r["topic"] for r in records}
    assert topics == {
        "decisions", "liquidations", "liquidation-orders", "state", "adl-ranking", "state-root"
    }  # fmt: skip
    roots = [r for r in records if r["topic"] == "state-root"]
    assert len(roots) == 1 and roots[0]["key"] is None  # one engine: one tree for all
    assert roots[0]["value"]["accounts"] == 121 and len(roots[0]["value"]["state_root"]) == 64
    alerts = [r["value"]["type"] for r in records if r["topic"] == "liquidations"]
    # The scripted 25% fall margin-calls and liquidates; the recovery recovers.
    assert {"margin_call", "liquidation", "recovered"} <= set(alerts)
    states = [r for r in records if r["topic"] == "state"]
    assert len(states) == 121  # 120 accounts and the market maker
    standard = [s["value"] for s in states if s["value"]["margin_model"] == "standard"]
    portfolio = [s["value"] for s in states if s["value"]["margin_model"] == "portfolio"]
    assert len(portfolio) == 24  # every fifth of the 120 accounts chose portfolio margin
    keys = [
        "account",
        "cash",
        "equity",
        "initial_margin",
        "maintenance_margin",
        "margin_ratio",
        "available",
        "level",
        "margin_model",
        "positions",
        "open_orders",
        "greeks",
        "greeks_by_underlying",
        "liquidation",
    ]
    assert list(standard[0]) == keys
    assert list(portfolio[0]) == [*keys[:9], "portfolio", *keys[9:]]
    assert {line["underlying"] for line in portfolio[0]["portfolio"]} == {"BTC"}


def test_feed_is_the_same_for_the_same_seed(tmp_path: Path):
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    for path, seed in ((a, "1"), (b, "1"), (c, "2")):
        marginstream("feed", "--accounts", "20", "--seed", seed, "--out", str(path))
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_bad_lines_are_dead_letters_naming_their_line_and_the_replay_goes_on(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                '{"topic": "transfers", "key": "a", "value": {"type": "deposit", '
                '"transfer_id": "t1", "account": "a", "amount": "10", "ts": 1}}',
                "{this is not json",
                '{"key": "a", "value": {}}',
                '["topic", "value"]',
                "",
                '{"topic": "transfers", "key": "a", "value": {"type": "withdrawal", '
                '"transfer_id": "t2", "account": "a", "amount": "4", "ts": 2}}',
            ]
        )
    )
    result = marginstream("replay", str(events), "--state")
    assert result.returncode == 0
    records = lines(result.stdout)
    reasons = [r["value"]["reason"] for r in records if r["topic"] == "dead-letters"]
    assert [reason.split(":")[0] for reason in reasons] == ["line 2", "line 3", "line 4"]
    assert reasons[0].startswith("line 2: not JSON")
    assert reasons[1] == 'line 3: expected {"topic": ..., "key": ..., "value": ...}'
    decision = next(r for r in records if r["topic"] == "decisions")["value"]
    assert decision["accepted"] is True
    assert records[-1]["value"]["cash"] == "6"


def test_a_missing_file_is_a_clear_error():
    result = marginstream("replay", "/no/such/events.jsonl")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        "marginstream: error: /no/such/events.jsonl: no such file"
    )


def test_the_outside_testers_overflowing_order_is_a_dead_letter_not_a_traceback(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"topic":"orders","key":"a","value":{"type":"order","order_id":"o","account":"a",'
        '"symbol":"X","side":"buy","qty":"1E+999999999","price":"1","ts":1}}\n'
    )
    result = marginstream("replay", str(events))
    assert result.returncode == 0, result.stderr
    [letter] = lines(result.stdout)
    assert letter["topic"] == "dead-letters"
    assert letter["value"]["reason"] == (
        "qty is absurdly large: '1E+999999999' (limit 1000000000000000)"
    )


def test_with_partitions_a_record_off_its_keys_partition_is_misrouted(tmp_path: Path):
    deposit = {"type": "deposit", "transfer_id": "t1", "account": "a", "amount": "10", "ts": 1}
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"\n".join(
            orjson.dumps({"topic": "transfers", "key": "a", "partition": p, "value": deposit})
            for p in (1, 0)  # "a" is on partition 0 of 4 under murmur2
        )
    )
    result = marginstream("replay", str(events), "--partitions", "4", "--state")
    assert result.returncode == 0, result.stderr
    letter, state = lines(result.stdout)
    assert letter["value"]["reason"] == (
        "misrouted: expected key 'a' on partition 0, got key 'a' on partition 1"
    )
    assert state["value"]["cash"] == "10"


def test_with_partitions_a_line_without_one_goes_where_kafka_would_put_its_key(tmp_path: Path):
    deposit = {"type": "deposit", "transfer_id": "t1", "account": "mm", "amount": "10", "ts": 1}
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps({"topic": "transfers", "key": "mm", "value": deposit}))
    result = marginstream("replay", str(events), "--partitions", "4", "--state")
    assert result.returncode == 0, result.stderr
    [state] = lines(result.stdout)
    assert state["value"]["cash"] == "10"


def test_an_engine_failure_names_the_line_in_one_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    """Bad input is a dead letter; an exception is a bug of the engine (as the Inexact an
    outside test found), which the replay reports like a bad file: the line, the error."""
    from decimal import Inexact

    from marginstream.cli import main
    from marginstream.core import RiskEngine

    deposit = {"type": "deposit", "transfer_id": "t1", "account": "a", "amount": "10", "ts": 1}
    events = tmp_path / "events.jsonl"
    line = orjson.dumps({"topic": "transfers", "key": "a", "value": deposit})
    events.write_bytes(line + b"\n" + line.replace(b"t1", b"t2"))
    apply = RiskEngine.apply

    def failing(engine, envelope):
        if envelope.offset == 1:
            raise Inexact([Inexact])
        return apply(engine, envelope)

    monkeypatch.setattr(RiskEngine, "apply", failing)
    assert main(["replay", str(events)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("marginstream: error: line 2: the engine failed on this record")
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_with_partitions_a_line_naming_a_partition_beyond_them_is_a_dead_letter(tmp_path: Path):
    """No worker reads a partition the topic lacks: an outside tester's fund deposit on
    partition 4 of 4 was credited to slice 0."""
    deposit = {"type": "deposit", "transfer_id": "f", "account": "insurance-fund", "amount": "5",
               "ts": 1}  # fmt: skip
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        orjson.dumps(
            {"topic": "transfers", "key": "insurance-fund", "partition": 4, "value": deposit}
        )
    )
    result = marginstream("replay", str(events), "--partitions", "4", "--state")
    assert result.returncode == 0, result.stderr
    [letter] = lines(result.stdout)
    assert letter["value"]["reason"] == "line 1: partition 4 does not exist (4 partitions)"


REPLAYED = [setting for setting in SETTINGS if setting.replayed]
DAY_MS = 86_400_000


def replay_in_process(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """`marginstream replay` as main() runs it: (exit status, stderr)."""
    from marginstream.cli import main

    capsys.readouterr()
    try:
        code = main(["replay", *args])
    except SystemExit as stop:  # argparse refusing a flag
        code = stop.code  # type: ignore[assignment]
    return code, capsys.readouterr().err


def test_every_setting_that_changes_outputs_or_state_has_its_flag_with_the_same_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    """Derived from the worker's table (stream/bounds.py): a setting marked replayed
    cannot lack its flag, nor have other bounds."""
    from marginstream.cli import build_parser

    replay = build_parser()._subparsers._group_actions[0].choices["replay"]  # type: ignore[union-attr]
    flags = {flag for action in replay._actions for flag in action.option_strings}
    assert flags - {"-h", "--help", "--state"} == {setting.flag for setting in REPLAYED}
    events = tmp_path / "events.jsonl"
    events.write_text("")
    for setting in REPLAYED:
        examples = setting.examples
        for value in (examples.below, examples.above, *examples.refused):
            if value is None:
                continue
            code, err = replay_in_process(capsys, str(events), f"{setting.flag}={value}")
            assert code == 2, (setting.flag, value, err)
            assert f"marginstream replay: error: argument {setting.flag}: " in err, err
        assert replay_in_process(capsys, str(events), setting.flag, examples.inside) == (0, "")


def deposits(*ids_and_days: tuple[str, float]) -> list[str]:
    return [
        orjson.dumps(
            {"topic": "transfers", "key": "a",
             "value": {"type": "deposit", "transfer_id": transfer, "account": "a",
                       "amount": "10", "ts": 1_000 + int(days * DAY_MS)}}
        ).decode()
        for transfer, days in ids_and_days
    ]  # fmt: skip


def test_the_duplicate_retention_flag_decides_a_repeat_deposit_as_the_engine_does(tmp_path: Path):
    """A repeat 2 days later: past a 1-day retention it is applied, within the default 7
    days a dead letter; a repeat after half a day is a dead letter either way."""
    from marginstream.cli.replay import replay_lines
    from marginstream.core import RiskEngine
    from marginstream.stream.settings import engine_config

    events = tmp_path / "events.jsonl"
    lines_in = deposits(("t1", 0), ("t1", 0.5), ("t2", 1), ("t2", 3))
    events.write_text("\n".join(lines_in))
    outcomes = {}
    for days in ("1", None):
        result = marginstream("replay", str(events), "--state",
                              *(("--duplicate-retention-days", days) if days else ()))  # fmt: skip
        assert result.returncode == 0, result.stderr
        outcomes[days] = lines(result.stdout)
        values = {"duplicate_retention_days": float(days or 7), "partitions": None}
        engine = RiskEngine(engine_config(values))
        assert [o.value for o in replay_lines(engine, lines_in)] == [
            r["value"] for r in outcomes[days] if r["topic"] != "state"
        ]
    one_day, seven_days = outcomes["1"], outcomes[None]
    assert [r["value"]["cash"] for r in one_day if r["topic"] == "state"] == ["30"]
    assert [r["value"]["cash"] for r in seven_days if r["topic"] == "state"] == ["20"]
    letters = [r["value"]["reason"] for r in seven_days if r["topic"] == "dead-letters"]
    assert len(letters) == 2 and all("duplicate" in reason for reason in letters), letters
    assert len([r for r in one_day if r["topic"] == "dead-letters"]) == 1


def test_the_record_limit_flag_is_the_worker_s(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    [line] = deposits(("t" * 120, 0))
    events.write_text(line.replace('"amount"', '"pad": "' + "x" * 2000 + '", "amount"'))
    small = lines(marginstream("replay", str(events), "--max-record-bytes", "1024").stdout)
    assert "over the 1024-byte limit" in small[0]["value"]["reason"]
    assert lines(marginstream("replay", str(events), "--state").stdout)[0]["topic"] == "state"
