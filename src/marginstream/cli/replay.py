"""`marginstream replay EVENTS.jsonl [--state]`: the core, offline, as the reference run.

Each input line is {"topic", "key", "value"} in processing order, optionally with the
"partition" it was read from. Records get that partition (else 0) and, as offset, their
ordinal within their topic and partition. With --partitions N an account record must
sit on its key's partition among N, as the live worker checks; a line that names no
partition is put where Kafka's default partitioner would put its key. A line that is not JSON
or lacks topic/value becomes a dead letter naming its line number; the replay goes on.

Each value goes through the worker's own intake (core/inputs/intake.py) as the bytes
`marginstream produce` would send, so size limits and JSON errors match the live system.

Every worker setting that changes outputs or state has a flag of the same name
(MARGINSTREAM_DUPLICATE_RETENTION_DAYS: --duplicate-retention-days), built from the
table of stream/bounds.py with the same bounds, and the engine is configured by the
worker's own function (stream/settings.engine_config): a replay can mirror any deployment.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from marginstream.cli.errors import CommandError
from marginstream.cli.flags import range_words, setting_type
from marginstream.core import DEAD_LETTERS, Output, RiskEngine
from marginstream.core.commitments.record import Commitments
from marginstream.core.inputs import intake
from marginstream.core.inputs.deadletters import original
from marginstream.core.inputs.intake import MAX_RECORD_BYTES
from marginstream.core.inputs.keys import account_partition
from marginstream.core.inputs.records import ACCOUNT_TOPICS
from marginstream.core.liquidation import adl
from marginstream.core.shards import Shards
from marginstream.stream.bounds import SETTINGS, relation_problem
from marginstream.stream.settings import DEFAULTS, engine_config

REPLAYED = tuple(setting for setting in SETTINGS if setting.replayed)
HELP = {  # more than "as the workers' <VARIABLE>" says
    "partitions": "the account topics' partition count: check each record's partition, and "
    "keep one engine per partition as the workers do (each has its own slice of the "
    "insurance fund and its own auto-deleveraging ranking); without it, one engine",
    "liquidation_target": "as the workers' MARGINSTREAM_LIQUIDATION_TARGET; by default the "
    "margin call",
}


def _line_dead_letter(number: int, reason: str, text: str) -> Output:
    """A line that is not a record at all: it has no topic, partition or offset."""
    return Output(
        DEAD_LETTERS,
        None,
        {
            "reason": f"line {number}: {reason}",
            "topic": None,
            "partition": None,
            "offset": None,
            "key": None,
            **original(text.encode()),
            "ts": None,
        },
    )


def replay_lines(
    engine: RiskEngine | Shards, lines: Iterable[str], max_record_bytes: int = MAX_RECORD_BYTES
) -> Iterator[Output]:
    """Every output of the engine for the given input lines, in order (a record's key and
    value over max_record_bytes together is a dead letter, as live)."""
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    partitions = engine.config.partitions
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\n")
        if not text.strip():
            continue
        try:
            item = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            yield _line_dead_letter(number, f"not JSON ({error})", text)
            continue
        partition = item.get("partition") if isinstance(item, dict) else None
        if partition is None and isinstance(item, dict):  # where a producer would put it
            key = item.get("key")
            account_record = item.get("topic") in ACCOUNT_TOPICS and isinstance(key, str)
            partition = account_partition(key, partitions) if partitions and account_record else 0
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("topic"), str)
            or "value" not in item
        ):
            yield _line_dead_letter(
                number, 'expected {"topic": ..., "key": ..., "value": ...}', text
            )
            continue
        if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
            yield _line_dead_letter(number, "partition must be a whole number >= 0", text)
            continue
        if partitions and item["topic"] in ACCOUNT_TOPICS and partition >= partitions:
            # No worker reads it: Kafka has no such partition of the account topics.
            reason = f"partition {partition} does not exist ({partitions} partitions)"
            yield _line_dead_letter(number, reason, text)
            continue
        key = item.get("key")
        topic = item["topic"]
        offset = offsets[topic, partition]
        offsets[topic, partition] += 1
        raw_key = None if key is None else str(key).encode()
        value = orjson.dumps(item["value"])
        envelope = intake.envelope(topic, partition, offset, raw_key, value, max_record_bytes)
        try:
            outcome = engine.apply(envelope)
        except Exception as error:  # bad input is a dead letter: this is a bug of the engine
            raise CommandError(
                f"line {number}: the engine failed on this record ({error!r}); a worker stops "
                "on it too: please report it with the line"
            ) from error
        yield from outcome.outputs


def state_lines(engine: RiskEngine | Shards) -> Iterator[dict[str, Any]]:
    """Each account's state; then each slice of the insurance fund that has moved, and
    the auto-deleveraging ranking of each instrument with open positions (as GET
    /insurance-fund/ and GET /adl/{symbol}/ show them); then each partition's state
    root and sums (core/commitments), which a live partition's last commitment equals
    once everything is applied (with --partitions: without, one tree for all)."""
    for account_id in engine.account_ids():
        value = engine.state_of(engine.accounts[account_id])
        yield {"topic": "state", "key": account_id, "value": value}
    owners = engine.partitions()
    for partition, owner in owners:
        if owner.fund.seq:
            yield {"topic": "insurance-fund", "key": partition, "value": owner.fund.summary()}
    for symbol in sorted(owners[0][1].market.instruments):
        ranked = adl.merged_sides(adl.sides(owner, symbol) for _, owner in owners)
        if any(ranked.values()):
            yield {"topic": "adl-ranking", "key": symbol, "value": {"symbol": symbol, **ranked}}
    for partition, owner in owners:
        summary = Commitments.of_engine(owner, partition or 0).summary()
        yield {"topic": "state-root", "key": partition, "value": summary}


def write_line(out: IO[bytes], item: dict[str, Any]) -> None:
    out.write(orjson.dumps(item) + b"\n")


def run(args: argparse.Namespace) -> int:
    path: Path = args.events
    given = [setting for setting in REPLAYED if getattr(args, setting.field) is not None]
    values = {**DEFAULTS, "partitions": None, **{s.field: getattr(args, s.field) for s in given}}
    found = relation_problem(given, values, lambda setting: setting.flag)
    if found is not None:  # as argparse refuses a flag out of its own range: status 2
        setting, problem = found
        args.parser.error(
            f"argument {setting.flag}: {problem}: must be {range_words(setting, REPLAYED)}"
        )
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    try:
        config = engine_config(values)
    except ValueError as error:  # the core's own checks: unreachable past the flags'
        raise CommandError(str(error)) from None
    engine = RiskEngine(config) if args.partitions is None else Shards(config, args.partitions)
    out = sys.stdout.buffer
    with path.open(encoding="utf-8", errors="replace") as events:
        for output in replay_lines(engine, events, values["max_record_bytes"]):
            write_line(out, {"topic": output.topic, "key": output.key, "value": output.value})
    if args.state:
        for item in state_lines(engine):
            write_line(out, item)
    out.flush()
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "replay", help="run the margin core offline over a JSON-lines file of records"
    )
    parser.add_argument("events", type=Path, help="JSON lines of {topic, key, value}")
    parser.add_argument("--state", action="store_true", help="also print each account's state")
    for setting in REPLAYED:  # one flag per setting that changes outputs or state
        default = None if setting.field == "partitions" else DEFAULTS[setting.field]
        shown = "" if default is None else f"; default {default}"
        parser.add_argument(  # default None: run() tells the flags given (and relates them)
            setting.flag, dest=setting.field, type=setting_type(setting, REPLAYED), default=None,
            help=HELP.get(setting.field, f"as the workers' {setting.variable}")
            + f" ({range_words(setting, REPLAYED)}{shown})".replace("%", "%%"),
        )  # fmt: skip
    parser.set_defaults(run=run, parser=parser)
