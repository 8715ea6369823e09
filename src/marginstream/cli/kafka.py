"""`marginstream kafka up|down|status|fetch`: the local development broker.

Failures surface as BrokerError, which the command line prints as one error line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from marginstream.localbroker import (
    KAFKA_VERSION,
    LocalBroker,
    cached_jars,
    ensure_jars,
    ephemeral_warning,
)
from marginstream.localbroker.errors import BrokerError
from marginstream.localbroker.jars import cache_size_bytes
from marginstream.localbroker.secure import stored_security

DEFAULT_PORT = 9092


def default_data_dir(port: int) -> Path:
    """$MARGINSTREAM_KAFKA_DIR, else one directory per port under the XDG state directory."""
    explicit = os.environ.get("MARGINSTREAM_KAFKA_DIR")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "marginstream" / f"kafka-{port}"


def _broker(args: argparse.Namespace) -> LocalBroker:
    data_dir = Path(args.data_dir or default_data_dir(args.port)).expanduser().resolve()
    secure = getattr(args, "secure", False)
    formatted = (data_dir / "kraft" / "meta.properties").exists()
    if secure and formatted and stored_security(data_dir / "secure") is None:
        raise BrokerError(f"{data_dir} was formatted without --secure: use another --data-dir")
    security = stored_security(data_dir / "secure", create=secure)
    return LocalBroker(port=args.port, data_dir=data_dir, security=security)


def up(args: argparse.Namespace) -> int:
    warning = ephemeral_warning(args.port)
    if warning:
        print(f"marginstream: {warning}", file=sys.stderr, flush=True)
    broker = _broker(args)
    already = broker.running_pid()
    began = time.monotonic()
    pid = broker.start(timeout=args.timeout)
    if already == pid:
        print(f"Kafka {KAFKA_VERSION} already running: pid {pid}, bootstrap {broker.bootstrap}")
    else:
        print(
            f"Kafka {KAFKA_VERSION} up in {time.monotonic() - began:.1f}s: pid {pid}, "
            f"bootstrap {broker.bootstrap}, data dir {broker.data_dir}"
        )
    if broker.security is not None:
        env = broker.data_dir / "secure" / "client.env"
        print(f"SASL_SSL with SCRAM-SHA-512: clients take the variables in {env}")
    return 0


def down(args: argparse.Namespace) -> int:
    broker = _broker(args)
    stopped = broker.stop(timeout=args.timeout)
    print("Kafka stopped" if stopped else f"no broker running on {broker.data_dir}")
    return 0


def status(args: argparse.Namespace) -> int:
    state = _broker(args).status()
    print(state.describe())
    return 0 if state.running and state.answering else 3


def fetch(args: argparse.Namespace) -> int:
    was_cached = cached_jars() is not None
    jars = ensure_jars(quiet=not args.verbose)
    how = "reused from cache" if was_cached else "fetched from Maven Central"
    size = cache_size_bytes(jars) / 2**20
    print(f"Kafka {KAFKA_VERSION} jars {how}: {jars} ({size:.0f} MiB)", file=sys.stderr)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    kafka = commands.add_parser("kafka", help="run a local single-node Kafka broker (KRaft)")
    actions = kafka.add_subparsers(dest="action", required=True, metavar="ACTION")

    def with_broker(name: str, help_text: str, timeout: float) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="broker port")
        parser.add_argument(
            "--data-dir",
            type=Path,
            help="broker directory (default: one per port under $XDG_STATE_HOME/marginstream)",
        )
        parser.add_argument("--timeout", type=float, default=timeout, help="seconds to wait")
        return parser

    start = with_broker("up", "start a broker in the background", 90.0)
    start.add_argument(
        "--secure",
        action="store_true",
        help="one SASL_SSL listener, SCRAM users and a throwaway CA (needs `cryptography`)",
    )
    start.set_defaults(run=up)
    with_broker("down", "stop the broker", 30.0).set_defaults(run=down)
    with_broker("status", "is the broker running and answering?", 5.0).set_defaults(run=status)
    jars = actions.add_parser("fetch", help="fetch the broker jars into the cache")
    jars.add_argument("--verbose", action="store_true", help="show Maven's output")
    jars.set_defaults(run=fetch)
