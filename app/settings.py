"""One settings object, read from the environment (12-factor). Nothing connects here.

Parsing and validation are pydantic-settings': each field names its environment variable
(``validation_alias``), its default and its meaning (``description``, from which
``docs/reference/settings.md`` is generated). An invalid value raises
:class:`app.errors.SettingsError` naming the variable. An empty variable counts as unset.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from app.errors import SettingsError

_EXACTLY_ONCE = (
    "exactly_once is not offered: with faust-streaming 0.15.3 on Kafka 3.9 a worker "
    "restarted after SIGKILL kept failing with ProducerFenced and ~15% of the changes "
    "never appeared (docs/explanation/delivery-guarantees.md); use at_least_once "
    "(deterministic event ids)"
)

Csv = Annotated[tuple[str, ...], NoDecode]
MIN_TOKEN = 16
# Secrets may also come from a file: <NAME>_FILE (Kubernetes and Docker secrets are files).
SECRET_VARIABLES = ("KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD", "LOYALTY_API_TOKEN", "REDIS_URL")


def _env(name: str, default: Any, meaning: str, **constraints: Any) -> Any:
    return Field(default, validation_alias=name, description=meaning, **constraints)


class Settings(BaseSettings):
    """The service's settings; build them with :meth:`from_env`."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=True,
                                      env_ignore_empty=True, populate_by_name=False)

    kafka_bootstrap: str = _env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092", "Kafka brokers, comma-separated")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = _env(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` (every Kafka "
        "client of the service: worker, projector, CLI)")
    kafka_ssl_cafile: str = _env("KAFKA_SSL_CAFILE", "", "PEM file of the CA that signed the brokers' "
                                 "certificates (empty: the system's trusted CAs)")
    kafka_ssl_certfile: str = _env("KAFKA_SSL_CERTFILE", "", "PEM client certificate, for brokers that "
                                   "require TLS client authentication (mTLS)")
    kafka_ssl_keyfile: str = _env("KAFKA_SSL_KEYFILE", "", "PEM private key of KAFKA_SSL_CERTFILE")
    kafka_ssl_key_password: SecretStr = _env("KAFKA_SSL_KEY_PASSWORD", SecretStr(""),
                                             "password of KAFKA_SSL_KEYFILE, if encrypted (or "
                                             "KAFKA_SSL_KEY_PASSWORD_FILE)")
    kafka_ssl_check_hostname: bool = _env("KAFKA_SSL_CHECK_HOSTNAME", True,
                                          "verify that a broker's certificate names the host connected to")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = _env(
        "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (SASL protocols)")
    kafka_sasl_username: str = _env("KAFKA_SASL_USERNAME", "", "SASL user name (required by the SASL protocols)")
    kafka_sasl_password: SecretStr = _env("KAFKA_SASL_PASSWORD", SecretStr(""),
                                          "SASL password (or KAFKA_SASL_PASSWORD_FILE: a file holding it); "
                                          "never logged or printed")
    replication_factor: int = _env("LOYALTY_REPLICATION_FACTOR", 1,
                                   "replicas of every topic the service creates, Faust's changelog and internal "
                                   "topics included (1 suits the local single broker; 3 on a real cluster)", ge=1)
    min_insync_replicas: int = _env("LOYALTY_MIN_INSYNC_REPLICAS", 1,
                                    "`min.insync.replicas` of the topics the service creates (2 with 3 replicas: "
                                    "an acknowledged write survives a broker loss)", ge=1)
    connect_timeout: float = _env("LOYALTY_CONNECT_TIMEOUT", 60.0,
                                  "seconds a starting worker, lookup server or CLI command waits for Kafka and "
                                  "Redis before it stops with an error (once running, outages are retried)", gt=0)
    redis_url: str = _env("REDIS_URL", "redis://127.0.0.1:6379/0", "Redis for the projection (or REDIS_URL_FILE; "
                          "a password in it is masked in output)", repr=False)
    app_id: str = _env("LOYALTY_APP_ID", "loyalty", "Faust app id: consumer group, changelog topic prefix, "
                       "Redis key namespace")
    rules: Csv = _env("LOYALTY_RULES", ("boostfeel", "rfm"),
                      "rule sets: preset names or YAML paths, comma-separated")
    timezone: str = _env("LOYALTY_TIMEZONE", "UTC", "business time zone (days, months, quiet hours), an IANA name")
    data_dir: str = _env("LOYALTY_DATA_DIR", ".local/worker", "RocksDB tables and Faust state")
    store: str = _env("LOYALTY_STORE", "rocksdb://", "table store (`memory://` for unit tests)")
    rocksdb_cache_mb: int = _env("LOYALTY_ROCKSDB_CACHE_MB", 32,
                                 "block cache (MiB) per partition database (rocksdict default: 2 GiB)", ge=1)
    partitions: int = _env("LOYALTY_PARTITIONS", 8, "partitions of the topics this service creates", ge=1)
    topic_receipts: str = _env("LOYALTY_TOPIC_RECEIPTS", "pos.receipts", "input: POS receipts")
    topic_profiles: str = _env("LOYALTY_TOPIC_PROFILES", "crm.client-profiles", "input: CRM client profiles")
    topic_facts: str = _env("LOYALTY_TOPIC_FACTS", "loyalty.receipt-facts",
                            "output: one fact per applied receipt (amount, segments) for the period "
                            "reports; none: not published (and no period report)")
    topic_communications: str = _env("LOYALTY_TOPIC_COMMUNICATIONS", "crm.communications",
                                     "input: communication events (messages sent, opened, answered...)")
    topic_changes: str = _env("LOYALTY_TOPIC_CHANGES", "loyalty.segment-changes",
                              "output: segment-changed CloudEvents")
    topic_dlq: str = _env("LOYALTY_TOPIC_DLQ", "loyalty.receipts.dlq", "rejected input, with the reason")
    topic_client_events: str = _env("LOYALTY_TOPIC_CLIENT_EVENTS", "loyalty.client-events",
                                    "internal: inputs repartitioned by client id, and due ticks")
    topic_population: str = _env("LOYALTY_TOPIC_POPULATION", "loyalty.population",
                                 "internal: population snapshots (partial aggregates and rounds; compacted, "
                                 "one partition)")
    population_cadence: Literal["day", "week", "month"] = _env(
        "LOYALTY_POPULATION_CADENCE", "day",
        "population snapshots at every business midnight (`day`), Monday midnight (`week`) or first of the "
        "month (`month`); only for rule sets that read population.*")
    due_interval: float = _env("LOYALTY_DUE_INTERVAL", 5.0, "seconds between due-index scans", gt=0)
    due_max_delay: float = _env("LOYALTY_DUE_MAX_DELAY", 60.0,
                                "the bound (seconds) the tests hold the lateness of a time-based change to; the "
                                "worker does not read it (its due scan runs every LOYALTY_DUE_INTERVAL)", gt=0)
    clock: str = _env("LOYALTY_CLOCK", "wall",
                      "`wall`, or a fixed ISO 8601 instant with offset (tests, demos over historical data)")
    earliest_event: str = _env("LOYALTY_EARLIEST_EVENT", "1970-01-01T00:00:00Z",
                               "earliest event time accepted (ISO 8601 instant with offset, from 1970 on); "
                               "older receipts and profiles are rejected as too_old_timestamp")
    allowed_lateness: float = _env("LOYALTY_ALLOWED_LATENESS", 0.0,
                                   "seconds time-based changes wait behind the inputs' event-time watermark, "
                                   "for receipts that arrive a little out of order", ge=0)
    watermark_idle: float = _env("LOYALTY_WATERMARK_IDLE", 10.0,
                                 "seconds after which an input partition read to its end with nothing new no "
                                 "longer holds the event-time watermark back (it then follows the clock)", gt=0)
    guarantee: str = _env("LOYALTY_GUARANTEE", "at_least_once",
                          "delivery guarantee; the only value is `at_least_once` (exactly_once is refused)")
    web_host: str = _env("LOYALTY_WEB_HOST", "127.0.0.1", "address of the HTTP API, /metrics, health "
                         "and the lookup server")
    web_port: int = _env("LOYALTY_WEB_PORT", 6066, "port of the worker's HTTP API, /metrics and health",
                         ge=1, le=65535)
    advertised_url: str = _env("LOYALTY_ADVERTISED_URL", "",
                               "the URL other workers reach this worker's HTTP API at, for cluster-wide answers "
                               "(empty: http://LOYALTY_WEB_HOST:LOYALTY_WEB_PORT; in Kubernetes "
                               "http://$(POD_IP):6066)")
    lookup_port: int = _env("LOYALTY_LOOKUP_PORT", 6068, "port of the POS lookup server (`loyalty lookup`)", ge=1,
                           le=65535)
    lookup_cache: int = _env("LOYALTY_LOOKUP_CACHE", 100_000,
                             "clients whose rendered lookup the lookup server keeps (0: none)", ge=0)
    history_days: int = _env("LOYALTY_HISTORY_DAYS", 730,
                             "membership history in the projection: intervals that ended more than this many "
                             "days before a client's latest change in the dimension are dropped", ge=1, le=36600)
    web_max_connections: int = _env("LOYALTY_WEB_MAX_CONNECTIONS", 1024,
                                    "open connections the worker's HTTP server accepts; beyond: 503 and close", ge=1)
    web_header_timeout: float = _env("LOYALTY_WEB_HEADER_TIMEOUT", 10.0,
                                     "seconds a request's head may take from its first byte (worker HTTP)", gt=0)
    lookup_max_connections: int = _env("LOYALTY_LOOKUP_MAX_CONNECTIONS", 4096,
                                       "open connections the lookup server accepts; beyond: 503 and close", ge=1)
    lookup_header_timeout: float = _env("LOYALTY_LOOKUP_HEADER_TIMEOUT", 10.0,
                                        "seconds a lookup request's head may take from its first byte", gt=0)
    loop: Literal["uvloop", "asyncio"] = _env("LOYALTY_LOOP", "uvloop",
                                              "the worker's event loop (uvloop measured +18% receipts/s)")
    api_token: str = _env("LOYALTY_API_TOKEN", "", "bearer token for the HTTP API and the lookup server "
                          "(or LOYALTY_API_TOKEN_FILE) "
                          "(empty: authentication off, allowed on a loopback address only); at least "
                          f"{MIN_TOKEN} characters on any other address", repr=False)
    allow_no_token: bool = _env("LOYALTY_ALLOW_NO_TOKEN", False,
                                "serve without a token on a non-loopback LOYALTY_WEB_HOST (trusted networks only)")
    stall_timeout: float = _env("LOYALTY_STALL_TIMEOUT", 120.0,
                                "seconds of lag without progress before a partition counts as stalled", gt=0)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = _env(
        "LOYALTY_LOG_LEVEL", "info", "log level: `debug`, `info`, `warning`, `error` or `critical`")
    producer_buffer: int = _env("LOYALTY_PRODUCER_BUFFER", 5000,
                                "Faust producer buffer (messages) before consumption pauses", ge=100)
    stall_action: Literal["none", "seek", "exit"] = _env(
        "LOYALTY_STALL_ACTION", "none",
        "on a stalled partition: `none` (not ready only), `seek`, `exit` (code 70)")
    fast_drain: bool = _env("LOYALTY_FAST_DRAIN", False, "opt-in consumer patch: faster for a trivial agent, "
                            "no measured gain for the real worker (docs/explanation/faust-workarounds.md)")
    fetch_max_wait_ms: int = _env("LOYALTY_FETCH_MAX_WAIT_MS", 100,
                                  "longest a consumer fetch waits at the broker (Faust: 1500, which stalled agents)",
                                  ge=1)
    batch_max: int = _env("LOYALTY_BATCH_MAX", 500,
                          "messages the clients agent handles per batch (one broker ack wait per batch)", ge=1)
    batch_within: float = _env("LOYALTY_BATCH_WITHIN", 0.05, "seconds the clients agent waits to fill a batch",
                               gt=0)
    log_format: Literal["text", "json"] = _env("LOYALTY_LOG_FORMAT", "text",
                                               "`text`, or `json` (one JSON object per line)")
    fault_stall_partition: int = _env("LOYALTY_FAULT_STALL_PARTITION", -1,
                                      "fault injection for tests: the router blocks on this input partition")
    topic_actions: str = _env("LOYALTY_TOPIC_ACTIONS", "loyalty.scenario-actions", "output: scenario actions")
    topic_actions_dlq: str = _env("LOYALTY_TOPIC_ACTIONS_DLQ", "loyalty.scenario-actions.dlq",
                                  "actions the webhook could not deliver")
    scenarios: Csv = _env("LOYALTY_SCENARIOS", ("all",),
                          "`all` (every preset scenario whose dimension the rule sets define), `none`, "
                          "or scenario preset names / YAML paths, comma-separated")
    contact_policy: str = _env("LOYALTY_CONTACT_POLICY", "",
                               "contact policy YAML shared by the scenarios: caps, suppressing labels, "
                               "default trigger age (empty: the defaults, docs/reference/scenarios.md)")
    webhook_url: str = _env("LOYALTY_WEBHOOK_URL", "", "where actions are POSTed (empty: no webhook)")
    webhook_attempts: int = _env("LOYALTY_WEBHOOK_ATTEMPTS", 5, "webhook attempts per action", ge=1)
    webhook_backoff: float = _env("LOYALTY_WEBHOOK_BACKOFF", 0.5,
                                  "seconds before the first webhook retry, doubled per retry", gt=0)

    @field_validator("rules", "scenarios", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(x.strip() for x in value.split(",") if x.strip())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _readable(cls, value: str) -> str:
        if value and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value!r} (a PEM file)")
        return value

    @field_validator("advertised_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_"):
            if not self.kafka_sasl_username:
                raise _Field("kafka_sasl_username", f"required with KAFKA_SECURITY_PROTOCOL="
                             f"{self.kafka_security_protocol}")
            if not self.kafka_sasl_password.get_secret_value():
                raise _Field("kafka_sasl_password", f"required with KAFKA_SECURITY_PROTOCOL="
                             f"{self.kafka_security_protocol} (or KAFKA_SASL_PASSWORD_FILE)")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise _Field("kafka_ssl_keyfile", "KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        if self.min_insync_replicas > self.replication_factor:
            raise _Field("min_insync_replicas", f"{self.min_insync_replicas} is more than "
                         f"LOYALTY_REPLICATION_FACTOR={self.replication_factor}: every write would fail")
        return self

    @property
    def canonical_url(self) -> str:
        """Where the other workers reach this worker's HTTP API (LOYALTY_ADVERTISED_URL)."""
        return self.advertised_url or f"http://{self.web_host}:{self.web_port}"

    @property
    def facts_topic(self) -> str | None:
        """The receipt-facts topic (None: ``LOYALTY_TOPIC_FACTS=none``, not published)."""
        return None if self.topic_facts.strip().lower() in ("", "none") else self.topic_facts

    @property
    def clients_changelog(self) -> str:
        """Faust's changelog topic of the clients table (``<app id>-clients-changelog``)."""
        return f"{self.app_id}-clients-changelog"

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @field_validator("rules")
    @classmethod
    def _some_rules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one rule set")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except Exception:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Moscow)") from None
        return value

    @field_validator("clock")
    @classmethod
    def _clock(cls, value: str) -> str:
        if value != "wall":
            _fixed_instant(value)
        return value

    @field_validator("earliest_event")
    @classmethod
    def _earliest(cls, value: str) -> str:
        earliest_epoch(value)
        return value

    @field_validator("guarantee")
    @classmethod
    def _guarantee(cls, value: str) -> str:
        if value == "exactly_once":
            raise ValueError(_EXACTLY_ONCE)
        if value != "at_least_once":
            raise ValueError("at_least_once (the only supported value)")
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default: the process environment); unknown names are ignored."""
        source = _MappingSource(cls, _with_secret_files(os.environ if env is None else env))
        try:
            return cls.model_validate(source())
        except _Field as exc:
            raise SettingsError(variable(exc.field), exc.message) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            if isinstance((first.get("ctx") or {}).get("error"), _Field):
                err = first["ctx"]["error"]
                raise SettingsError(variable(err.field), err.message) from None
            raise SettingsError(variable(field), _message(first)) from None

    def check_serving(self) -> None:
        """Secure by default: refuse to serve on a non-loopback address without a real token."""
        if _loopback(self.web_host) or self.allow_no_token:
            return
        if not self.api_token:
            raise SettingsError("LOYALTY_API_TOKEN", f"required to serve on {self.web_host} (not a loopback "
                                "address): e.g. openssl rand -hex 32; or LOYALTY_ALLOW_NO_TOKEN=true on a "
                                "trusted network")
        if len(self.api_token) < MIN_TOKEN:
            raise SettingsError("LOYALTY_API_TOKEN", f"at least {MIN_TOKEN} characters to serve on "
                                f"{self.web_host} (a placeholder or a short word is guessed): "
                                "e.g. openssl rand -hex 32")

    @property
    def earliest(self) -> int:
        """LOYALTY_EARLIEST_EVENT in epoch seconds."""
        return earliest_epoch(self.earliest_event)

    def clock_fn(self) -> Callable[[], datetime]:
        """The service's notion of now: the wall clock, or a fixed instant."""
        if self.clock == "wall":
            return lambda: datetime.now(UTC)
        fixed = _fixed_instant(self.clock)
        return lambda: fixed


