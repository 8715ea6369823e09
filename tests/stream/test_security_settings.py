"""KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* as the worker reads them (no broker)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from marginstream.localbroker.secure import make_pki
from marginstream.stream.settings import SettingsError, StreamSettings

SASL = {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "worker"}


def test_plaintext_by_default_adds_nothing_to_the_clients():
    assert StreamSettings.from_env({}).kafka_options() == {}
    assert StreamSettings().kafka_options() == {}


def test_sasl_plaintext_logs_in_with_scram_sha_512_by_default():
    options = StreamSettings.from_env({**SASL, "KAFKA_SASL_PASSWORD": "s3cret"}).kafka_options()
    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "worker",
        "sasl_plain_password": "s3cret",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**SASL}, "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT: needs KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": "x"},
         "KAFKA_SECURITY_PROTOCOL=SASL_SSL: needs KAFKA_SASL_USERNAME"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"},
         "KAFKA_SECURITY_PROTOCOL=TLS: not allowed: must be PLAINTEXT, SSL"),
        ({**SASL, "KAFKA_SASL_PASSWORD": "x", "KAFKA_SASL_MECHANISM": "GSSAPI"},
         "KAFKA_SASL_MECHANISM=GSSAPI: not allowed: must be SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/no/such/ca.pem"},
         "KAFKA_SSL_CAFILE=/no/such/ca.pem: no such file"),
        ({**SASL, "KAFKA_SASL_PASSWORD_FILE": "/no/such/secret"},
         "KAFKA_SASL_PASSWORD_FILE=/no/such/secret: cannot read it (No such file or directory)"),
        ({**SASL, "KAFKA_SASL_PASSWORD": "x", "KAFKA_SASL_PASSWORD_FILE": "/etc/hostname"},
         "KAFKA_SASL_PASSWORD_FILE=/etc/hostname: KAFKA_SASL_PASSWORD is set too"),
    ],
)  # fmt: skip
def test_unusable_security_settings_are_refused_with_their_variable(env, message):
    with pytest.raises(SettingsError) as refused:
        StreamSettings.from_env(env)
    assert message in str(refused.value)


def test_sasl_ssl_with_a_ca_file_and_a_password_file(tmp_path: Path):
    pki = make_pki(tmp_path)
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    settings = StreamSettings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_USERNAME": "worker",
         "KAFKA_SASL_PASSWORD_FILE": str(secret), "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
         "KAFKA_SSL_CAFILE": str(pki.ca)}
    )  # fmt: skip
    options = settings.kafka_options()
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "worker",
        "sasl_plain_password": "from-a-file",
    }
    assert settings.kafka_options()["ssl_context"] is context  # one context for every client
    assert "from-a-file" not in repr(settings)
    credentials = settings.security.faust_credentials()
    assert (credentials.username, credentials.mechanism.value) == ("worker", "SCRAM-SHA-256")


def test_hostname_check_can_be_turned_off():
    settings = StreamSettings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CHECK_HOSTNAME": "false"}
    )
    assert settings.kafka_options()["ssl_context"].check_hostname is False


def test_a_worker_without_its_password_exits_2_with_one_line(tmp_path: Path):
    env = {**os.environ, **SASL, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    env.pop("KAFKA_SASL_PASSWORD", None)
    result = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "marginstream.app", "--datadir", str(tmp_path),
         "worker", "--web-port", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "marginstream: error: KAFKA_SECURITY_PROTOCOL=SASL_SSL: needs KAFKA_SASL_PASSWORD "
        "(or KAFKA_SASL_PASSWORD_FILE)\n"
    )
