"""Worker settings, from the environment (documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from marginstream.core.alerts import Thresholds
from marginstream.core.engine import DAY_MS, MAX_OPEN_ORDERS, EngineConfig
from marginstream.core.intake import MAX_RECORD_BYTES
from marginstream.core.liquidation.closeout import LiquidationPolicy
from marginstream.stream.security import KafkaSecurity, SecurityError


class SettingsError(ValueError):
    """An environment variable holds a value the worker cannot use."""


@dataclass(frozen=True)
class StreamSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    app_id: str = "marginstream"
    partitions: int = 8
    market_partitions: int = 1  # prices and instruments: one partition keeps market data in order
    replication_factor: int = 1
    standby_replicas: int = 1
    # Outputs become visible to read_committed consumers when their transaction commits.
    commit_interval: float = 0.1
    # How long a dead worker keeps its partitions before the group gives them away.
    session_timeout: float = 10.0
    margin_call: float = 0.8
    liquidation: float = 1.0
    # The liquidation engine (core/liquidation): the ratio a closing set aims at (None: the
    # margin-call threshold), its orders' price, the lot, the event time before re-issue.
    liquidation_target: float | None = None
    liquidation_pricing: str = "penalty"
    liquidation_penalty: float = 0.005
    liquidation_lot: Decimal = Decimal("0.001")
    liquidation_reissue_ms: int = 30_000
    duplicate_retention_days: float = 7.0
    max_record_bytes: int = MAX_RECORD_BYTES  # an input record's key and value together
    max_open_orders: int = MAX_OPEN_ORDERS  # per account
    web_port: int = 6066
    web_host: str | None = None
    # TLS and SASL of every Kafka client (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*).
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    web_bind: str = "127.0.0.1"  # the web server's listen address (loopback: this host only)
    web_token: str | None = field(default=None, repr=False)  # bearer token of the web views
    engine: EngineConfig = field(init=False)

    def __post_init__(self) -> None:
        if self.partitions < 1 or self.market_partitions < 1:
            raise SettingsError("partition counts must be at least 1")
        if self.max_record_bytes < 1024 or self.max_open_orders < 1:
            raise SettingsError("max record bytes must be at least 1024, max open orders 1")
        try:
            thresholds = Thresholds(self.margin_call, self.liquidation)
            policy = LiquidationPolicy(
                self.liquidation_target, self.liquidation_pricing, self.liquidation_penalty,
                self.liquidation_lot, self.liquidation_reissue_ms,
            )  # fmt: skip
            retention = int(self.duplicate_retention_days * DAY_MS)
            engine = EngineConfig(
                thresholds, retention, self.partitions, self.max_open_orders, liquidation=policy
            )
        except ValueError as error:
            raise SettingsError(str(error)) from None
        object.__setattr__(self, "engine", engine)

    @property
    def heartbeat_ms(self) -> int:
        """A tenth of the session: a survivor hears of a dead member's rebalance (in a
        heartbeat's answer) within 0.1 session of it, not a third, which is most of what a
        takeover waits for beyond the session itself."""
        return int(min(1.0, self.session_timeout / 10) * 1000)

    @property
    def broker_url(self) -> str:
        return ";".join(f"kafka://{server.strip()}" for server in self.bootstrap_servers.split(","))

    def kafka_options(self) -> dict[str, Any]:
        """The security keyword arguments of every aiokafka client the worker makes."""
        return self.security.options()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StreamSettings:
        env = os.environ if env is None else env
        fields: dict[str, object] = {}
        for name, variable, kind in _VARIABLES:
            raw = env.get(variable)
            if raw is None or raw == "":
                continue
            try:
                fields[name] = kind(raw)
            except ValueError:
                raise SettingsError(f"{variable}={raw!r} is not a valid {kind.__name__}") from None
        try:
            fields["security"] = KafkaSecurity.from_env(env)
        except SecurityError as error:
            raise SettingsError(str(error)) from None
        token = _token(env)
        if token is not None:
            fields["web_token"] = token
        return cls(**fields)  # type: ignore[arg-type]


def _decimal(raw: str) -> Decimal:
    """A finite decimal (ValueError otherwise, as int() and float() raise)."""
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError(raw) from None
    if not value.is_finite():
        raise ValueError(raw)
    return value


_decimal.__name__ = "decimal"

_VARIABLES: list[tuple[str, str, Callable[[str], Any]]] = [
    ("bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS", str),
    ("topic_prefix", "MARGINSTREAM_TOPIC_PREFIX", str),
    ("app_id", "MARGINSTREAM_APP_ID", str),
    ("partitions", "MARGINSTREAM_PARTITIONS", int),
    ("market_partitions", "MARGINSTREAM_MARKET_PARTITIONS", int),
    ("replication_factor", "MARGINSTREAM_REPLICATION_FACTOR", int),
    ("standby_replicas", "MARGINSTREAM_STANDBY_REPLICAS", int),
    ("commit_interval", "MARGINSTREAM_COMMIT_INTERVAL", float),
    ("session_timeout", "MARGINSTREAM_SESSION_TIMEOUT", float),
    ("margin_call", "MARGINSTREAM_MARGIN_CALL", float),
    ("liquidation", "MARGINSTREAM_LIQUIDATION", float),
    ("liquidation_target", "MARGINSTREAM_LIQUIDATION_TARGET", float),
    ("liquidation_pricing", "MARGINSTREAM_LIQUIDATION_PRICING", str),
    ("liquidation_penalty", "MARGINSTREAM_LIQUIDATION_PENALTY", float),
    ("liquidation_lot", "MARGINSTREAM_LIQUIDATION_LOT", _decimal),
    ("liquidation_reissue_ms", "MARGINSTREAM_LIQUIDATION_REISSUE_MS", int),
    ("duplicate_retention_days", "MARGINSTREAM_DUPLICATE_RETENTION_DAYS", float),
    ("max_record_bytes", "MARGINSTREAM_MAX_RECORD_BYTES", int),
    ("max_open_orders", "MARGINSTREAM_MAX_OPEN_ORDERS", int),
    ("web_port", "MARGINSTREAM_WEB_PORT", int),
    ("web_host", "MARGINSTREAM_WEB_HOST", str),
    ("web_bind", "MARGINSTREAM_WEB_BIND", str),
]


def _token(env: Mapping[str, str]) -> str | None:
    """The web views' bearer token: MARGINSTREAM_WEB_TOKEN, or the file that
    MARGINSTREAM_WEB_TOKEN_FILE names (surrounding whitespace stripped); None for none."""
    token, path = env.get("MARGINSTREAM_WEB_TOKEN"), env.get("MARGINSTREAM_WEB_TOKEN_FILE")
    if token and path:
        raise SettingsError("set MARGINSTREAM_WEB_TOKEN or MARGINSTREAM_WEB_TOKEN_FILE, not both")
    if path:
        try:
            token = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = f"MARGINSTREAM_WEB_TOKEN_FILE: cannot read {path}: {error}"
            raise SettingsError(reason) from None
        if not token:
            raise SettingsError(f"MARGINSTREAM_WEB_TOKEN_FILE: {path} is empty")
    elif token is not None:
        token = token.strip()
    if token and not (token.isascii() and token.isprintable() and " " not in token):
        raise SettingsError("the web token must be printable ASCII, without spaces")
    return token or None
