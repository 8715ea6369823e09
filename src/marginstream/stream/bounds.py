"""Every setting the worker reads from the environment, with its range: one table.

One table because four readers need the same ranges: the worker's start
(StreamSettings.from_env), `marginstream replay`'s flags, docs/configuration.md's "range" column and
the tests, which derive their cases from the rows so that a new setting cannot be left
unchecked. A value outside its range is refused before anything starts, with one line,
`<VARIABLE>=<value>: <why>`, the value shown safely (a hostile value cannot make the line
long or split it).

`replayed` says whether a setting changes outputs or state: then `marginstream replay`
has a flag of the same name and the same bounds, so that the offline reference can mirror
any deployment. The bounds that only the brokers know (the session timeouts they accept,
the largest record they take) are checked at start by stream/brokerlimits.py.

KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* are not rows: they only make sense
together, and stream/security.py checks them together, refusing in the same format.
"""

from __future__ import annotations

import inspect
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer

from marginstream.core.engine import DAY_MS

_PRODUCER = inspect.signature(AIOKafkaProducer).parameters
# Every producer of the worker runs with aiokafka's defaults for these two.
TRANSACTION_TIMEOUT_MS: int = _PRODUCER["transaction_timeout_ms"].default
MAX_REQUEST_BYTES: int = _PRODUCER["max_request_size"].default
# Room for a record's headers and its batch's overhead: the market fan-out
# (stream/fanout.py) copies a record whole, with its origin in headers.
HEADROOM_BYTES = 1024
RECORD_BYTES_LIMIT = MAX_REQUEST_BYTES - HEADROOM_BYTES
# Measured (tests/stream/test_settings_bounds.py repeats it): the stored account part
# (encode_part of engine.part(("account", id))) of an account with a 128-character id,
# full used-id chunks of fills and transfers (127 ids of 128 characters each), and N open
# orders with 128-character ids on 64-character symbols, quantity and price of 28 digits:
# 37,963 bytes + 289 per order, so 1,600 orders 500,362 bytes (489 KiB), 1,700 orders
# 529,262 (517 KiB). 1,600 keeps the part, a changelog record, under 512 KiB: well under
# the 1 MiB Kafka takes.
OPEN_ORDERS_LIMIT = 1600
SHOWN_CHARACTERS = 100  # of a refused value, in its line
# Records applied and not committed for this long mean a commit that hangs somewhere the
# timeouts do not reach: the worker stops, and its successor starts from what Kafka holds
# (runner.py's stall check). Here because commit_interval's range is stated against it.
STALL_SECONDS = 60.0


class SettingsError(ValueError):
    """An environment variable holds a value the worker cannot use."""


def shown(raw: str, secret: bool = False) -> str:
    """raw on one short line: control characters, newlines and backslashes escaped
    (surrogates from bytes that are not UTF-8 too), cut after about SHOWN_CHARACTERS."""
    if secret:
        return f"(hidden, {len(raw)} characters)"
    pieces, length = [], 0
    for char in raw:
        if length >= SHOWN_CHARACTERS:
            return "".join(pieces) + f"...({len(raw)} characters)"
        piece = char if char.isprintable() and char != "\\" else _escaped(char)
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces)


def _escaped(char: str) -> str:
    return char.encode("unicode_escape", "backslashreplace").decode("ascii")


def refusal(variable: str, raw: str, why: str, secret: bool = False) -> str:
    """The one line (without `marginstream: error: `) that refuses a variable's value."""
    return f"{variable}={shown(raw, secret)}: {why}"


# -- parsing: each raises ValueError with what the value is not --------------------


def whole(raw: str) -> int:
    text = raw.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError("not a whole number")
    if len(text) > 30:  # int() of a hostile megabyte of digits is slow, and refused anyway
        raise ValueError("out of range")
    return int(text)


def number(raw: str) -> float:
    """A ratio or a duration (floats are for these only: money is never a float)."""
    text = raw.strip()
    try:
        if not text.isascii() or "_" in text:
            raise ValueError
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):  # nan, inf, 1e400
        raise ValueError("not finite")
    return value


def exact(raw: str) -> Decimal:
    text = raw.strip()
    try:
        if not text.isascii() or "_" in text:
            raise InvalidOperation
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not value.is_finite():
        raise ValueError("not finite")
    return value


def text(raw: str) -> str:
    return raw


