"""A single-node Apache Kafka broker in KRaft mode, run straight on the JVM.

One data directory holds one broker: its server.properties, its Log4j 2
configuration, its KRaft log directory, its logs and a pid file. The pid file
is trusted only when /proc shows that pid running kafka.Kafka on this very
directory's server.properties, so a recycled pid is never signalled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marginstream.localbroker.errors import BrokerError
from marginstream.localbroker.jars import KAFKA_VERSION, ensure_jars
from marginstream.localbroker.secure import BrokerSecurity

MIN_JAVA = 17
DEFAULT_HEAP = "512m"
LOG_TAIL_LINES = 25

_LOG4J2 = """\
status = warn
shutdownHook = disable
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


# What every single-node KRaft broker of ours needs, whatever its listeners (the local
# broker here, and the compose setup's, docker/make_secrets.py).
SINGLE_NODE = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    # One broker: every internal topic must accept a replication factor of 1,
    # or consumer groups and Kafka transactions never become available.
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # Sessions down to 1 s (Kafka's least is 6 s): a test can outlast one in seconds.
    "group.min.session.timeout.ms": "1000",
    # Topics are created on purpose, with their partition counts: a client's metadata
    # request must never create one with the broker's default of 1.
    "auto.create.topics.enable": "false",
}


def _server_properties(
    port: int, controller_port: int, log_dirs: Path, security: BrokerSecurity | None = None
) -> str:
    settings = {
        **SINGLE_NODE,
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dirs),
    }
    if security is not None:
        settings.update(security.properties(port, controller_port))
    return properties_text(settings)


def properties_text(settings: dict[str, str]) -> str:
    """A .properties file: no comments after values (they would be part of the value),
    and inline PEM values, which span lines, with their newlines as \\n."""
    return "".join(f"{key}={value}".replace("\n", "\\n") + "\n" for key, value in settings.items())


def kafka_uuid() -> str:
    """A cluster id as Kafka's Uuid.randomUuid() makes one (URL-safe base64, never '-' first)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def find_java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError(
            f"java not found (JAVA_HOME or PATH): Kafka {KAFKA_VERSION} needs a Java "
            f"{MIN_JAVA}+ runtime (e.g. `apt install openjdk-17-jre-headless`)"
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        raise BrokerError(f"could not read the version of {java}: {result.stderr.strip()}")
    major = int(match.group(1)) if match.group(1) != "1" else int(match.group(2) or 0)
    if major < MIN_JAVA:
        raise BrokerError(f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+")
    return java


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like the JVM's ServerSocket: a port left in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL_DEFAULT = (32768, 60999)


def ephemeral_ports(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux's default if unknown)."""
    try:
        low, high = (int(n) for n in path.read_text().split())
    except (OSError, ValueError):
        return LINUX_EPHEMERAL_DEFAULT
    return low, high


def in_ephemeral_range(port: int) -> bool:
    low, high = ephemeral_ports()
    return low <= port <= high


def ephemeral_warning(port: int) -> str | None:
    """Why a broker should not listen on port (None if it may)."""
    if not in_ephemeral_range(port):
        return None
    low, high = ephemeral_ports()
    return (
        f"warning: port {port} is in the kernel's ephemeral range {low}-{high} "
        f"(/proc/sys/net/ipv4/ip_local_port_range): while the broker is down, a client "
        f"reconnecting to 127.0.0.1:{port} can be given {port} as its own source port and "
        f"connect to itself, and the port may be taken by an outgoing connection when the "
        f"broker restarts; prefer a port outside that range (e.g. 9092)"
    )


def free_port() -> int:
    """A free port on 127.0.0.1 outside the kernel's ephemeral range, so that no client's
    outgoing connection can take it, or connect to itself on it while nothing listens."""
    low, high = ephemeral_ports()
    candidates = [p for p in range(10000, 65536) if not low <= p <= high]
    chooser = random.SystemRandom()
    for _ in range(200):
        port = chooser.choice(candidates) if candidates else 0
        if port and port_is_free(port) and _bindable(port):
            return port
    raise BrokerError(f"no free port on 127.0.0.1 outside the ephemeral range {low}-{high}")


def _bindable(port: int) -> bool:
    """Free without SO_REUSEADDR too (not even in TIME_WAIT): nobody has used it lately."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def metadata_ok(bootstrap: str, timeout: float = 2.0, **options: Any) -> bool:
    """True when the broker answers a metadata request listing at least one broker
    (options: the client's security keyword arguments, if any)."""
    from aiokafka.client import AIOKafkaClient  # noqa: PLC0415 (kept off the CLI's start-up path)
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    async def probe() -> bool:
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout * 1000),
            metadata_max_age_ms=60_000,
            **options,
        )
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
            return bool(client.cluster.brokers())
        except (KafkaError, OSError, TimeoutError):
            return False
        finally:
            await client.close()

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # a broker still starting is expected, not an error
    try:
        return asyncio.run(probe())
    finally:
        quiet.setLevel(level)


