"""How every Kafka client of marginstream authenticates and encrypts, from the environment.

One place maps the KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* variables
(documented in docs/configuration.md) to aiokafka's keyword arguments: the worker passes
`settings.kafka_options()` to every client it makes, and `marginstream produce` the same.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from marginstream.stream import bounds

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_MECHANISM = "SCRAM-SHA-512"


class SecurityError(ValueError):
    """A Kafka security variable holds a value no client can use (its message is the one
    line of bounds.refusal: `<VARIABLE>=<value>: <why>`)."""


def _one_of(choices: tuple[str, ...]) -> str:
    return "not allowed: must be " + ", ".join(choices[:-1]) + " or " + choices[-1]


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = DEFAULT_MECHANISM
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise SecurityError(
                bounds.refusal("KAFKA_SECURITY_PROTOCOL", self.protocol, _one_of(PROTOCOLS))
            )
        if self.sasl:
            if self.sasl_mechanism not in MECHANISMS:
                raise SecurityError(
                    bounds.refusal("KAFKA_SASL_MECHANISM", self.sasl_mechanism, _one_of(MECHANISMS))
                )
            missing = [
                name
                for name, value in (
                    ("KAFKA_SASL_USERNAME", self.username),
                    ("KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)", self.password),
                )
                if not value
            ]
            if missing:
                raise SecurityError(
                    bounds.refusal(
                        "KAFKA_SECURITY_PROTOCOL", self.protocol, f"needs {' and '.join(missing)}"
                    )
                )
        if self.tls:
            for variable, path in (
                ("KAFKA_SSL_CAFILE", self.cafile),
                ("KAFKA_SSL_CERTFILE", self.certfile),
                ("KAFKA_SSL_KEYFILE", self.keyfile),
            ):
                if path and not _is_file(path):
                    raise SecurityError(bounds.refusal(variable, path, "no such file"))
            if self.keyfile and not self.certfile:
                why = "needs KAFKA_SSL_CERTFILE"
                raise SecurityError(bounds.refusal("KAFKA_SSL_KEYFILE", self.keyfile, why))
            self._load_tls_files()

    def _load_tls_files(self) -> None:
        """Build the context now, naming the file it cannot load: a bad one is refused at
        start, not at the first connection."""
        if self.cafile:
            try:
                ssl.create_default_context(cafile=self.cafile)
            except (ssl.SSLError, OSError) as error:
                why = f"cannot load it as PEM certificates ({error})"
                raise SecurityError(bounds.refusal("KAFKA_SSL_CAFILE", self.cafile, why)) from None
        try:
            self.ssl_context  # noqa: B018
        except (ssl.SSLError, OSError) as error:
            variable, path = (
                ("KAFKA_SSL_CERTFILE", self.certfile) if self.certfile
                else ("KAFKA_SSL_CAFILE", self.cafile or "(the system's)")
            )  # fmt: skip
            why = f"cannot load it with KAFKA_SSL_KEYFILE and KAFKA_SSL_KEY_PASSWORD ({error})"
            raise SecurityError(bounds.refusal(variable, path, why)) from None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """One context for every client (None without TLS): the CA file, else the system's."""
        if not self.tls:
            return None
        from aiokafka.helpers import create_ssl_context  # noqa: PLC0415

        context = create_ssl_context(
            cafile=self.cafile,
            certfile=self.certfile,
            keyfile=self.keyfile,
            password=self.key_password,
        )
        context.check_hostname = self.check_hostname
        return context

    def options(self) -> dict[str, Any]:
        """aiokafka keyword arguments, for any client (consumer, producer, admin)."""
        if self.protocol == "PLAINTEXT":
            return {}  # aiokafka's defaults: the plaintext clients are exactly as before
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context
        if self.sasl:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return options

    def faust_credentials(self) -> Any:
        """The same, as faust's broker_credentials (None: PLAINTEXT). faust's own Kafka
        clients are not started (stream/worker.py), this only keeps its config consistent."""
        from faust.auth import SASLCredentials, SSLCredentials  # noqa: PLC0415

        if self.sasl:
            return SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=self.ssl_context,
                mechanism=self.sasl_mechanism,
            )
        return SSLCredentials(self.ssl_context) if self.tls else None

    def describe(self) -> str:
        """For messages: how the clients connect (never the password)."""
        if self.sasl:
            return f"{self.protocol} as {self.username!r} ({self.sasl_mechanism})"
        return self.protocol

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        protocol = (get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
        password = env.get("KAFKA_SASL_PASSWORD") or None
        password_file = get("KAFKA_SASL_PASSWORD_FILE")
        if password is not None and password_file is not None:
            why = "KAFKA_SASL_PASSWORD is set too: set one of them"
            raise SecurityError(bounds.refusal("KAFKA_SASL_PASSWORD_FILE", password_file, why))
        if password_file is not None:
            try:
                password = Path(password_file).read_text().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as error:
                why = f"cannot read it ({getattr(error, 'strerror', None) or 'not text'})"
                raise SecurityError(
                    bounds.refusal("KAFKA_SASL_PASSWORD_FILE", password_file, why)
                ) from None
        check = (get("KAFKA_SSL_CHECK_HOSTNAME") or "true").lower()
        if check not in ("true", "false", "1", "0", "yes", "no"):
            why = "not allowed: must be true or false (or 1, 0, yes, no)"
            raise SecurityError(bounds.refusal("KAFKA_SSL_CHECK_HOSTNAME", check, why))
        return cls(
            protocol=protocol,
            sasl_mechanism=(get("KAFKA_SASL_MECHANISM") or DEFAULT_MECHANISM).upper(),
            username=get("KAFKA_SASL_USERNAME"),
            password=password,
            cafile=get("KAFKA_SSL_CAFILE"),
            certfile=get("KAFKA_SSL_CERTFILE"),
            keyfile=get("KAFKA_SSL_KEYFILE"),
            key_password=env.get("KAFKA_SSL_KEY_PASSWORD") or None,
            check_hostname=check in ("true", "1", "yes"),
        )


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except OSError:  # a name too long, say: no such file either
        return False


async def refusal(
    bootstrap_servers: str, security: KafkaSecurity, timeout: float = 10.0
) -> str | None:
    """Why the first broker refuses a connection with these settings, or None if it does not.

    aiokafka reports every failure to bootstrap as KafkaConnectionError("Unable to
    bootstrap from ...") and only logs the cause: this connects once more, straight, to
    name it (wrong credentials, an untrusted certificate, a TLS or SASL mismatch).
    """
    from aiokafka.conn import create_conn  # noqa: PLC0415
    from aiokafka.errors import (  # noqa: PLC0415
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    host, _, port = bootstrap_servers.split(",", maxsplit=1)[0].strip().rpartition(":")
    options = security.options()
    try:
        async with asyncio.timeout(timeout):
            conn = await create_conn(
                host, int(port), request_timeout_ms=int(timeout * 1000), **options
            )
            conn.close()
    except SaslAuthenticationFailed:
        return (
            f"Kafka refused the credentials of {security.username!r} ({security.sasl_mechanism})"
            f" at {bootstrap_servers}: check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        )
    except UnsupportedSaslMechanismError as error:
        return (
            f"Kafka at {bootstrap_servers} does not accept KAFKA_SASL_MECHANISM="
            f"{security.sasl_mechanism}: {error}"
        )
    except ssl.SSLCertVerificationError as error:
        return (
            f"the TLS certificate of Kafka at {bootstrap_servers} is not trusted "
            f"({error.verify_message}): check KAFKA_SSL_CAFILE"
        )
    except ssl.SSLError as error:
        return (
            f"TLS with Kafka at {bootstrap_servers} failed ({error.reason}): is "
            f"KAFKA_SECURITY_PROTOCOL={security.protocol} what its listener expects?"
        )
    except Exception:  # unreachable, or closed on us: nothing more to say
        return None
    return None
