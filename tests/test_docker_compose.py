"""The Docker deployment refers only to things that exist in this repository.

There is no Docker engine here to run it, so this checks what can be checked
without one: every build context, Dockerfile, COPY source, command and module the
compose file and the image refer to.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from marginstream.cli import build_parser
from marginstream.stream.security import KafkaSecurity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docker"))
from make_secrets import BROKER, WORKER_USER

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)


def _commands(service: dict) -> list[list[str]]:
    command = service.get("command", [])
    if isinstance(command, str):
        command = shlex.split(command)
    if command[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in command[2].split("&&")]
    return [command]


def _check_command(words: list[str], image: str | None = None) -> None:
    program = words[0]
    if image and image.startswith("apache/kafka:") and program.startswith("/opt/kafka/bin/"):
        return  # the Kafka image's own tools
    if program == "faust":
        module = words[words.index("-A") + 1]
        path = ROOT / "src" / Path(*module.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), module
    elif program == "marginstream":
        assert words[1] in _subcommands(), words
    else:
        raise AssertionError(f"unexpected program {program!r} in {words}")


def test_every_build_context_and_dockerfile_exists():
    builds = [s["build"] for s in COMPOSE["services"].values() if "build" in s]
    assert len(builds) == 3  # two workers and the demo feed
    for build in builds:
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).is_file()


def test_two_workers_a_broker_and_the_demo_feed():
    services = COMPOSE["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka-init"]["image"] == services["kafka"]["image"]
    assert BROKER["process.roles"] == "broker,controller"  # in its mounted server.properties
    workers = [s for s in services.values() if "faust" in s.get("command", [])]
    assert len(workers) == 2
    assert {w["command"][w["command"].index("--web-host") + 1] for w in workers} == {
        "worker-1",
        "worker-2",
    }


def test_every_command_refers_to_a_real_module_or_subcommand():
    for service in COMPOSE["services"].values():
        if "command" in service:
            for words in _commands(service):
                _check_command(words, service.get("image"))
    dockerfile = (DOCKER / "worker.Dockerfile").read_text()
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    _check_command(yaml.safe_load(cmd[4:]))


def test_every_file_the_image_copies_exists():
    dockerfile = (DOCKER / "worker.Dockerfile").read_text()
    sources = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source


def test_every_named_volume_is_declared():
    declared = set(COMPOSE.get("volumes", {}))
    for service in COMPOSE["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), source
            else:
                assert source in declared, source


def test_every_kafka_client_logs_in_with_scram_over_tls(tmp_path: Path):
    """Workers and the feed share one SASL_SSL login; the secrets they name are declared
    and written by make_secrets.py, and the broker is configured to match."""
    secrets = tmp_path / "secrets"
    subprocess.run(
        [sys.executable, str(DOCKER / "make_secrets.py"), "--out", str(secrets)], check=True
    )
    declared = COMPOSE["secrets"]
    clients = [s for s in COMPOSE["services"].values() if "build" in s]
    assert len(clients) == 3
    for client in clients:
        env = client["environment"]
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["KAFKA_SASL_USERNAME"] == WORKER_USER
        assert set(client["secrets"]) == {"kafka-worker-password", "kafka-ca"}
        files = {f"/run/secrets/{name}": secrets / Path(declared[name]["file"]).name
                 for name in client["secrets"]}  # fmt: skip
        local = {k: str(files.get(v, v)) for k, v in env.items()}
        security = KafkaSecurity.from_env(local)  # the files load, the password is read
        assert security.password == (secrets / "worker.password").read_text().strip()
    for volume in COMPOSE["services"]["kafka"]["volumes"]:
        if volume.startswith("./secrets:"):
            assert (DOCKER / "secrets").is_dir()
    properties = (secrets / "server.properties").read_text()
    assert "advertised.listeners=SASL_SSL://kafka:9092\n" in properties
    assert "sasl.enabled.mechanisms=SCRAM-SHA-512" in properties
    scram = (secrets / "scram-users").read_text()
    assert f"SCRAM-SHA-512=[name={WORKER_USER},password=" in scram


def test_web_ports_are_published_on_loopback_and_workers_reach_each_other():
    workers = [s for s in COMPOSE["services"].values() if "faust" in s.get("command", [])]
    for worker in workers:
        assert worker["ports"], worker
        assert all(port.startswith("127.0.0.1:") for port in worker["ports"]), worker["ports"]
        environment = worker["environment"]
        assert environment["MARGINSTREAM_WEB_BIND"] == "0.0.0.0"
        assert environment["MARGINSTREAM_WEB_TOKEN"] == "${MARGINSTREAM_WEB_TOKEN:-}"