def token(raw: str) -> str:
    return raw.strip()


def token_file(raw: str) -> str:
    """The token a file holds, surrounding whitespace stripped."""
    try:
        content = Path(raw).read_text().strip()
    except OSError as error:
        raise ValueError(f"cannot read it ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError("not a text file") from None
    if not content:
        raise ValueError("the file is empty")
    return content


# -- checks -------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9._-]*")


def _named(low: int) -> Callable[[str], bool]:
    """low to 100 characters of Kafka's topic-name alphabet: the longest name the worker
    makes, prefix + app id + "-state-changelog", stays under Kafka's 249."""
    return lambda value: low <= len(value) <= 100 and _NAME.fullmatch(value) is not None


def _servers(value: str) -> bool:
    for server in value.split(","):
        host, colon, port = server.rpartition(":")
        if not (colon and host and re.fullmatch(r"[0-9]{1,5}", port) and 0 < int(port) < 65536):
            return False
        if any(char.isspace() or not char.isprintable() for char in host):
            return False
    return True


def _host(value: str) -> bool:
    """It becomes http://<host>:<port>, the address other workers route requests to:
    none of the characters that would end or escape the URL's host."""
    return 0 < len(value) <= 253 and all(
        char.isprintable() and not char.isspace() and char not in "/@:?#\\%" for char in value
    )


def _address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return _host(value)
    return True


def _token(value: str) -> bool:
    """Printable ASCII without spaces: it travels in an HTTP header."""
    return 0 < len(value) <= 4096 and value.isascii() and value.isprintable() and " " not in value


def _commit_interval_note() -> str:
    return (
        f"a partition's records must commit well within the worker's {STALL_SECONDS:g} s "
        f"stall check and the producers' {TRANSACTION_TIMEOUT_MS / 1000:g} s transaction timeout"
    )


# -- the table ----------------------------------------------------------------------


class Examples(NamedTuple):
    """What the tests try: a value below the range, one inside, one above (None where
    the range has no such side; for a set of choices, `above` is one that is not), and
    other values refused. `{dir}` stands for a directory the tests fill with a file
    `token` (a good token) and `long-token` (over 4096 characters)."""

    below: str | None
    inside: str
    above: str | None
    refused: tuple[str, ...] = ()


@dataclass(frozen=True)
class Relation:
    """A bound set by another setting: value <op> that setting's value."""

    op: str  # "<=", "<" or ">="
    other: str  # its StreamSettings field

    def holds(self, value: Any, other: Any) -> bool:
        return {"<=": value <= other, "<": value < other, ">=": value >= other}[self.op]

    def problem(self, name: str, other: Any) -> str:
        where = {"<=": "above", "<": "not below", ">=": "below"}[self.op]
        return f"{where} {name} ({other})"


@dataclass(frozen=True)
class Setting:
    field: str  # of StreamSettings
    variable: str
    parse: Callable[[str], Any]  # raises ValueError("not a number", ...)
    check: Callable[[Any], bool]  # the range, on its own
    range: str  # in words, after "must be": for the refusal, the docs, replay's help
    # Does it change outputs or state? Then `marginstream replay` has its flag. No
    # default: whoever adds a setting decides.
    replayed: bool
    examples: Examples
    relation: Relation | None = None
    note: str | Callable[[], str] = ""  # why the range is what it is, said on refusal
    not_replayed_because: str = ""  # required when not replayed
    secret: bool = False  # never shown

    def __post_init__(self) -> None:
        if not self.replayed and not self.not_replayed_because:
            raise ValueError(f"{self.variable}: say why replay needs no flag for it")

    @property
    def flag(self) -> str:
        """replay's flag: the variable without MARGINSTREAM_, lower-case, with dashes."""
        return "--" + self.variable.removeprefix("MARGINSTREAM_").lower().replace("_", "-")

    def why(self, problem: str) -> str:
        note = self.note() if callable(self.note) else self.note
        return f"{problem}: must be {self.range}" + (f" ({note})" if note else "")

    def refused(self, raw: str, problem: str) -> SettingsError:
        """The error (its message the one line) that refuses raw for problem."""
        return SettingsError(refusal(self.variable, raw, self.why(problem), self.secret))

    def value_of(self, raw: str) -> Any:
        """raw, parsed and inside the range on its own; ValueError naming the problem."""
        value = self.parse(raw)
        problem = self.problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def problem(self, value: Any) -> str | None:
        """What is wrong with a parsed value on its own (None: inside the range)."""
        if self.check(value):
            return None
        return "out of range" if isinstance(value, int | float | Decimal) else "not allowed"


_NAMES = "of A-Za-z0-9._-"
SETTINGS: tuple[Setting, ...] = (
    Setting("bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS", text, _servers,
            "comma-separated host:port, port 1 to 65535, no spaces", False,
            Examples("127.0.0.1:0", "127.0.0.1:9092", "127.0.0.1:65536",
                     ("kafka", "a:1,,b:2", "a b:9092", ":9092")),
            not_replayed_because="where Kafka is, not what the engine computes"),
    Setting("topic_prefix", "MARGINSTREAM_TOPIC_PREFIX", text, _named(0),
            f"0 to 100 characters {_NAMES}", False,
            Examples(None, "team-a.", "p" * 101, ("a/b", "a b")),
            not_replayed_because="names only: replay reads lines, not topics"),
    Setting("app_id", "MARGINSTREAM_APP_ID", text, _named(1),
            f"1 to 100 characters {_NAMES}", False,
            Examples(None, "risk-1", "a" * 101, ("a/b", "é")),
            not_replayed_because="names only"),
    Setting("partitions", "MARGINSTREAM_PARTITIONS", whole, lambda v: 1 <= v <= 1024,
            "1 to 1024", True, Examples("0", "16", "1025", ("abc", "8.0", "9" * 40))),
    Setting("market_partitions", "MARGINSTREAM_MARKET_PARTITIONS", whole,
            lambda v: 1 <= v <= 1024, "1 to 1024", False, Examples("0", "2", "1025"),
            not_replayed_because="the fan-out copies every market record to every partition "
            "whatever it was read from; replay takes the lines in the order given"),
    Setting("replication_factor", "MARGINSTREAM_REPLICATION_FACTOR", whole,
            lambda v: 1 <= v <= 32767, "1 to 32767, at most the brokers (for a topic to "
            "create)", False, Examples("0", "3", "32768"),
            not_replayed_because="copies kept by Kafka, not what they hold"),
    Setting("standby_replicas", "MARGINSTREAM_STANDBY_REPLICAS", whole,
            lambda v: 0 <= v <= 8, "0 to 8", False, Examples("-1", "2", "9"),
            not_replayed_because="local copies for a faster takeover, restored from the "
            "same changelog"),
    Setting("commit_interval", "MARGINSTREAM_COMMIT_INTERVAL", number,
            lambda v: 0.01 <= v <= 10, "0.01 to 10 seconds", False,
            Examples("0", "0.5", "120", ("nan", "inf", "1e400", "abc", "1_0")),
            note=_commit_interval_note,
            not_replayed_because="when outputs become visible, not what they are"),
    Setting("session_timeout", "MARGINSTREAM_SESSION_TIMEOUT", number,
            lambda v: 0.1 <= v <= 3600, "0.1 to 3600 seconds, within the brokers' "
            "group.min/max.session.timeout.ms", False, Examples("0", "6", "3601"),
            not_replayed_because="when a dead worker's partitions move, not what they hold"),
    Setting("margin_call", "MARGINSTREAM_MARGIN_CALL", number, lambda v: 0 < v <= 10,
            "more than 0 and at most MARGINSTREAM_LIQUIDATION", True,
            Examples("0", "0.7", "1.5"), Relation("<=", "liquidation")),
    Setting("liquidation", "MARGINSTREAM_LIQUIDATION", number, lambda v: 0 < v <= 10,
            "more than 0 and at most 10, at least MARGINSTREAM_MARGIN_CALL", True,
            Examples("0.5", "1.2", "10.5", ("-1", "nan")), Relation(">=", "margin_call")),
    Setting("liquidation_target", "MARGINSTREAM_LIQUIDATION_TARGET", number,
            lambda v: 0 < v < 10, "more than 0 and below MARGINSTREAM_LIQUIDATION", True,
            Examples("0", "0.5", "1.0"), Relation("<", "liquidation")),
    Setting("liquidation_pricing", "MARGINSTREAM_LIQUIDATION_PRICING", text,
            lambda v: v in ("penalty", "bankruptcy"), "penalty or bankruptcy", True,
            Examples(None, "bankruptcy", "fixed", ("Penalty",))),
    Setting("liquidation_penalty", "MARGINSTREAM_LIQUIDATION_PENALTY", number,
            lambda v: 0 <= v < 1, "at least 0 and below 1", True,
            Examples("-0.01", "0.01", "1")),
    Setting("liquidation_lot", "MARGINSTREAM_LIQUIDATION_LOT", exact,
            lambda v: Decimal("1e-12") <= v <= Decimal("1e9"), "1e-12 to 1e9", True,
            Examples("1e-13", "0.01", "1e10", ("sNaN", "0.0_1"))),
    Setting("liquidation_reissue_ms", "MARGINSTREAM_LIQUIDATION_REISSUE_MS", whole,
            lambda v: 1 <= v <= 10**12, "1 to 10^12", True,
            Examples("0", "60000", str(10**12 + 1))),
    Setting("duplicate_retention_days", "MARGINSTREAM_DUPLICATE_RETENTION_DAYS", number,
            lambda v: 0 < v <= 3650 and v * DAY_MS >= 1,
            "more than 0 (at least 1 ms) and at most 3650 days", True,
            Examples("-1", "1", "3651", ("0", "1e-9"))),
    Setting("max_record_bytes", "MARGINSTREAM_MAX_RECORD_BYTES", whole,
            lambda v: 1024 <= v <= RECORD_BYTES_LIMIT,
            f"1024 to {RECORD_BYTES_LIMIT}, within the brokers' limits less 1 KiB", True,
            Examples("1023", "100000", "50000000"),
            note=f"a Kafka producer sends at most {MAX_REQUEST_BYTES} bytes; the market "
            "fan-out copies a record whole, with headers"),
    Setting("max_open_orders", "MARGINSTREAM_MAX_OPEN_ORDERS", whole,
            lambda v: 1 <= v <= OPEN_ORDERS_LIMIT, f"1 to {OPEN_ORDERS_LIMIT}", True,
            Examples("0", "1000", str(OPEN_ORDERS_LIMIT + 1)),
            note="an account's orders are in its state record, which must stay under 512 KiB"),
    Setting("web_port", "MARGINSTREAM_WEB_PORT", whole, lambda v: 1 <= v <= 65535,
            "1 to 65535", False, Examples("0", "6067", "65536"),
            not_replayed_because="where the views are served"),
    Setting("web_host", "MARGINSTREAM_WEB_HOST", text, _host,
            "1 to 253 characters, none of space / @ : ? # \\ %", False,
            Examples(None, "risk-1.internal", "h" * 254,
                     ("a b", "a/b", "u@h", "h:1", "a\nb", "h?x", "a\\b")),
            not_replayed_because="the name other workers route requests to"),
    Setting("web_bind", "MARGINSTREAM_WEB_BIND", text, _address,
            "an IP address or a host name (as MARGINSTREAM_WEB_HOST)", False,
            Examples(None, "::1", "h" * 254, ("0.0.0.0 ", "a/b")),
            not_replayed_because="where the views listen"),
    Setting("web_token", "MARGINSTREAM_WEB_TOKEN", token, _token,
            "1 to 4096 printable ASCII characters, no spaces", False,
            Examples(None, "s3cret-token", "t" * 4097, ("two words", "tab\there", "é")),
            not_replayed_because="who may read the views", secret=True),
    Setting("web_token", "MARGINSTREAM_WEB_TOKEN_FILE", token_file, _token,
            "a readable file holding such a token", False,
            Examples(None, "{dir}/token", "{dir}/long-token", ("{dir}/missing", "{dir}")),
            not_replayed_because="who may read the views"),
)  # fmt: skip
BY_FIELD = {setting.field: setting for setting in SETTINGS}  # the first, for web_token


def relation_problem(
    settings: Iterable[Setting], values: Mapping[str, Any], name: Callable[[Setting], str]
) -> tuple[Setting, str] | None:
    """The first of settings whose relation to another fails, and why (name: how the
    other is called, its variable or its flag)."""
    for setting in settings:
        relation, value = setting.relation, values.get(setting.field)
        if relation is None or value is None or values.get(relation.other) is None:
            continue
        other = values[relation.other]
        if not relation.holds(value, other):
            return setting, relation.problem(name(BY_FIELD[relation.other]), other)
    return None