class _Field(ValueError):
    """A cross-field check failed on ``field`` (reported under its variable)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(message)


def _with_secret_files(env: Mapping[str, str]) -> Mapping[str, str]:
    """``env`` plus the secrets given as files (``<NAME>_FILE``; the variable itself wins)."""
    out = dict(env)
    for name in SECRET_VARIABLES:
        path = env.get(f"{name}_FILE", "")
        if path and not env.get(name):
            try:
                with open(path, encoding="utf-8") as fh:
                    out[name] = fh.read().strip()
            except OSError as exc:
                raise SettingsError(f"{name}_FILE", f"cannot read {path!r}: {exc.strerror}") from None
    return out


def masked(settings: Settings) -> dict[str, str]:
    """Every setting by variable, as text, secrets masked (``loyalty config``)."""
    out: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        var = str(info.validation_alias)
        if isinstance(value, SecretStr):
            text = "***" if value.get_secret_value() else ""
        elif var == "REDIS_URL":
            text = mask_url(str(value))
        elif var == "LOYALTY_API_TOKEN":
            text = "***" if value else ""
        elif isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        out[var] = text
    return out


def mask_url(url: str) -> str:
    """A URL with its password (``user:password@``) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (tests pass their own)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value for name, value in self._mapping.items() if value != ""}  # empty: unset


