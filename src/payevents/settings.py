"""One settings object for the whole platform.

Values come from ``PAYEVENTS_*`` environment variables; the CLI overrides them with flags via
:meth:`Settings.replace`. ``env`` has no default: the channel page gives its default as N/A, so a
missing or unknown environment is a :class:`~payevents.errors.ConfigError`, never a silent guess.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from payevents.contracts.channel import Env, parse_env, partitions_problem, retention_problem
from payevents.errors import ConfigError, ContractError

#: the built-in services (third-party ones are found through the ``payevents.services`` entry points)
SERVICES: tuple[str, ...] = ("payments", "ledger", "invoices", "analytics", "notifications")
_SERVICE_NAME = re.compile(r"^_?[a-z][a-z0-9_]{0,47}$")
#: the most e-mail delivery processes one notifications worker runs (each is an interpreter of its own)
MAX_DELIVERY_PROCESSES: Final = 16


def default_delivery_processes() -> int:
    """2 where this process may run on two or more CPUs, else 1: a second delivery process joins while a backlog
    lasts (rendering and writing an e-mail costs more than consuming its event, so one process alone is a
    backlog's bottleneck) and leaves once it is gone."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return 2 if cpus >= 2 else 1


#: the API token of a laptop; outside dev the API refuses to start with it
DEV_API_TOKEN = "dev-token"
#: outside dev, the API token must be at least this long (e.g. ``secrets.token_urlsafe(32)``: 43 characters)
MIN_API_TOKEN_LENGTH = 32


#: shown instead of a secret
MASK = "**********"
#: librdkafka keys whose values are secrets (SASL passwords, OAuth client secrets, private keys and their
#: passwords); any key containing "password" or "secret" is treated the same way
_SECRET_KAFKA_KEYS = frozenset({"sasl.oauthbearer.config", "ssl.key.pem", "ssl_key", "ssl.keystore.password"})
_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)(?P<password>[^/@]*)(?P<at>@)")


def is_secret_key(key: str) -> bool:
    """True for a librdkafka setting whose value is a secret (``sasl.password``, ``ssl.key.password``, ...)."""
    k = key.lower()
    return k in _SECRET_KAFKA_KEYS or "password" in k or "secret" in k


def redact_url(url: str | None) -> str | None:
    """``url`` with the password of its user info masked (``smtp://u:******@host``); None stays None."""
    if url is None:
        return None
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", url, count=1)


def redact_kafka_config(config: Mapping[str, str]) -> dict[str, str]:
    """The librdkafka settings with every secret value masked."""
    return {k: MASK if is_secret_key(k) else v for k, v in config.items()}


class Secret:
    """A secret setting's value: ``str``, ``repr``, f-strings and ``dataclasses.asdict`` show ``**********``;
    :meth:`get_secret_value` gives the value (the interface of pydantic's ``SecretStr``, which the settings held
    until importing pydantic for it cost every process ~50 ms of its start: `docs/benchmarks.md`). Equal to another
    Secret of the same value; true when not empty."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret: a str, not {type(value).__name__}")
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:  # pickled to a spawned worker with its settings
        return Secret, (self._value,)


def reveal(secret: Secret | None) -> str | None:
    """The value of a secret setting, for the one place that uses it (a connection, a comparison)."""
    return None if secret is None else secret.get_secret_value()


def _secret(value: Any) -> Secret | None:
    """A setting's secret as given: None, a :class:`Secret`, another secret type with ``get_secret_value`` (a
    library user's pydantic ``SecretStr``: its value, not its mask), or a plain value (its text)."""
    if value is None or isinstance(value, Secret):
        return value
    reveal_value = getattr(value, "get_secret_value", None)
    return Secret(str(reveal_value() if callable(reveal_value) else value))


