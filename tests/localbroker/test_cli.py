"""`marginstream kafka up|down|status` as a user runs them: real processes, real ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from marginstream.localbroker import KAFKA_VERSION, LocalBroker, free_port, metadata_ok
from marginstream.localbroker.jars import pom_kafka_version, pom_text
from marginstream.localbroker.server import ephemeral_ports
from tests.kafka_admin import topic_names


def marginstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "marginstream", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=180,
        check=False,
    )


def kafka_processes_on(data_dir: Path) -> list[int]:
    """Every live process whose command line names data_dir (however it was started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(data_dir).encode() in cmdline and b"kafka.Kafka" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_up_status_down_leaves_no_process(tmp_path: Path):
    port, data_dir = free_port(), tmp_path / "broker"
    where = ["--port", str(port), "--data-dir", str(data_dir)]

    up = marginstream("kafka", "up", *where)
    assert up.returncode == 0, up.stderr
    assert f"Kafka {KAFKA_VERSION} up" in up.stdout
    pid = json.loads((data_dir / "broker.pid").read_text())["pid"]
    assert kafka_processes_on(data_dir) == [pid]
    assert metadata_ok(f"127.0.0.1:{port}")

    status = marginstream("kafka", "status", *where)
    assert status.returncode == 0 and f"running: pid {pid}" in status.stdout

    again = marginstream("kafka", "up", *where)  # idempotent: the same broker, no second one
    assert again.returncode == 0 and "already running" in again.stdout
    assert kafka_processes_on(data_dir) == [pid]

    down = marginstream("kafka", "down", *where)
    assert down.returncode == 0 and "Kafka stopped" in down.stdout
    assert kafka_processes_on(data_dir) == []
    assert not metadata_ok(f"127.0.0.1:{port}", timeout=1.0)
    # Kafka writes this marker only at the end of a clean shutdown.
    assert (data_dir / "kraft" / ".kafka_cleanshutdown").exists()
    assert not (data_dir / "broker.pid").exists()

    after = marginstream("kafka", "status", *where)
    assert after.returncode == 3 and "not running" in after.stdout


def test_restart_reuses_the_formatted_storage_and_keeps_topics(tmp_path: Path):
    broker = LocalBroker(port=free_port(), data_dir=tmp_path / "broker")
    broker.start()
    try:
        meta = (broker.kraft_dir / "meta.properties").read_text()
        _create_topic(broker.bootstrap, "kept-across-restarts")
    finally:
        broker.stop()
    broker.start()
    try:
        assert (broker.kraft_dir / "meta.properties").read_text() == meta  # not re-formatted
        assert "kept-across-restarts" in topic_names(broker.bootstrap)
    finally:
        broker.stop()
    assert kafka_processes_on(broker.data_dir) == []


def _create_topic(bootstrap: str, name: str) -> None:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, 1, 1)])
        finally:
            await admin.close()

    asyncio.run(create())


