"""Write docker/secrets/ for the secure compose setup (SASL/SCRAM-SHA-512 over TLS).

    .venv/bin/python docker/make_secrets.py        # once, before `docker compose up`

Makes a throwaway CA and a certificate for the `kafka` service, random passwords for the
broker's `admin` user and the workers' `marginstream` user, and the broker's
server.properties (one SASL_SSL listener, the certificate inline). The broker's storage is
formatted with both SCRAM users (kafka-init in compose.yaml). Rerun with --force to
replace everything (then also `docker compose down -v`: the users live in the broker's
volume). Needs the `cryptography` package (in the dev extras).

Beside them, the web token (web.token: the workers' MARGINSTREAM_WEB_TOKEN_FILE, and the
bearer token Prometheus scrapes /metrics with) and Grafana's admin password. Run again
without --force on secrets made before these existed, it adds just the missing ones.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from marginstream.localbroker.secure import BrokerSecurity, make_pki
from marginstream.localbroker.server import SINGLE_NODE, kafka_uuid, properties_text

HERE = Path(__file__).resolve().parent
WORKER_USER = "marginstream"
WEB_TOKEN = "web.token"  # compose secret web-token
GRAFANA_PASSWORD = "grafana-admin.password"  # compose secret grafana-admin-password

BROKER = {
    **SINGLE_NODE,
    "controller.quorum.voters": "1@kafka:9093",
    "log.dirs": "/var/lib/kafka/data",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=HERE / "secrets")
    parser.add_argument("--force", action="store_true", help="replace existing secrets")
    args = parser.parse_args()
    out: Path = args.out
    if (out / "server.properties").exists() and not args.force:
        added = write_web_secrets(out, replace=False)
        if added:
            print(f"{out} already has the Kafka secrets; added {', '.join(added)}")
            return 0
        print(f"{out} already has secrets (--force replaces them)", file=sys.stderr)
        return 1
    pki = make_pki(out, hosts=("kafka", "localhost", "127.0.0.1"))
    users = {user: secrets.token_urlsafe(24).replace("-", ".") for user in ("admin", WORKER_USER)}
    security = BrokerSecurity(pki, users)
    properties = {**BROKER, **security.properties(9092, 9093)}
    properties.update(
        {
            "listeners": "SASL_SSL://:9092,CONTROLLER://:9093",
            "advertised.listeners": "SASL_SSL://kafka:9092",
        }
    )
    write(out / "server.properties", properties_text(properties))
    write(out / "scram-users", " ".join(security.scram_arguments()) + "\n")
    write(out / "cluster-id", kafka_uuid() + "\n")
    write(out / "worker.password", users[WORKER_USER] + "\n")
    write(
        out / "client.properties",  # the broker's health check logs in as admin
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{users["admin"]}";\n'
        f"ssl.truststore.type=PEM\nssl.truststore.location=/etc/kafka/secrets/{pki.ca.name}\n",
    )
    write_web_secrets(out, replace=True)
    print(f"wrote {out}: CA {pki.ca.name}, users admin and {WORKER_USER}, web token")
    return 0


def write_web_secrets(out: Path, replace: bool) -> list[str]:
    """The web token and Grafana's admin password (those missing, unless replace): the
    names written. A token is URL-safe base64, within MARGINSTREAM_WEB_TOKEN's bounds."""
    added = []
    for name in (WEB_TOKEN, GRAFANA_PASSWORD):
        if replace or not (out / name).exists():
            write(out / name, secrets.token_urlsafe(32) + "\n")
            added.append(name)
    return added


def write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)  # read by the containers' own users (kafka: appuser), not by others here


if __name__ == "__main__":
    raise SystemExit(main())
