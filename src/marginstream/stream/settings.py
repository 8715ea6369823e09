"""Worker settings, from the environment (docs/configuration.md; ranges in bounds.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from decimal import Decimal
from typing import Any

from marginstream.core.engine import DAY_MS, MAX_OPEN_ORDERS, EngineConfig
from marginstream.core.inputs.intake import MAX_RECORD_BYTES
from marginstream.core.liquidation.closeout import LiquidationPolicy
from marginstream.core.outputs.alerts import Thresholds
from marginstream.stream import bounds
from marginstream.stream.bounds import SettingsError
from marginstream.stream.security import KafkaSecurity, SecurityError

__all__ = ["SettingsError", "StreamSettings", "engine_config", "from_env_or_exit"]

# How long a fetch may wait at the broker for data (Kafka's fetch.max.wait.ms; aiokafka's
# default is 500 ms). aiokafka sends one fetch at a time, covering only the partitions
# with nothing buffered: a record for another one waits for that fetch to expire. With
# 500 ms, orders at a steady 1,000/s were handed over in bursts of 600 after 0.4 s waits
# (bench.latency's p99); an idle worker now asks about 50 times a second instead.
FETCH_MAX_WAIT_MS = 20


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
        """Settings made in code get the environment's ranges too (bounds.py)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        _check(values)
        try:
            engine = engine_config(values)
        except ValueError as error:  # the core's own checks: unreachable past the table's
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
        """Through the table of bounds.py: SettingsError, one line, for a value out of range."""
        env = os.environ if env is None else env
        values = _read(env)
        try:
            values["security"] = KafkaSecurity.from_env(env)
        except SecurityError as error:
            raise SettingsError(str(error)) from None
        return cls(**values)


DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(StreamSettings) if f.init and f.default is not MISSING
}


def engine_config(values: Mapping[str, Any]) -> EngineConfig:
    """The core's configuration from the settings that change outputs or state (the
    defaults for those values lacks). One function for the worker and for `marginstream
    replay`, so that the reference is built exactly as the live engines are."""
    v = {**DEFAULTS, **values}
    thresholds = Thresholds(v["margin_call"], v["liquidation"])
    policy = LiquidationPolicy(
        v["liquidation_target"], v["liquidation_pricing"], v["liquidation_penalty"],
        v["liquidation_lot"], v["liquidation_reissue_ms"],
    )  # fmt: skip
    retention_ms = int(v["duplicate_retention_days"] * DAY_MS)
    return EngineConfig(
        thresholds, retention_ms, v["partitions"], v["max_open_orders"], liquidation=policy
    )


def _read(env: Mapping[str, str]) -> dict[str, Any]:
    """The fields the environment sets (an empty variable is unset), each inside its
    range; SettingsError, with the one line, for the first that is not."""
    values: dict[str, Any] = {}
    given: dict[str, bounds.Setting] = {}
    raws: dict[str, str] = {}
    for setting in bounds.SETTINGS:
        raw = env.get(setting.variable)
        if raw is None or raw == "":
            continue
        if (earlier := given.get(setting.field)) is not None:  # the token and its file
            raise setting.refused(raw, f"{earlier.variable} is set too: set one of them")
        try:
            value = setting.value_of(raw)
        except ValueError as error:
            raise setting.refused(raw, str(error)) from None
        values[setting.field], given[setting.field], raws[setting.variable] = value, setting, raw
    found = bounds.relation_problem(given.values(), {**DEFAULTS, **values}, lambda s: s.variable)
    if found is not None:
        raise found[0].refused(raws[found[0].variable], found[1])
    return values


def _check(values: Mapping[str, Any]) -> None:
    """The same ranges on values already parsed (settings made in code, as tests do)."""
    for setting in bounds.SETTINGS:
        value = values.get(setting.field)
        if value is not None and (problem := setting.problem(value)) is not None:
            raise setting.refused(str(value), problem)
    found = bounds.relation_problem(bounds.SETTINGS, values, lambda s: s.variable)
    if found is not None:
        raise found[0].refused(str(values[found[0].field]), found[1])


def from_env_or_exit(env: Mapping[str, str] | None = None) -> StreamSettings:
    """The worker's settings; for a value it cannot use, one line on stderr and exit
    status 2, as for every other reason not to start (never a traceback)."""
    try:
        return StreamSettings.from_env(env)
    except SettingsError as error:
        line = " ".join(str(error).splitlines())  # every value is shown escaped: a last guard
        print(f"marginstream: error: {line}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
