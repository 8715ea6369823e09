"""The `marginstream` command: one sub-command per entry point, each in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from marginstream import __version__
from marginstream.cli import demo, feed, kafka, produce, repartition, replay, verify
from marginstream.cli.errors import CommandError
from marginstream.localbroker import BrokerError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marginstream",
        description="Real-time margin and liquidation engine for crypto derivatives venues.",
    )
    parser.add_argument("--version", action="version", version=f"marginstream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    kafka.register(commands)
    replay.register(commands)
    repartition.register(commands)
    feed.register(commands)
    produce.register(commands)
    demo.register(commands)
    verify.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (CommandError, BrokerError) as error:
        print(f"marginstream: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("marginstream: interrupted", file=sys.stderr)
        return 130