def test_port_taken_is_one_clear_line(tmp_path: Path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", free_port()))  # outside the ephemeral range: no warning
        squatter.listen()
        port = squatter.getsockname()[1]
        result = marginstream("kafka", "up", "--port", str(port), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"marginstream: error: port {port} on 127.0.0.1 (broker port) is already in use"
    )
    assert kafka_processes_on(tmp_path) == []


def test_a_port_in_the_ephemeral_range_is_warned_about(tmp_path: Path):
    """A broker port the kernel may give an outgoing connection: one warning line, which
    names the self-connect risk, before anything else (here: the port is taken, by a
    socket bound to port 0, which the kernel takes from that very range)."""
    low, high = ephemeral_ports()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert low <= port <= high
        result = marginstream("kafka", "up", "--port", str(port), "--data-dir", str(tmp_path))
    warning, error = result.stderr.strip().splitlines()
    assert warning.startswith(f"marginstream: warning: port {port} is in the kernel's ephemeral")
    assert "connect to itself" in warning
    assert error.startswith("marginstream: error: port")
    assert result.returncode == 1


def test_free_ports_are_outside_the_ephemeral_range():
    low, high = ephemeral_ports()
    ports = {free_port() for _ in range(200)}
    assert not [p for p in ports if low <= p <= high]
    assert len(ports) > 150  # spread out, not one port again and again
    for port in list(ports)[:20]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


def test_missing_java_is_one_clear_line(tmp_path: Path):
    result = marginstream(
        "kafka",
        "up",
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path),
        env={"PATH": "", "JAVA_HOME": ""},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("marginstream: error: java not found")
    assert len(result.stderr.strip().splitlines()) == 1


def test_broker_that_cannot_start_reports_its_log_tail(tmp_path: Path):
    # A 1 KiB heap: the JVM refuses to start, as a broken broker would die early.
    result = marginstream(
        "kafka",
        "up",
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path),
        env={"MARGINSTREAM_KAFKA_HEAP": "1k"},
    )
    assert result.returncode == 1
    first, *tail = result.stderr.strip().splitlines()
    assert first.startswith("marginstream: error: the broker exited with code 1 before it answered")
    assert any("Too small maximum heap" in line for line in tail)
    assert kafka_processes_on(tmp_path) == []


def test_data_dir_in_use_on_another_port_is_refused(tmp_path: Path):
    broker = LocalBroker(port=free_port(), data_dir=tmp_path)
    broker.start()
    try:
        other = free_port()
        result = marginstream("kafka", "up", "--port", str(other), "--data-dir", str(tmp_path))
        assert result.returncode == 1
        assert f"is in use by broker pid {broker.running_pid()} on port {broker.port}" in (
            result.stderr
        )
    finally:
        broker.stop()


def test_stale_pid_file_is_never_trusted(tmp_path: Path):
    # A pid file naming a live process that is not our broker (this test itself).
    (tmp_path / "broker.pid").write_text(json.dumps({"pid": os.getpid(), "port": 1}))
    broker = LocalBroker(port=free_port(), data_dir=tmp_path)
    assert broker.running_pid() is None
    assert broker.stop() is False  # and nothing was signalled: we are still here


def test_pom_and_code_name_the_same_kafka_version():
    assert pom_kafka_version(pom_text()) == KAFKA_VERSION


@pytest.mark.parametrize("args", [["kafka"], ["kafka", "sideways"]])
def test_bad_usage_exits_two(args: list[str]):
    assert marginstream(*args).returncode == 2


def test_up_secure_serves_only_clients_that_log_in(tmp_path: Path):
    port, data_dir = free_port(), tmp_path / "broker"
    where = ["--port", str(port), "--data-dir", str(data_dir)]
    up = marginstream("kafka", "up", "--secure", *where)
    try:
        assert up.returncode == 0, up.stderr
        env_file = data_dir / "secure" / "client.env"
        assert f"clients take the variables in {env_file}" in up.stdout
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert not metadata_ok(f"127.0.0.1:{port}")  # no credentials: refused
        status = marginstream("kafka", "status", *where)  # status logs in as admin
        assert status.returncode == 0 and "answering metadata requests" in status.stdout

        events = tmp_path / "events.jsonl"
        events.write_text('{"topic": "orders", "key": "a", "value": {"type": "cancel"}}\n')
        produce = ["produce", str(events), "--bootstrap-servers", f"127.0.0.1:{port}"]
        sent = marginstream(*produce, "--create-topics", "1", env=env)
        assert sent.returncode == 0, sent.stderr
        refused = marginstream(*produce, env={**env, "KAFKA_SASL_PASSWORD": "wrong"})
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1, refused.stderr  # one line
        assert refused.stderr.startswith(
            "marginstream: error: Kafka refused the credentials of 'marginstream' (SCRAM-SHA-512)"
        ), refused.stderr
    finally:
        assert marginstream("kafka", "down", *where).returncode == 0
    assert kafka_processes_on(data_dir) == []