def fields() -> dict[str, FieldInfo]:
    """The settings' fields, in declaration order (the reference page is generated from them)."""
    return dict(Settings.model_fields)


def variable(field: str) -> str:
    """The environment variable of a field (or of its alias, as pydantic reports it)."""
    info = Settings.model_fields.get(field)
    return str(info.validation_alias) if info is not None else field


def _message(error: Any) -> str:
    msg = str(error["msg"])
    msg = msg.removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str) and error.get("type") != "value_error":
        msg = f"{msg}, got {value!r}"
    return msg


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _fixed_instant(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise SettingsError("LOYALTY_CLOCK", "'wall' or an ISO 8601 instant with offset") from None
    if t.tzinfo is None:
        raise SettingsError("LOYALTY_CLOCK", "the instant needs a UTC offset")
    return t


def earliest_epoch(text: str) -> int:
    """An earliest-event instant (ISO 8601 with offset, not before 1970) in epoch seconds."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 instant, e.g. 1995-01-01T00:00:00Z") from None
    if t.tzinfo is None:
        raise ValueError(f"{text!r} needs a UTC offset, e.g. 1995-01-01T00:00:00Z")
    if t < datetime(1970, 1, 1, tzinfo=UTC):
        raise ValueError("the earliest accepted instant is 1970-01-01T00:00:00Z (business days are "
                         "stored from 1970)")
    return math.floor(t.timestamp())
