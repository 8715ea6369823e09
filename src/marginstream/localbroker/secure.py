"""The local broker's optional secure mode: one SASL_SSL listener with SCRAM users.

The SCRAM credentials are written into the KRaft metadata when the storage is formatted
(StorageTool's --add-scram), the broker talks to itself on the same listener as the admin
user (a super user), and TLS uses PEM certificates inline in server.properties. `make_pki`
makes a throwaway CA and a server certificate for 127.0.0.1 and localhost (it needs the
`cryptography` package, a test dependency).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA clients trust, the server's certificate chain and its key."""

    ca: Path
    cert_chain: Path
    key: Path  # PKCS#8, unencrypted (Kafka's PEM keystore reads only PKCS#8)


@dataclass(frozen=True)
class BrokerSecurity:
    pki: Pki
    # SCRAM users (name -> password); the broker itself connects as `admin`, a super user.
    users: dict[str, str] = field(repr=False)
    admin: str = "admin"

    def __post_init__(self) -> None:
        if self.admin not in self.users:
            raise ValueError(f"the admin user {self.admin!r} must be one of the SCRAM users")
        for name, password in self.users.items():
            # StorageTool's --add-scram parses name=...,password=... inside [ ].
            if not all(c.isalnum() or c in "-_." for c in name + password):
                raise ValueError("SCRAM user names and passwords: letters, digits, - _ . only")

    def scram_arguments(self) -> list[str]:
        """StorageTool format arguments that create every user, with both SCRAM mechanisms."""
        arguments = []
        for mechanism in SCRAM_MECHANISMS:
            for name, password in self.users.items():
                arguments += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        return arguments

    def properties(self, port: int, controller_port: int) -> dict[str, str]:
        def inline(path: Path) -> str:
            return path.read_text().strip()

        admin = self.users[self.admin]
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.admin}" password="{admin}";'
        )
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            **{
                f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config": jaas
                for m in SCRAM_MECHANISMS
            },
            "super.users": f"User:{self.admin}",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": inline(self.pki.cert_chain),
            "ssl.keystore.key": inline(self.pki.key),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.certificates": inline(self.pki.ca),
            "ssl.client.auth": "none",
        }

    def client_options(self, user: str | None = None) -> dict[str, Any]:
        """aiokafka keyword arguments of a client logged in as user (default: admin)."""
        from aiokafka.helpers import create_ssl_context  # noqa: PLC0415

        user = user or self.admin
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": create_ssl_context(cafile=str(self.pki.ca)),
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "sasl_plain_password": self.users[user],
        }

    def client_env(self, user: str) -> dict[str, str]:
        """The worker's environment variables for a client logged in as user."""
        return {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": self.users[user],
            "KAFKA_SSL_CAFILE": str(self.pki.ca),
        }


def make_pki(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Pki:
    """A self-signed CA and a server certificate it signs for hosts, valid for 30 days."""
    from cryptography import x509  # noqa: PLC0415 (a test dependency only)
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def builder(subject: str, issuer: str, key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        builder("marginstream local CA", "marginstream local CA", ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server = (
        builder(hosts[0], "marginstream local CA", server_key)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pki = Pki(directory / "ca.pem", directory / "server-chain.pem", directory / "server.key")
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.cert_chain.write_bytes(server.public_bytes(pem) + ca.public_bytes(pem))
    pki.key.write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pki.key.chmod(0o600)
    return pki


def stored_security(directory: Path, create: bool = False) -> BrokerSecurity | None:
    """The secure mode kept in directory (a broker's `secure/`), made there if create.

    Holds the CA, the server certificate, `users.json` (admin and `marginstream`, random
    passwords) and `client.env`, the variables a worker or `marginstream produce` needs.
    """
    import json  # noqa: PLC0415
    import secrets  # noqa: PLC0415

    users_path = directory / "users.json"
    pki = Pki(directory / "ca.pem", directory / "server-chain.pem", directory / "server.key")
    if users_path.exists():
        return BrokerSecurity(pki, json.loads(users_path.read_text()))
    if not create:
        return None
    pki = make_pki(directory)
    users = {name: secrets.token_hex(16) for name in ("admin", "marginstream")}
    users_path.touch(mode=0o600)
    users_path.write_text(json.dumps(users))
    security = BrokerSecurity(pki, users)
    env = directory / "client.env"
    env.touch(mode=0o600)
    env.write_text("".join(f"{k}={v}\n" for k, v in security.client_env("marginstream").items()))
    return security
