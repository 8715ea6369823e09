"""`marginstream repartition --partitions N --to-app-id NEW`: move a stopped deployment's
state to N account partitions, under a new app id (stream/repartition.py does it; the
docs/operations.md, "Changing the partition count", says when and why)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiokafka.errors import KafkaError

from marginstream.cli.errors import CommandError
from marginstream.cli.flags import setting_type
from marginstream.core.delivery.repartition import MoveRefused
from marginstream.stream.bounds import BY_FIELD
from marginstream.stream.repartition import Move
from marginstream.stream.settings import SettingsError, StreamSettings


def run(args: argparse.Namespace) -> int:
    try:
        settings = StreamSettings.from_env()
    except SettingsError as error:
        raise CommandError(str(error)) from None
    try:
        lines = asyncio.run(Move(settings, args.partitions, args.to_app_id).run())
    except MoveRefused as refused:
        raise CommandError(str(refused)) from None
    except (KafkaError, OSError) as error:
        raise CommandError(f"the move did not commit: {error!r}; run it again") from None
    for line in lines:
        print(line, file=sys.stderr if line.startswith("warning") else sys.stdout)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "repartition",
        help="move a stopped deployment's state to more partitions, under a new app id",
    )
    partitions, app_id = BY_FIELD["partitions"], BY_FIELD["app_id"]
    parser.add_argument(
        "--partitions", type=setting_type(partitions), required=True,
        help=f"the new count of account partitions ({partitions.range})",
    )  # fmt: skip
    parser.add_argument(
        "--to-app-id", type=setting_type(app_id), required=True,
        help=f"the new deployment's MARGINSTREAM_APP_ID ({app_id.range})",
    )  # fmt: skip
    parser.set_defaults(run=run)
