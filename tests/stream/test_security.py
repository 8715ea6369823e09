"""Kafka with SASL/SCRAM-SHA-512 over TLS: a worker with the right credentials processes
records, one with wrong ones stops with one line, and the broker refuses clients that do not
log in or do not trust its CA. One secure broker (SASL_SSL only) serves the whole module."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context

from marginstream.feeds.driver import wait_applied
from marginstream.localbroker import LocalBroker, free_port
from marginstream.localbroker.secure import BrokerSecurity, make_pki
from marginstream.stream.security import KafkaSecurity, refusal
from tests.stream.harness import Deployment, Reference, live_states

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENT = orjson.loads(
    (ROOT / "tests/fixtures/format1/inputs.jsonl").read_bytes().split(b"\n")[0]
)
TS = 1795000001000


def order(order_id: str, qty: str, ts: int) -> dict[str, Any]:
    value = {"type": "order", "order_id": order_id, "account": "alice", "symbol": "BTC-PERP",
             "side": "buy", "qty": qty, "price": "60000", "ts": ts}  # fmt: skip
    return {"topic": "orders", "key": "alice", "value": value}


MARKET_AND_DEPOSIT = [
    INSTRUMENT,
    {"topic": "prices", "key": "BTC",
     "value": {"type": "index", "underlying": "BTC", "price": "60000", "ts": TS}},
    {"topic": "prices", "key": "BTC-PERP",
     "value": {"type": "mark", "symbol": "BTC-PERP", "price": "60000", "ts": TS}},
    {"topic": "transfers", "key": "alice",
     "value": {"type": "deposit", "transfer_id": "dep-alice", "account": "alice",
               "amount": "10000", "ts": TS + 1}},
]  # fmt: skip
ORDERS = [order("o1", "1", TS + 2), order("o2", "100", TS + 3)]  # the second: too large


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    root = tmp_path_factory.mktemp("secure-kafka")
    users = {"admin": secrets.token_hex(12), "worker": secrets.token_hex(12)}
    security = BrokerSecurity(make_pki(root / "pki"), users)
    broker = LocalBroker(port=free_port(), data_dir=root / "kafka", security=security)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def security_of(broker: LocalBroker) -> BrokerSecurity:
    assert broker.security is not None
    return broker.security


def produce_cli(lines: list[dict[str, Any]], broker: LocalBroker, prefix: str, env: dict[str, str],
                path: Path) -> subprocess.CompletedProcess:  # fmt: skip
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return subprocess.run(
        [sys.executable, "-m", "marginstream", "produce", str(path),
         "--bootstrap-servers", broker.bootstrap, "--prefix", prefix],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def committed_values(bootstrap: str, topic: str, options: dict[str, Any]) -> list[Any]:
    """Every committed record of topic, as a read_committed consumer sees it."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, isolation_level="read_committed", **options,
    )  # fmt: skip
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while not consumer.assignment():
                await asyncio.sleep(0.05)
            await consumer.seek_to_beginning()
            ends = await consumer.end_offsets(list(consumer.assignment()))
            values = []
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    values += [orjson.loads(m.value) for m in messages]
        return values
    finally:
        await consumer.stop()


def test_a_worker_with_the_right_credentials_processes_records(
    secure_broker: LocalBroker, tmp_path: Path
):
    security = security_of(secure_broker)
    env = security.client_env("worker")
    deployment = Deployment(secure_broker.bootstrap, tmp_path, partitions=2, extra_env=env)
    options = KafkaSecurity.from_env(env).options()
    reference = Reference.of(MARKET_AND_DEPOSIT + ORDERS)
    try:
        worker = deployment.worker("w1").start()
        worker.wait_ready(timeout=90, partitions=2)
        consumed = deployment.names.consumed()
        for number, run in enumerate((MARKET_AND_DEPOSIT, ORDERS)):
            sent = produce_cli(
                run, secure_broker, deployment.prefix, env, tmp_path / f"{number}.jsonl"
            )
            assert sent.returncode == 0, sent.stderr
            asyncio.run(wait_applied(secure_broker.bootstrap, consumed, 60, **options))

        decisions = asyncio.run(
            committed_values(secure_broker.bootstrap, deployment.prefix + "decisions", options)
        )
        expected = [value for topic, value in reference.outputs if topic == "decisions"]
        assert [d["decision_id"] for d in expected] == ["alice:decision:1", "alice:decision:2"]
        accepted = {d["decision_id"]: d["accepted"] for d in decisions}
        assert accepted == {"alice:decision:1": True, "alice:decision:2": False}
        assert decisions == expected
        assert live_states(worker, reference.states) == reference.states
    finally:
        deployment.stop_all()