@dataclasses.dataclass(frozen=True, repr=False)
class Settings:
    """The platform's settings. Secrets — the API token, ``smtp_url`` and ``database_url`` (their passwords) — are
    :class:`Secret` (given as plain strings or as pydantic ``SecretStr``, they are wrapped), so
    ``dataclasses.asdict``, f-strings and ``str()`` of the field show ``**********``; :func:`reveal` gives the value
    where it is used. The secret keys of
    ``kafka_config`` (``sasl.password``, ...) are passed to librdkafka as they are and masked wherever the
    settings are shown. Nothing secret appears in ``repr``/``str`` (so never in a log line or a traceback that
    shows the object): :meth:`redacted` is what may be shown."""

    env: Env
    #: "embedded" or "kafka://host:port[,host:port...]"
    broker: str = "embedded"
    #: where the embedded log, SQLite stores and the Maildir live
    data_dir: Path = Path("payevents-data")
    #: None: one SQLite file per service in data_dir. Otherwise a SQLAlchemy URL; for PostgreSQL each
    #: service gets its own schema (``{db_schema_prefix}{service}``) in that database.
    database_url: Secret | None = None
    db_schema_prefix: str = "payevents_"
    #: partition count of payments.{env}.events (and its dead-letter channel)
    partitions: int = 6
    #: extra librdkafka settings passed through unchanged (SASL/TLS, timeouts, ...)
    kafka_config: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: None: deliver e-mail into the Maildir in data_dir. Otherwise smtp://[user:pass@]host:port
    #: (or smtps:// for implicit TLS; ?starttls=1 for STARTTLS)
    smtp_url: Secret | None = None
    mail_from: str = "payments@payevents.local"
    #: the most e-mail delivery processes beside each notifications worker, 1 to MAX_DELIVERY_PROCESSES: the first
    #: runs throughout, each other joins while a backlog lasts and leaves once it is gone; each claims its own
    #: passes of pending e-mails (a backlog drains faster, cores permitting)
    delivery_processes: int = dataclasses.field(default_factory=default_delivery_processes)
    #: bearer token required by the HTTP API's write endpoints
    api_token: Secret = dataclasses.field(default_factory=lambda: Secret(DEV_API_TOKEN))
    #: the embedded log's retention (Kafka's retention.ms): records older than this that every consumer group
    #: has committed past are removed; negative keeps everything. Default 7 days, Kafka's default.
    retention_ms: int = 7 * 24 * 3600 * 1000

    def __post_init__(self) -> None:
        # accept plain strings for env and data_dir (tests, library users); validate env once, here
        object.__setattr__(self, "env", _env(self.env, "env"))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        for name in ("database_url", "smtp_url", "api_token"):  # plain strings from callers become secrets
            object.__setattr__(self, name, _secret(getattr(self, name)))

    def redacted(self) -> dict[str, Any]:
        """Every setting, secrets masked: what may be printed, logged or returned."""
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["env"] = self.env.value
        values["data_dir"] = str(self.data_dir)
        values["api_token"] = MASK
        values["smtp_url"] = redact_url(reveal(self.smtp_url))
        values["database_url"] = redact_url(reveal(self.database_url))
        values["kafka_config"] = redact_kafka_config(self.kafka_config)
        return values

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.redacted().items()) + ")"

    __str__ = __repr__

    @property
    def is_kafka(self) -> bool:
        return self.broker.startswith("kafka://")

    @property
    def bootstrap_servers(self) -> str:
        if not self.is_kafka:
            raise ConfigError(f"PAYEVENTS_BROKER: {self.broker!r} is not a kafka:// URL")
        return self.broker.removeprefix("kafka://")

    def database_url_for(self, service: str) -> str:
        """The SQLAlchemy URL of one service's own database."""
        if not _SERVICE_NAME.match(service):
            raise ConfigError(f"service: {service!r} is not a service name (a-z, 0-9 and _, at most 48)")
        if self.database_url is None:
            return f"sqlite:///{(self.data_dir / f'{service}.db').as_posix()}"
        return self.database_url.get_secret_value()

    def schema_for(self, service: str) -> str | None:
        """PostgreSQL schema of one service (None on SQLite, where each service has its own file): a plain
        identifier of at most 63 bytes, which PostgreSQL would otherwise cut (two services could share one)."""
        if self.database_url is None or self.database_url.get_secret_value().startswith("sqlite"):
            return None
        schema = f"{self.db_schema_prefix}{service}"
        if not _SCHEMA_PREFIX.fullmatch(schema) or len(schema) > 63:
            raise ConfigError(f"PAYEVENTS_DB_SCHEMA_PREFIX: the schema {schema[:80]!r} of service {service[:80]!r}"
                              " must be lower-case letters, digits and underscores, at most 63 characters")
        return schema

    def replace(self, **changes: Any) -> Settings:
        changes = {k: v for k, v in changes.items() if v is not None}
        if "env" in changes:
            changes["env"] = _env(changes["env"], "--env")
        if "data_dir" in changes:
            changes["data_dir"] = Path(changes["data_dir"])
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``PAYEVENTS_*``; keyword overrides (CLI flags) win over the environment."""
        e = os.environ if environ is None else environ
        raw_env = overrides.pop("env", None) or e.get("PAYEVENTS_ENV")
        if raw_env is None:
            raise ConfigError("PAYEVENTS_ENV: required (one of dev, sit, prod); the channel has no default env")
        values: dict[str, Any] = {"env": _env(raw_env, "PAYEVENTS_ENV")}
        if "PAYEVENTS_BROKER" in e:
            values["broker"] = e["PAYEVENTS_BROKER"]
        if "PAYEVENTS_DATA_DIR" in e:
            values["data_dir"] = Path(e["PAYEVENTS_DATA_DIR"])
        if e.get("PAYEVENTS_DATABASE_URL"):
            values["database_url"] = e["PAYEVENTS_DATABASE_URL"]
        if "PAYEVENTS_DB_SCHEMA_PREFIX" in e:
            values["db_schema_prefix"] = e["PAYEVENTS_DB_SCHEMA_PREFIX"]
        if "PAYEVENTS_PARTITIONS" in e:
            values["partitions"] = _positive_int(e["PAYEVENTS_PARTITIONS"], "PAYEVENTS_PARTITIONS")
        if e.get("PAYEVENTS_KAFKA_CONFIG"):
            values["kafka_config"] = _kafka_config(e["PAYEVENTS_KAFKA_CONFIG"])
        if e.get("PAYEVENTS_SMTP_URL"):
            values["smtp_url"] = e["PAYEVENTS_SMTP_URL"]
        if "PAYEVENTS_MAIL_FROM" in e:
            values["mail_from"] = e["PAYEVENTS_MAIL_FROM"]
        if "PAYEVENTS_DELIVERY_PROCESSES" in e:
            values["delivery_processes"] = _positive_int(e["PAYEVENTS_DELIVERY_PROCESSES"],
                                                         "PAYEVENTS_DELIVERY_PROCESSES")
        if e.get("PAYEVENTS_RETENTION_MS"):
            try:
                values["retention_ms"] = int(e["PAYEVENTS_RETENTION_MS"])
            except ValueError:
                raise ConfigError(f"PAYEVENTS_RETENTION_MS: {e['PAYEVENTS_RETENTION_MS']!r} is not an integer "
                                  "(milliseconds; -1 keeps everything)") from None
        if "PAYEVENTS_API_TOKEN" in e:
            values["api_token"] = e["PAYEVENTS_API_TOKEN"]
        settings = cls(**values)
        settings = settings.replace(**overrides)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not (self.broker == "embedded" or self.broker.startswith("kafka://")):
            raise ConfigError(f"PAYEVENTS_BROKER: {self.broker!r} must be 'embedded' or 'kafka://host:port,...'")
        if self.is_kafka and not self.bootstrap_servers:
            raise ConfigError("PAYEVENTS_BROKER: kafka:// needs at least one host:port")
        if (problem := partitions_problem(self.partitions)) is not None:
            raise ConfigError(f"PAYEVENTS_PARTITIONS: {problem}")
        if (problem := retention_problem(self.retention_ms)) is not None:
            raise ConfigError(f"PAYEVENTS_RETENTION_MS: {problem}")
        if type(self.delivery_processes) is not int or not 1 <= self.delivery_processes <= MAX_DELIVERY_PROCESSES:
            raise ConfigError(f"PAYEVENTS_DELIVERY_PROCESSES: {self.delivery_processes!r} must be a whole number from 1"
                              f" to {MAX_DELIVERY_PROCESSES} (e-mail delivery processes per notifications worker)")
        if not self.is_kafka:  # the Kafka settings the embedded log takes too (librdkafka checks them on Kafka)
            embedded_kafka_knobs(self.kafka_config)
        if not self.api_token.get_secret_value().strip():
            raise ConfigError("PAYEVENTS_API_TOKEN: must not be empty (the API's write endpoints need a real token)")
        if not _SCHEMA_PREFIX.fullmatch(self.db_schema_prefix) or len(self.db_schema_prefix) > MAX_SCHEMA_PREFIX:
            raise ConfigError(f"PAYEVENTS_DB_SCHEMA_PREFIX: {self.db_schema_prefix[:80]!r} must be lower-case letters,"
                              f" digits and underscores, not starting with a digit, at most {MAX_SCHEMA_PREFIX}"
                              " characters (each service's schema is the prefix and its name)")
        if self.database_url is not None and \
                (problem := database_url_problem(self.database_url.get_secret_value())) is not None:
            raise ConfigError(f"PAYEVENTS_DATABASE_URL: {problem} (postgresql+psycopg://user@host/db, or unset:"
                              " SQLite in the data dir)")


#: the database URLs a store takes, as an error names them
DATABASE_URL_FORMS: Final = "postgresql+psycopg://user@host/db or sqlite:///path"


def database_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a store's database (None when it can: SQLite or PostgreSQL). Never shows more of the
    URL than its scheme (the rest may hold a password)."""
    scheme, sep, _rest = url.partition("://")
    scheme = scheme.strip()
    if not sep:
        return "no scheme:// given"
    if not (scheme == "sqlite" or scheme.startswith(("sqlite+", "postgresql"))):
        return f"{scheme[:40]}:// is not supported"
    return None


