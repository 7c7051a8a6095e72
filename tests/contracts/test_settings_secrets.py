"""Issue #12: secrets handled as secrets. The API token, the SMTP password in PAYEVENTS_SMTP_URL, the
database password in PAYEVENTS_DATABASE_URL and the Kafka SASL password in PAYEVENTS_KAFKA_CONFIG never
appear in the settings' repr/str, in what may be shown (``redacted()``), or in a configuration error."""

from __future__ import annotations

import logging

import pytest

from payevents.errors import ConfigError
from payevents.settings import Settings

TOKEN = "tok-Zq9v3xK2mN8pR4sT7uW1yB5cD6eF0gH"
SMTP_PASSWORD = "smtp-Pa55w0rd-Xy"
DB_PASSWORD = "db-S3cr3t-Qw"
SASL_PASSWORD = "sasl-H1dd3n-Zz"
SECRETS = (TOKEN, SMTP_PASSWORD, DB_PASSWORD, SASL_PASSWORD)

ENV = {
    "PAYEVENTS_ENV": "prod",
    "PAYEVENTS_API_TOKEN": TOKEN,
    "PAYEVENTS_SMTP_URL": f"smtp://mailer:{SMTP_PASSWORD}@mail.example.com:587?starttls=1",
    "PAYEVENTS_DATABASE_URL": f"postgresql+psycopg://payevents:{DB_PASSWORD}@db.example.com/payevents",
    "PAYEVENTS_KAFKA_CONFIG": f'{{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",'
                              f' "sasl.username": "svc", "sasl.password": "{SASL_PASSWORD}"}}',
}


def test_no_secret_in_repr_str_or_what_may_be_shown(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env(ENV)
    assert s.api_token == TOKEN and s.kafka_config["sasl.password"] == SASL_PASSWORD  # the values are there ...
    logging.getLogger("test").warning("settings: %s / %r", s, s)
    shown = [repr(s), str(s), f"{s}", repr(s.redacted()), caplog.text]
    for text in shown:  # ... but never shown
        for secret in SECRETS:
            assert secret not in text
    r = s.redacted()
    assert r["smtp_url"] == "smtp://mailer:**********@mail.example.com:587?starttls=1"
    assert r["database_url"] == "postgresql+psycopg://payevents:**********@db.example.com/payevents"
    assert r["kafka_config"]["sasl.username"] == "svc" and r["kafka_config"]["sasl.password"] == "**********"
    assert r["api_token"] == "**********" and r["env"] == "prod"


def test_a_malformed_kafka_config_error_never_echoes_a_value() -> None:
    # a password holding a comma, written as key=value pairs: its tail is not key=value
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_KAFKA_CONFIG": "sasl.password=abc,Tail-S3cret"})
    assert "Tail-S3cret" not in str(info.value) and "PAYEVENTS_KAFKA_CONFIG" in str(info.value)
