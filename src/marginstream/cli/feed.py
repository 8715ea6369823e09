"""`marginstream feed`: write the scripted demo market as JSON lines, for replay or produce."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from marginstream.feeds.demo import DemoMarket, demo_events


def run(args: argparse.Namespace) -> int:
    market = DemoMarket(accounts=args.accounts, seed=args.seed, poison_every=args.poison_every)
    out = args.out.open("wb") if args.out else sys.stdout.buffer
    try:
        for item in demo_events(market):
            out.write(orjson.dumps(item) + b"\n")
    finally:
        if args.out:
            out.close()
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("feed", help="write the demo market's records as JSON lines")
    parser.add_argument("--accounts", type=int, default=300, help="trading accounts")
    parser.add_argument("--seed", type=int, default=7, help="random seed (same seed, same feed)")
    parser.add_argument(
        "--poison-every", type=int, default=0, help="insert a malformed record every N records"
    )
    parser.add_argument("--out", type=Path, help="file to write (default: standard output)")
    parser.set_defaults(run=run)