def check_api_token(settings: Settings) -> None:
    """Outside dev (sit, prod) the HTTP API needs an explicitly set token that is not the dev default and
    has at least :data:`MIN_API_TOKEN_LENGTH` characters; otherwise one ConfigError line (never the token)."""
    env = settings.env.value
    if env == "dev":
        return
    token = settings.api_token.get_secret_value().strip()
    if token == DEV_API_TOKEN:
        problem = "is unset or the dev default"
    elif len(token) < MIN_API_TOKEN_LENGTH:
        problem = f"has {len(token)} characters"
    else:
        return
    raise ConfigError(
        f"PAYEVENTS_API_TOKEN: env {env} needs an explicitly set API token of at least {MIN_API_TOKEN_LENGTH} "
        f"characters that is not the dev default; it {problem} "
        "(make one: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )


def _env(value: Any, name: str) -> Env:
    try:
        return parse_env(value)
    except ContractError as exc:
        raise ConfigError(f"{name}: {exc}") from None


#: the Kafka settings the embedded log also takes from ``PAYEVENTS_KAFKA_CONFIG``: (unit, low, high) — librdkafka's
#: own ranges for its properties, so a value is refused alike on both transports; minutes for the broker's
#: ``offsets.retention.minutes`` (at most 100 years)
EMBEDDED_KAFKA_KNOBS: Final = {
    "session.timeout.ms": ("milliseconds", 1, 3_600_000),
    "heartbeat.interval.ms": ("milliseconds", 1, 3_600_000),
    "message.max.bytes": ("bytes", 1000, 1_000_000_000),
    "offsets.retention.minutes": ("minutes", 1, 52_560_000),
}


def embedded_kafka_knobs(cfg: Mapping[str, str]) -> dict[str, int]:
    """Those of :data:`EMBEDDED_KAFKA_KNOBS` that ``cfg`` sets, as integers; a value that is not a whole number
    in its range is a ConfigError naming it."""
    got: dict[str, int] = {}
    for key, (unit, low, high) in EMBEDDED_KAFKA_KNOBS.items():
        raw = cfg.get(key)
        if raw is None:
            continue
        text = str(raw).strip()
        if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
            raise ConfigError(f"PAYEVENTS_KAFKA_CONFIG: {key}={str(raw)[:40]!r} must be a whole number of {unit}"
                              f" from {low:,} to {high:,}")
        got[key] = int(text)
    return got


def _positive_int(value: str, name: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not an integer") from None
    if n < 1:
        raise ConfigError(f"{name}: {n} must be a positive integer")
    return n


#: a schema prefix: lower-case letters, digits and underscores, not starting with a digit (empty: none)
_SCHEMA_PREFIX: Final = re.compile(r"(?:[a-z_][a-z0-9_]*)?")
#: leaves room for a service's name in PostgreSQL's 63 bytes
MAX_SCHEMA_PREFIX: Final = 40


# -- the process's own knobs (read where they are used, checked here: one line naming the variable and the rule) --


def seconds_env(name: str, default: float, maximum: float) -> float:
    """A positive number of seconds, at most ``maximum``, from the environment variable ``name`` (``default`` when
    unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number of seconds") from None
    if not value > 0:
        raise ConfigError(f"{name}: {raw!r} must be positive")
    if value > maximum:
        raise ConfigError(f"{name}: {raw!r} must be at most {maximum:g} s")
    return value


def port_env(name: str) -> int:
    """A TCP port from the environment variable ``name`` (0 when unset or empty: any free port)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"{name}: {raw!r} is not a port (0 to 65535)")
    return int(raw)


LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level_env(name: str = "PAYEVENTS_LOG_LEVEL") -> str:
    raw = os.environ.get(name, "").strip() or "INFO"
    if raw.upper() not in LOG_LEVELS:
        raise ConfigError(f"{name}: {raw!r} must be {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}")
    return raw.upper()


def _kafka_config(value: str) -> dict[str, str]:
    """JSON object, or comma-separated key=value pairs, of librdkafka settings."""
    value = value.strip()
    if value.startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"PAYEVENTS_KAFKA_CONFIG: not valid JSON ({exc.msg})") from None
        return {str(k): str(v) for k, v in parsed.items()}
    out: dict[str, str] = {}
    for i, part in enumerate(filter(None, (p.strip() for p in value.split(","))), start=1):
        if "=" not in part:
            # never echo the item: it may be the tail of a password that holds a comma
            raise ConfigError(f"PAYEVENTS_KAFKA_CONFIG: item {i} is not key=value (use JSON for values with commas)")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out
