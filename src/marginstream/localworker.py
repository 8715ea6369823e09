"""A worker (`faust -A marginstream.app worker`) run as a local process, for the demo,
the tests and the benchmarks: start, wait until ready, read its web views, stop or kill -9;
and a deployment of such workers isolated on a shared broker by its own topic prefix.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from marginstream.feeds.driver import lag, wait_applied
from marginstream.localbroker import free_port
from marginstream.stream.topics import TopicNames


class WorkerError(RuntimeError):
    """The worker exited or did not become ready; the message ends with its log tail."""


class LocalWorker:
    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        env: dict[str, str],
        port: int | None = None,
        log_level: str = "info",
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = env
        self.port = port or free_port()
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []  # more `faust worker` options
        log_path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, fault: str | None = None) -> LocalWorker:
        env = {**os.environ, **self.env}
        env.pop("MARGINSTREAM_FAULT", None)
        if fault:
            env["MARGINSTREAM_FAULT"] = fault
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {time.strftime('%X')} fault={fault} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "faust", "-A", "marginstream.app", "--datadir",
                 str(self.data_dir), "worker", "-l", self.log_level, "--web-host",
                 "127.0.0.1", "--web-port", str(self.port), *self.extra_args],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def pause(self) -> None:
        """SIGSTOP: frozen as a stalled VM or a long GC would be (resume() to go on)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (a clean faust shutdown), SIGKILL if it takes longer than timeout."""
        if not self.alive():
            return
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        os.killpg(self.process.pid, signal.SIGCONT)  # a paused worker handles it only now
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def wait_exit(self, timeout: float = 120.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def get(
        self, path: str, timeout: float = 10.0, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """GET path: (status, JSON body). With the worker's web token unless headers are
        given."""
        if headers is None:
            token = self.env.get("MARGINSTREAM_WEB_TOKEN")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def health(self) -> dict[str, Any] | None:
        try:
            status, body = self.get("/health/", timeout=2.0)
        except (OSError, ValueError):
            return None
        return body if status == 200 else None

    def wait_ready(self, timeout: float = 120.0, partitions: int | None = None) -> dict[str, Any]:
        """Wait for /health/ to say ok (and, if given, for that many assigned partitions)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise WorkerError(f"the worker exited:\n{self.log_tail()}")
            health = self.health()
            ready = health is not None and health["status"] == "ok"
            if ready and (partitions is None or len(health["assigned"]) == partitions):
                return health
            time.sleep(0.2)
        raise WorkerError(f"the worker was not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class LocalDeployment:
    """One isolated engine on a shared broker: its own topic prefix, app id (consumer
    group) and worker directories, so that tests and benchmarks never see each other."""

    bootstrap: str
    root: Path
    partitions: int = 8
    extra_env: dict[str, str] = field(default_factory=dict)
    label: str = "d"  # starts the prefix and app id: which suite made the topics
    log_level: str = "info"
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    app_name: str | None = None  # the app id; by default one as unique as the prefix
    workers: list[LocalWorker] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"{self.label}{self.tag}-"

    @property
    def app_id(self) -> str:
        return self.app_name or f"ms-{self.label}{self.tag}"

    @property
    def names(self) -> TopicNames:
        """Every name the deployment's workers use: topics, groups, changelog."""
        return TopicNames(self.prefix, self.app_id)

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "MARGINSTREAM_TOPIC_PREFIX": self.prefix,
            "MARGINSTREAM_APP_ID": self.app_id,
            "MARGINSTREAM_PARTITIONS": str(self.partitions),
            "MARGINSTREAM_SESSION_TIMEOUT": "6",
            **self.extra_env,
        }

    def worker(self, name: str) -> LocalWorker:
        directory = self.root / name
        worker = LocalWorker(
            directory / "data", directory / "worker.log", self.env(), log_level=self.log_level
        )
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()

    def wait_applied(self, timeout: float = 300.0) -> float:
        """Wait until everything produced is applied; GaveUp if no worker is left alive."""

        def nobody_left() -> bool:
            return bool(self.workers) and not any(w.alive() for w in self.workers)

        consumed = self.names.consumed()
        return asyncio.run(wait_applied(self.bootstrap, consumed, timeout, nobody_left))

    def lag(self) -> int:
        """Records produced to the engine's inputs and not yet applied (committed)."""

        async def measure() -> int:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                return await lag(admin, self.bootstrap, self.names.consumed())
            finally:
                await admin.close()

        return asyncio.run(measure())
