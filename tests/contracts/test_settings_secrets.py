"""Issue #12: secrets handled as secrets. The API token, the SMTP password in PAYEVENTS_SMTP_URL, the
database password in PAYEVENTS_DATABASE_URL and the Kafka SASL password in PAYEVENTS_KAFKA_CONFIG never
appear in the settings' repr/str, in what may be shown (``redacted()``), or in a configuration error."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from payevents.errors import ConfigError
from payevents.settings import Secret, Settings, default_delivery_processes

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
    assert s.api_token.get_secret_value() == TOKEN and s.kafka_config["sasl.password"] == SASL_PASSWORD  # there ...
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


def test_the_secret_settings_are_secret_strings_whatever_the_caller_gave() -> None:
    # from the environment, from a constructor with plain strings, from a CLI flag (replace): Secret every time
    for s in (Settings.from_env(ENV),
              Settings(env="prod", api_token=TOKEN, smtp_url=ENV["PAYEVENTS_SMTP_URL"],  # type: ignore[arg-type]
                       database_url=ENV["PAYEVENTS_DATABASE_URL"]),  # type: ignore[arg-type]
              Settings(env="prod").replace(api_token=TOKEN, smtp_url=ENV["PAYEVENTS_SMTP_URL"],
                                           database_url=ENV["PAYEVENTS_DATABASE_URL"])):
        assert isinstance(s.api_token, Secret) and isinstance(s.smtp_url, Secret)
        assert isinstance(s.database_url, Secret)
        assert s.database_url_for("ledger") == ENV["PAYEVENTS_DATABASE_URL"]  # where it is used, it is the value
        # the forms a dataclass is usually shown in: asdict (model_dump-like), its JSON, each field as text
        dumped = json.dumps(dataclasses.asdict(s), default=str)
        fields = " ".join(f"{getattr(s, f.name)} {getattr(s, f.name)!r}" for f in dataclasses.fields(s))
        for text in (dumped, fields, repr(s), str(s)):
            for secret in (TOKEN, SMTP_PASSWORD, DB_PASSWORD):
                assert secret not in text


def test_a_library_users_pydantic_secret_is_taken_by_its_value_and_a_secret_survives_the_trip_to_a_worker() -> None:
    """A caller may hold its secrets as pydantic ``SecretStr``: the settings take the value behind it (its ``str``
    is the mask, which would have become the password). A Secret reaches a spawned worker (pickled with the
    settings) and a deep copy (``dataclasses.asdict``) whole, and is false only when empty, as ``SecretStr`` was."""
    import copy
    import pickle

    s = Settings(env="prod", api_token=SecretStr(TOKEN), smtp_url=SecretStr(ENV["PAYEVENTS_SMTP_URL"]))  # type: ignore[arg-type]
    assert isinstance(s.api_token, Secret) and s.api_token.get_secret_value() == TOKEN
    assert s.smtp_url is not None and s.smtp_url.get_secret_value() == ENV["PAYEVENTS_SMTP_URL"]
    back = pickle.loads(pickle.dumps(s))
    assert back.api_token == s.api_token and back.api_token.get_secret_value() == TOKEN
    assert copy.deepcopy(s.api_token).get_secret_value() == TOKEN
    assert dataclasses.asdict(s)["api_token"] == s.api_token
    assert f"{s.api_token} {s.api_token!r}" == "********** Secret('**********')"
    assert Secret("x") and not Secret("") and len(Secret("abc")) == 3
    assert Secret("a") != Secret("b") and hash(Secret("a")) == hash(Secret("a"))
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


def test_the_demo_summary_shows_the_settings_without_the_database_password(tmp_path: Path) -> None:
    # `payevents demo --json FILE` writes the settings it ran with: the database URL was written as it was
    from payevents.faces.demo import DemoResult, as_json

    s = Settings.from_env(ENV)
    text = json.dumps(as_json(DemoResult(settings=s)))
    for secret in SECRETS:
        assert secret not in text
    assert as_json(DemoResult(settings=s))["settings"]["database_url"] == (
        "postgresql+psycopg://payevents:**********@db.example.com/payevents")


def test_a_failed_connection_error_and_the_logs_never_show_the_database_password(tmp_path: Path) -> None:
    # nothing listens on port 9: the command fails connecting; its one error line and its log name no secret
    url = f"postgresql+psycopg://payevents:{DB_PASSWORD}@127.0.0.1:9/payevents?connect_timeout=2"
    cli = Path(sys.executable).parent / "payevents"
    for args in (["payments", "list", "-o", "json"], ["ledger", "verify"], ["outbox", "set-aside"]):
        done = subprocess.run([str(cli), *args, "--env", "dev", "--data-dir", str(tmp_path), "--database-url", url],
                              capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "PAYEVENTS_API_TOKEN": TOKEN,
                                   "PAYEVENTS_LOG_FORMAT": "json"})
        assert done.returncode == 3, done.stderr
        assert "database unreachable" in done.stderr
        for secret in (DB_PASSWORD, TOKEN):
            assert secret not in done.stderr and secret not in done.stdout


@pytest.mark.parametrize("prefix", ['pay"; DROP SCHEMA public CASCADE; --', "my prefix_", "Payevents_", "1st_",
                                    "p" * 41, "payevents-"])
def test_a_schema_prefix_that_is_not_a_plain_identifier_is_refused(prefix: str) -> None:
    # the prefix names every service's PostgreSQL schema: quoted into CREATE SCHEMA and passed in the session's
    # options (search_path), where a quote broke the statement, a space the connection, and a name past 63
    # bytes was cut by the server so that two services could share a schema
    from payevents.errors import ConfigError

    with pytest.raises(ConfigError, match="PAYEVENTS_DB_SCHEMA_PREFIX: "):
        Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_DB_SCHEMA_PREFIX": prefix,
                           "PAYEVENTS_DATABASE_URL": "postgresql+psycopg://u@h/db"})
    assert Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_DB_SCHEMA_PREFIX": "acme_pay_",
                              "PAYEVENTS_DATABASE_URL": "postgresql+psycopg://u@h/db"}).schema_for("ledger") == (
        "acme_pay_ledger")


@pytest.mark.parametrize("value", ["10001", "2000000"])
def test_a_partition_count_out_of_bounds_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"PAYEVENTS_PARTITIONS: {value} must be a whole number from 1 to 10,000"):
        Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_PARTITIONS": value})
    assert Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_PARTITIONS": "10000"}).partitions == 10_000


@pytest.mark.parametrize("value", ["-5", "3153600000001", "100000000000000000000000"])
def test_a_retention_out_of_bounds_is_refused_naming_the_setting(value: str) -> None:
    """-1 or 0 to 100 years: until 2026-12-02 a longer one ended `payevents topics trim` (and the producers'
    retention pass) in an OverflowError, and -5 was taken for "keep everything" where Kafka refuses it."""
    with pytest.raises(ConfigError, match=rf"PAYEVENTS_RETENTION_MS: {value} must be -1 \(keep everything\) or 0 to"
                                          r" 3,153,600,000,000 milliseconds \(100 years\)"):
        Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_RETENTION_MS": value})
    for ok in ("-1", "0", "3153600000000"):
        assert Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_RETENTION_MS": ok}).retention_ms == int(ok)


@pytest.mark.parametrize(("value", "rule"), [("0", "0 must be a positive integer"),
                                             ("17", "17 must be a whole number from 1 to 16"),
                                             ("two", "'two' is not an integer")])
def test_a_delivery_process_count_out_of_bounds_is_refused_naming_the_setting(value: str, rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"PAYEVENTS_DELIVERY_PROCESSES: {rule}"):
        Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_DELIVERY_PROCESSES": value})
    assert Settings.from_env({"PAYEVENTS_ENV": "dev"}).delivery_processes == default_delivery_processes()
    assert Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_DELIVERY_PROCESSES": "16"}).delivery_processes == 16


@pytest.mark.parametrize(("cpus", "expected"), [({0}, 1), ({0, 1}, 2), (set(range(8)), 2)])
def test_the_delivery_may_take_a_second_process_where_there_is_a_second_cpu(
    monkeypatch: pytest.MonkeyPatch, cpus: set[int], expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus, raising=False)
    assert Settings.from_env({"PAYEVENTS_ENV": "dev"}).delivery_processes == expected
    assert Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_DELIVERY_PROCESSES": "1"}).delivery_processes == 1
