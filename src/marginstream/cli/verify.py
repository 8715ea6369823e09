"""`marginstream verify [--from-epoch N]` and `marginstream verify-proof FILE`.

verify re-derives every commitment of a deployment from Kafka (stream/verify.py): run it
with the workers' environment (KAFKA_*, MARGINSTREAM_TOPIC_PREFIX, MARGINSTREAM_APP_ID,
the engine's settings). One line per partition; exit status 1 on any divergence.

verify-proof checks a proof saved from GET /accounts/{id}/proof offline, with no Kafka
and no state (core/commitments/proof.py); exit status 1 if it does not hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson
from aiokafka.errors import KafkaError

from marginstream.cli.errors import CommandError
from marginstream.core.commitments import proof
from marginstream.stream.settings import SettingsError, StreamSettings


def run_verify(args: argparse.Namespace) -> int:
    from marginstream.stream import verify  # noqa: PLC0415 (Kafka only for this command)

    try:
        settings = StreamSettings.from_env()
    except SettingsError as error:
        raise CommandError(str(error)) from None
    try:
        lines, ok = verify.run(settings, args.from_epoch)
    except (KafkaError, OSError) as error:
        raise CommandError(f"could not read the deployment's topics: {error!r}") from None
    for line in lines:
        print(line)
    return 0 if ok else 1


def run_verify_proof(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        given = orjson.loads(path.read_bytes())
    except OSError as error:
        raise CommandError(f"{path}: {error.strerror or error}") from None
    except orjson.JSONDecodeError as error:
        raise CommandError(f"{path}: not JSON ({error})") from None
    try:
        shown = proof.check(given)
    except proof.ProofError as error:
        print(f"{path}: the proof does not hold: {error}", file=sys.stderr)
        return 1
    print(
        f"{path}: ok: account {shown['account']} is leaf of partition {shown['partition']} "
        f"at epoch {shown['epoch']} (root {shown['state_root']}): its liabilities "
        f"{shown['liabilities']}, deficit {shown['deficit']}; the partition's liabilities "
        f"{shown['partition_liabilities']}, deficit {shown['partition_deficit']}. The proof "
        "holds against the commitment it carries: check that the venue published that "
        "record (its `commitments` topic, or the record `marginstream verify` checked)"
    )
    return 0


def _epoch(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"an epoch is a whole number >= 1, got {text!r}")
    return int(text)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "verify", help="re-derive every commitment of a deployment from its Kafka topics"
    )
    parser.add_argument(
        "--from-epoch", type=_epoch, default=None, metavar="N",
        help="start each partition from its state at epoch N in the changelog",
    )  # fmt: skip
    parser.set_defaults(run=run_verify)
    checker = commands.add_parser(
        "verify-proof", help="check a saved account proof offline (GET /accounts/{id}/proof)"
    )
    checker.add_argument("file", type=Path, help="the proof, as JSON")
    checker.set_defaults(run=run_verify_proof)
