"""`marginstream replay EVENTS.jsonl [--state]`: the core, offline, as the reference run.

Each input line is {"topic", "key", "value"} in processing order, optionally with the
"partition" it was read from. Records get that partition (else 0) and, as offset, their
ordinal within their topic and partition. With --partitions N an account record must
sit on its key's partition among N, as the live worker checks; a line that names no
partition is put where Kafka's default partitioner would put its key. A line that is not JSON
or lacks topic/value becomes a dead letter naming its line number; the replay goes on.

Each value goes through the worker's own intake (core/intake.py) as the bytes
`marginstream produce` would send, so size limits and JSON errors match the live system.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson

from marginstream.cli.errors import CommandError
from marginstream.core import DEAD_LETTERS, EngineConfig, Output, RiskEngine, intake
from marginstream.core.alerts import Thresholds
from marginstream.core.deadletters import original
from marginstream.core.keys import account_partition
from marginstream.core.liquidation import adl
from marginstream.core.liquidation.closeout import BANKRUPTCY, PENALTY, LiquidationPolicy
from marginstream.core.numbers import RecordError, parse_decimal
from marginstream.core.records import ACCOUNT_TOPICS
from marginstream.core.shards import Shards


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


def replay_lines(engine: RiskEngine | Shards, lines: Iterable[str]) -> Iterator[Output]:
    """Every output of the engine for the given input lines, in order."""
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
        envelope = intake.envelope(topic, partition, offset, raw_key, orjson.dumps(item["value"]))
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
    /insurance-fund/ and GET /adl/{symbol}/ show them)."""
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


def write_line(out: IO[bytes], item: dict[str, Any]) -> None:
    out.write(orjson.dumps(item) + b"\n")


def run(args: argparse.Namespace) -> int:
    path: Path = args.events
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    try:
        thresholds = Thresholds(args.margin_call, args.liquidation)
        policy = LiquidationPolicy(
            args.liquidation_target, args.liquidation_pricing, args.liquidation_penalty,
            args.liquidation_lot, args.liquidation_reissue_ms,
        )  # fmt: skip
        config = EngineConfig(thresholds=thresholds, partitions=args.partitions, liquidation=policy)
    except ValueError as error:
        raise CommandError(str(error)) from None
    if args.partitions is not None and not 1 <= args.partitions <= 10_000:
        raise CommandError(f"--partitions must be between 1 and 10000, got {args.partitions}")
    engine = RiskEngine(config) if args.partitions is None else Shards(config, args.partitions)
    out = sys.stdout.buffer
    with path.open(encoding="utf-8", errors="replace") as events:
        for output in replay_lines(engine, events):
            write_line(out, {"topic": output.topic, "key": output.key, "value": output.value})
    if args.state:
        for item in state_lines(engine):
            write_line(out, item)
    out.flush()
    return 0


def _lot(raw: str) -> Decimal:
    try:
        return parse_decimal(raw, "the lot")
    except RecordError as error:  # argparse shows its text
        raise argparse.ArgumentTypeError(str(error)) from None


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "replay", help="run the margin core offline over a JSON-lines file of records"
    )
    parser.add_argument("events", type=Path, help="JSON lines of {topic, key, value}")
    parser.add_argument("--state", action="store_true", help="also print each account's state")
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="the account topics' partition count: check each record's partition, and "
        "keep one engine per partition as the workers do (each has its own slice of the "
        "insurance fund and its own auto-deleveraging ranking)",
    )
    parser.add_argument("--margin-call", type=float, default=0.8, help="margin_call ratio")
    parser.add_argument("--liquidation", type=float, default=1.0, help="liquidation ratio")
    defaults = LiquidationPolicy()
    parser.add_argument(
        "--liquidation-target", type=float, default=None,
        help="margin ratio a liquidation's closing orders aim at (default: --margin-call)",
    )  # fmt: skip
    parser.add_argument(
        "--liquidation-pricing", choices=(PENALTY, BANKRUPTCY), default=defaults.pricing,
        help="closing orders at the penalty price or at the bankruptcy price",
    )  # fmt: skip
    parser.add_argument(
        "--liquidation-penalty", type=float, default=defaults.penalty_rate,
        help="the penalty price's distance from the mark, as a fraction",
    )  # fmt: skip
    parser.add_argument(
        "--liquidation-lot", type=_lot, default=defaults.lot,
        help="closing quantities are whole lots of this size",
    )  # fmt: skip
    parser.add_argument(
        "--liquidation-reissue-ms", type=int, default=defaults.reissue_after_ms,
        help="event time an open set of closing orders waits before it is re-issued",
    )  # fmt: skip
    parser.set_defaults(run=run)
