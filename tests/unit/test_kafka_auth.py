"""Kafka client security from settings: plain for the local broker, SASL_SSL for Apache Kafka."""

from __future__ import annotations

import ssl
from pathlib import Path

from faust.auth import SASLCredentials

from infra.drills.certs import dev_certs
from infra.settings import Settings
from projections.app import make_faust_app
from projections.kafka_auth import aiokafka_security, kafka_credentials


def test_the_local_broker_stays_plain() -> None:
    security = Settings.from_env({}).security.kafka
    assert kafka_credentials(security) is None
    assert aiokafka_security(security) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_reaches_faust_and_aiokafka(tmp_path: Path) -> None:
    ca = dev_certs() / "ca.pem"
    env = {
        "EXDR_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "EXDR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "EXDR_KAFKA_SASL_USERNAME": "exdr",
        "EXDR_KAFKA_SASL_PASSWORD": "pw",
        "EXDR_KAFKA_CA": str(ca),
        "EXDR_VAR_DIR": str(tmp_path),
    }
    settings = Settings.from_env(env)
    assert "pw" not in repr(settings)
    options = aiokafka_security(settings.security.kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("exdr", "pw")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    app = make_faust_app(settings, "kafka-auth-test")
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.username == "exdr"