def run_worker(
    env: dict[str, str], data_dir: Path, timeout: float = 30.0
) -> tuple[int, str, float]:
    """A worker process on the secure broker: (exit status, everything it printed, seconds)."""
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "marginstream.app", "--datadir", str(data_dir),
         "worker", "-l", "info", "--web-host", "127.0.0.1", "--web-port", str(free_port())],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr, time.monotonic() - began


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"KAFKA_SASL_PASSWORD": "wrong-password"},
         "Kafka refused the credentials of 'worker' (SCRAM-SHA-512)"),
        ({"KAFKA_SASL_USERNAME": "nobody"},
         "Kafka refused the credentials of 'nobody' (SCRAM-SHA-512)"),
        ({"KAFKA_SSL_CAFILE": "other-ca"}, "is not trusted ("),
    ],
    ids=["wrong-password", "unknown-user", "untrusted-ca"],
)  # fmt: skip
def test_a_worker_the_broker_refuses_exits_2_with_one_line(
    secure_broker: LocalBroker, tmp_path: Path, change: dict[str, str], reason: str
):
    env = {
        **security_of(secure_broker).client_env("worker"),
        "KAFKA_BOOTSTRAP_SERVERS": secure_broker.bootstrap,
        "MARGINSTREAM_TOPIC_PREFIX": f"refused{secrets.token_hex(3)}-",
        "MARGINSTREAM_PARTITIONS": "2",
        **change,
    }
    if env["KAFKA_SSL_CAFILE"] == "other-ca":
        env["KAFKA_SSL_CAFILE"] = str(make_pki(tmp_path / "other-pki").ca)
    status, output, seconds = run_worker(env, tmp_path / "data")
    errors = [line for line in output.splitlines() if "marginstream: error:" in line]
    assert status == 2, output[-3000:]
    assert len(errors) == 1, errors
    assert reason in errors[0], errors[0]
    assert ("KAFKA_SSL_CAFILE" if "CAFILE" in str(change) else "KAFKA_SASL_PASSWORD") in errors[0]
    assert env.get("KAFKA_SASL_PASSWORD", "") not in output
    assert seconds < 30


async def start_admin(bootstrap: str, **options: Any) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **options)
    try:
        async with asyncio.timeout(30):
            await admin.start()
            return await admin.list_topics()
    finally:
        await admin.close()


def test_a_client_without_credentials_is_refused(secure_broker: LocalBroker):
    bootstrap, ca = secure_broker.bootstrap, str(security_of(secure_broker).pki.ca)
    # The same client logged in is served: what follows fails for want of credentials.
    logged_in = secure_broker.client_options("worker")
    assert isinstance(asyncio.run(start_admin(bootstrap, **logged_in)), list)
    with pytest.raises(KafkaConnectionError):
        asyncio.run(start_admin(bootstrap))  # PLAINTEXT to the SASL_SSL listener
    tls_only = {"security_protocol": "SSL", "ssl_context": create_ssl_context(cafile=ca)}
    with pytest.raises(KafkaConnectionError):  # TLS, trusted, but no SASL
        asyncio.run(start_admin(bootstrap, **tls_only))
    with pytest.raises(KafkaConnectionError):  # SASL PLAIN is not enabled, SCRAM is
        asyncio.run(start_admin(bootstrap, **{**logged_in, "sasl_mechanism": "PLAIN"}))


def test_a_client_that_does_not_trust_the_ca_fails_tls(secure_broker: LocalBroker, tmp_path: Path):
    security = security_of(secure_broker)
    env = security.client_env("worker")
    for cafile in ("", str(make_pki(tmp_path / "other-pki").ca)):  # the system's CAs, another CA
        untrusting = KafkaSecurity.from_env({**env, "KAFKA_SSL_CAFILE": cafile})
        with pytest.raises(KafkaConnectionError):
            asyncio.run(start_admin(secure_broker.bootstrap, **untrusting.options()))
        reason = asyncio.run(refusal(secure_broker.bootstrap, untrusting))
        assert reason is not None
        assert "is not trusted" in reason
    trusting = KafkaSecurity.from_env(env)
    assert asyncio.run(refusal(secure_broker.bootstrap, trusting)) is None
    assert isinstance(asyncio.run(start_admin(secure_broker.bootstrap, **trusting.options())), list)
