"""The Docker deployment refers only to things that exist in this repository.

There is no Docker engine here to run it, so this checks what can be checked
without one: every build context, Dockerfile, COPY source, command and module the
compose file and the image refer to.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import yaml

from marginstream.cli import build_parser
from marginstream.stream.security import KafkaSecurity
from marginstream.stream.settings import StreamSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docker"))
from make_secrets import BROKER, GRAFANA_PASSWORD, WEB_TOKEN, WORKER_USER

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
        worker = "faust" in client["command"]  # the workers also serve the web views
        extra = {"web-token"} if worker else set()
        assert set(client["secrets"]) == {"kafka-worker-password", "kafka-ca", *extra}
        files = {f"/run/secrets/{name}": secrets / Path(declared[name]["file"]).name
                 for name in client["secrets"]}  # fmt: skip
        local = {k: str(files.get(v, v)) for k, v in env.items()}
        security = KafkaSecurity.from_env(local)  # the files load, the password is read
        assert security.password == (secrets / "worker.password").read_text().strip()
        if worker:  # every setting accepted, the token read from its file
            settings = StreamSettings.from_env(local)
            assert settings.web_token == (secrets / WEB_TOKEN).read_text().strip()
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
        assert environment["MARGINSTREAM_WEB_TOKEN_FILE"] == "/run/secrets/web-token"
        assert "MARGINSTREAM_WEB_TOKEN" not in environment  # one of the two, never both
        assert "web-token" in worker["secrets"]


def test_every_published_port_is_on_loopback_and_every_image_pinned():
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
        if "image" in service:
            repository, _, tag = service["image"].rpartition(":")
            assert repository and tag and tag[0] in "v0123456789", service["image"]


def _mounts(service: dict) -> dict[str, Path]:
    """A service's bind mounts: target in the container -> source in the repository."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (DOCKER / source).resolve()
    return mounts


def _in_container(mounts: dict[str, Path], path: str) -> Path | None:
    """Where path of the container comes from in the repository (None: not mounted)."""
    for target, source in mounts.items():
        inside = PurePosixPath(path)
        if inside == PurePosixPath(target) or PurePosixPath(target) in inside.parents:
            return source / inside.relative_to(target)
    return None


def test_prometheus_scrapes_every_worker_with_their_token_and_loads_the_rules():
    services = COMPOSE["services"]
    prometheus = services["prometheus"]
    mounts = _mounts(prometheus)
    config_path = _in_container(mounts, "/etc/prometheus/prometheus.yml")  # the image's
    assert config_path == DOCKER / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    for rule_file in config["rule_files"]:  # relative to the config file's directory
        source = _in_container(mounts, str(PurePosixPath("/etc/prometheus") / rule_file))
        assert source == DOCKER / "prometheus" / rule_file, rule_file
        assert source.is_file()
    (job,) = (j for j in config["scrape_configs"] if j["job_name"] == "marginstream")
    workers = [s for s in services.values() if "faust" in s.get("command", [])]
    hosts = {
        f"{w['command'][w['command'].index('--web-host') + 1]}:"
        f"{w['command'][w['command'].index('--web-port') + 1]}"
        for w in workers
    }
    (targets,) = (c["targets"] for c in job["static_configs"])
    assert set(targets) == hosts
    assert job["authorization"]["type"] == "Bearer"
    secret = PurePosixPath(job["authorization"]["credentials_file"])
    assert secret.parent == PurePosixPath("/run/secrets")
    assert secret.name in prometheus["secrets"]
    for worker in workers:  # the very secret the workers read their token from
        assert worker["environment"]["MARGINSTREAM_WEB_TOKEN_FILE"] == str(secret)
        assert secret.name in worker["secrets"]
    assert COMPOSE["secrets"][secret.name]["file"] == f"./secrets/{WEB_TOKEN}"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard():
    services = COMPOSE["services"]
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    provisioning = _in_container(mounts, "/etc/grafana/provisioning")
    assert provisioning == DOCKER / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus" and url.hostname in services
    assert str(url.port) == services["prometheus"]["ports"][0].rsplit(":", 1)[1]
    providers = yaml.safe_load((provisioning / "dashboards" / "marginstream.yaml").read_text())
    for provider in providers["providers"]:
        folder = _in_container(mounts, provider["options"]["path"])
        assert folder is not None and (folder / "marginstream.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _in_container(mounts, home) == DOCKER / "grafana" / "dashboards" / "marginstream.json"
    password = PurePosixPath(grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"])
    assert password.name in grafana["secrets"]
    assert COMPOSE["secrets"][password.name]["file"] == f"./secrets/{GRAFANA_PASSWORD}"


def test_make_secrets_adds_the_web_secrets_to_older_secrets(tmp_path: Path):
    """Secrets made before the web token existed get it (and nothing else changes);
    with nothing missing, a rerun without --force refuses."""
    secrets = tmp_path / "secrets"
    run = [sys.executable, str(DOCKER / "make_secrets.py"), "--out", str(secrets)]
    subprocess.run(run, check=True, capture_output=True)
    tokens = {name: (secrets / name).read_text() for name in (WEB_TOKEN, GRAFANA_PASSWORD)}
    assert tokens[WEB_TOKEN] != tokens[GRAFANA_PASSWORD]
    (secrets / WEB_TOKEN).unlink()
    properties = (secrets / "server.properties").read_text()
    added = subprocess.run(run, check=False, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    assert (secrets / WEB_TOKEN).read_text() not in ("", tokens[WEB_TOKEN])
    assert (secrets / GRAFANA_PASSWORD).read_text() == tokens[GRAFANA_PASSWORD]
    assert (secrets / "server.properties").read_text() == properties
    again = subprocess.run(run, check=False, capture_output=True, text=True)
    assert again.returncode == 1
    assert "already has secrets" in again.stderr