def _process_state(pid: int) -> str | None:
    """The /proc state letter of pid, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    return _process_state(pid) not in (None, "Z", "X")


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    port: int | None
    answering: bool
    data_dir: Path

    def describe(self) -> str:
        if not self.running:
            return f"not running (data dir {self.data_dir})"
        health = "answering metadata requests" if self.answering else "NOT answering"
        return (
            f"running: pid {self.pid}, bootstrap 127.0.0.1:{self.port}, {health}, "
            f"Kafka {KAFKA_VERSION}, data dir {self.data_dir}"
        )


@dataclass
class LocalBroker:
    port: int
    data_dir: Path
    heap: str = field(
        default_factory=lambda: os.environ.get("MARGINSTREAM_KAFKA_HEAP", DEFAULT_HEAP)
    )
    # None: one PLAINTEXT listener. Else one SASL_SSL listener with SCRAM users (secure.py).
    security: BrokerSecurity | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_options(self, user: str | None = None) -> dict[str, Any]:
        """aiokafka keyword arguments for a client of this broker (as user, in secure mode)."""
        return {} if self.security is None else self.security.client_options(user)

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def kraft_dir(self) -> Path:
        return self.data_dir / "kraft"

    @property
    def server_log(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def console_log(self) -> Path:
        return self.data_dir / "console.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "broker.pid"

    # -- inspection ---------------------------------------------------------------

    def _pid_record(self) -> dict[str, int] | None:
        try:
            record = json.loads(self.pid_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        pid = record.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return None
        ours = b"kafka.Kafka" in cmdline and str(self.properties_path).encode() in cmdline
        return record if ours else None

    def running_pid(self) -> int | None:
        record = self._pid_record()
        return record["pid"] if record else None

    def status(self) -> BrokerStatus:
        record = self._pid_record()
        if record is None:
            return BrokerStatus(False, None, None, False, self.data_dir)
        port = int(record["port"])
        answering = metadata_ok(f"127.0.0.1:{port}", **self.client_options())
        return BrokerStatus(True, record["pid"], port, answering, self.data_dir)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        parts = []
        for path in (self.console_log, self.server_log):
            if path.exists() and path.stat().st_size:
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts) or f"(no log written in {self.data_dir})"

    # -- start ----------------------------------------------------------------------

    def _previous_controller_port(self) -> int | None:
        """The controller port chosen at format time: the KRaft voter set records it."""
        if not self.properties_path.exists():
            return None
        match = re.search(
            r"^controller\.quorum\.bootstrap\.servers=127\.0\.0\.1:(\d+)$",
            self.properties_path.read_text(),
            re.MULTILINE,
        )
        return int(match.group(1)) if match else None

    def _format_storage(self, java: str, jars: Path) -> None:
        if (self.kraft_dir / "meta.properties").exists():
            return
        command = [
            java,
            "-cp",
            f"{jars}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            kafka_uuid(),
            "-c",
            str(self.properties_path),
            "--standalone",
            *(self.security.scram_arguments() if self.security else []),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(
                f"kafka-storage format failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )

    def start(self, timeout: float = 90.0) -> int:
        """Start the broker in the background and return its pid once it answers metadata."""
        java = find_java()
        existing = self._pid_record()
        if existing is not None:
            if existing["port"] == self.port:
                return existing["pid"]
            raise BrokerError(
                f"{self.data_dir} is in use by broker pid {existing['pid']} on port "
                f"{existing['port']}; stop it first (marginstream kafka down --port "
                f"{existing['port']} --data-dir {self.data_dir})"
            )
        controller_port = self._previous_controller_port() or free_port()
        for taken in (p for p in (self.port, controller_port) if not port_is_free(p)):
            role = "broker" if taken == self.port else "controller (fixed at format time)"
            raise BrokerError(f"port {taken} on 127.0.0.1 ({role} port) is already in use")
        jars = ensure_jars()

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(
            _server_properties(self.port, controller_port, self.kraft_dir, self.security)
        )
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2.format(log=self.server_log))
        self._format_storage(java, jars)

        command = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{jars}/*",
            "kafka.Kafka",
            str(self.properties_path),
        ]
        with self.console_log.open("wb") as console:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `marginstream kafka up`; Ctrl-C spares it
            )
        pid = self._process.pid
        self.pid_path.write_text(
            json.dumps({"pid": pid, "port": self.port, "controller_port": controller_port})
        )
        self._wait_until_answering(timeout)
        return pid

    def _wait_until_answering(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {self._process.returncode} before it "
                    f"answered on {self.bootstrap}\n{self.log_tail()}"
                )
            if metadata_ok(self.bootstrap, timeout=1.0, **self.client_options()):
                return
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise BrokerError(
            f"the broker did not answer on {self.bootstrap} within {timeout:.0f}s\n{tail}"
        )

    # -- stop -----------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after timeout); False if none was running."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> bool:
        """kill -9 the broker, as a crash would (for failure tests); False if none ran."""
        return self._end(signal.SIGKILL, 10.0)

    def _end(self, signum: int, timeout: float) -> bool:
        pid = self.running_pid()
        if pid is None:
            self._reap()
            self.pid_path.unlink(missing_ok=True)
            return False
        self._signal(pid, signum)
        if not self._wait_gone(pid, timeout):
            self._signal(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10.0):
                raise BrokerError(f"broker pid {pid} survived SIGKILL")
        self.pid_path.unlink(missing_ok=True)
        return True

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._reap() or _alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _reap(self) -> bool:
        """Collect our own child's exit status; True while it still runs."""
        if self._process is None:
            return False
        if self._process.poll() is None:
            return True
        self._process = None
        return False

    @staticmethod
    def _signal(pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            # The broker leads its own session: signal the whole group.
            os.killpg(pid, signum)
