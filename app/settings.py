"""One settings object, read from the environment (12-factor). Nothing connects here.

| variable | default | meaning |
|---|---|---|
| KAFKA_BOOTSTRAP_SERVERS | 127.0.0.1:9092 | Kafka brokers |
| REDIS_URL | redis://127.0.0.1:6379/0 | Redis for the projection |
| LOYALTY_APP_ID | loyalty | Faust app id: consumer group, changelog topic prefix |
| LOYALTY_RULES | boostfeel,rfm | rule sets: preset names or YAML paths, comma-separated |
| LOYALTY_TIMEZONE | UTC | business time zone (days, months, quiet hours) |
| LOYALTY_DATA_DIR | .local/worker | RocksDB tables and Faust state |
| LOYALTY_STORE | rocksdb:// | table store (memory:// for unit tests) |
| LOYALTY_ROCKSDB_CACHE_MB | 32 | block cache per partition database (rocksdict default: 2 GiB) |
| LOYALTY_PARTITIONS | 8 | partitions of the topics this service creates |
| LOYALTY_TOPIC_RECEIPTS | pos.receipts | input: POS receipts |
| LOYALTY_TOPIC_PROFILES | crm.client-profiles | input: CRM profiles |
| LOYALTY_TOPIC_CHANGES | loyalty.segment-changes | output: CloudEvents |
| LOYALTY_TOPIC_DLQ | loyalty.receipts.dlq | rejected input |
| LOYALTY_TOPIC_CLIENT_EVENTS | loyalty.client-events | internal: inputs repartitioned by client id, and due ticks |
| LOYALTY_DUE_INTERVAL | 5 | seconds between due-index scans |
| LOYALTY_DUE_MAX_DELAY | 60 | bound (seconds) on publishing a time-based change after its due instant |
| LOYALTY_CLOCK | wall | `wall`, or a fixed ISO instant (tests, demos over historical data) |
| LOYALTY_GUARANTEE | at_least_once | the only value: exactly_once is refused (README, Delivery) |
| LOYALTY_WEB_HOST / LOYALTY_WEB_PORT | 127.0.0.1 / 6066 | HTTP API, /metrics, health |
| LOYALTY_LOOKUP_PORT | 6068 | port of the POS lookup server (`loyalty lookup`, host LOYALTY_WEB_HOST) |
| LOYALTY_LOOKUP_CACHE | 100000 | clients whose rendered lookup the lookup server keeps (0: none) |
| LOYALTY_LOOP | uvloop | the worker's event loop: uvloop (measured +18% receipts/s) or asyncio |
| LOYALTY_API_TOKEN | (empty: auth off) | bearer token for the HTTP API and the lookup server |
| LOYALTY_STALL_TIMEOUT | 120 | seconds of lag without progress before a partition counts as stalled |
| LOYALTY_LOG_LEVEL | info | log level |
| LOYALTY_PRODUCER_BUFFER | 5000 | Faust producer buffer (messages) before consumption pauses |
| LOYALTY_BATCH_MAX | 500 | messages the clients agent handles per batch (one broker ack wait per batch) |
| LOYALTY_BATCH_WITHIN | 0.05 | seconds the clients agent waits to fill a batch |
| LOYALTY_FAST_DRAIN | false | opt-in consumer patch, ~2x events/s (see app/faust_patches.py) |
| LOYALTY_FETCH_MAX_WAIT_MS | 100 | longest a consumer fetch waits at the broker (Faust: 1500, which stalled agents) |
| LOYALTY_STALL_ACTION | none | on a stalled partition: none (not ready only), seek, exit (code 70) |
| LOYALTY_LOG_FORMAT | text | text or json (one JSON object per line) |
| LOYALTY_FAULT_STALL_PARTITION | -1 | fault injection for tests: the router blocks on this input partition |
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from app.errors import SettingsError


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, f"expected an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(name, f"must be >= {minimum}")
    return value


def _choice(env: Mapping[str, str], name: str, options: tuple[str, ...]) -> str:
    value = env.get(name) or options[0]
    if value not in options:
        raise SettingsError(name, f"one of {', '.join(options)}, got {value!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"expected a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(name, "must be > 0")
    return value


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    app_id: str = "loyalty"
    rules: tuple[str, ...] = ("boostfeel", "rfm")
    timezone: str = "UTC"
    data_dir: str = ".local/worker"
    store: str = "rocksdb://"
    rocksdb_cache_mb: int = 32
    partitions: int = 8
    topic_receipts: str = "pos.receipts"
    topic_profiles: str = "crm.client-profiles"
    topic_changes: str = "loyalty.segment-changes"
    topic_dlq: str = "loyalty.receipts.dlq"
    topic_client_events: str = "loyalty.client-events"
    due_interval: float = 5.0
    due_max_delay: float = 60.0
    clock: str = "wall"
    guarantee: str = "at_least_once"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    lookup_port: int = 6068
    lookup_cache: int = 100_000
    loop: str = "uvloop"
    api_token: str = ""
    stall_timeout: float = 120.0
    log_level: str = "info"
    producer_buffer: int = 5000
    stall_action: str = "none"
    fast_drain: bool = False
    fetch_max_wait_ms: int = 100
    batch_max: int = 500
    batch_within: float = 0.05
    log_format: str = "text"
    fault_stall_partition: int = -1
    topic_actions: str = "loyalty.scenario-actions"
    topic_actions_dlq: str = "loyalty.scenario-actions.dlq"
    scenarios: tuple[str, ...] = ("all",)
    webhook_url: str = ""
    webhook_attempts: int = 5
    webhook_backoff: float = 0.5

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        g = env.get
        rules = tuple(r.strip() for r in g("LOYALTY_RULES", "boostfeel,rfm").split(",") if r.strip())
        if not rules:
            raise SettingsError("LOYALTY_RULES", "name at least one rule set")
        guarantee = g("LOYALTY_GUARANTEE", "at_least_once")
        if guarantee == "exactly_once":
            raise SettingsError(
                "LOYALTY_GUARANTEE",
                "exactly_once is not offered: with faust-streaming 0.15.3 on Kafka 3.9 a worker "
                "restarted after SIGKILL kept failing with ProducerFenced and ~15% of the changes "
                "never appeared (README, Delivery); use at_least_once (deterministic event ids)",
            )
        if guarantee != "at_least_once":
            raise SettingsError("LOYALTY_GUARANTEE", "at_least_once (the only supported value)")
        clock = g("LOYALTY_CLOCK", "wall")
        if clock != "wall":
            _fixed_instant(clock)
        settings = cls(
            kafka_bootstrap=g("KAFKA_BOOTSTRAP_SERVERS", cls.kafka_bootstrap),
            redis_url=g("REDIS_URL", cls.redis_url),
            app_id=g("LOYALTY_APP_ID", cls.app_id),
            rules=rules,
            timezone=g("LOYALTY_TIMEZONE", cls.timezone),
            data_dir=g("LOYALTY_DATA_DIR", cls.data_dir),
            store=g("LOYALTY_STORE", cls.store),
            rocksdb_cache_mb=_int(env, "LOYALTY_ROCKSDB_CACHE_MB", cls.rocksdb_cache_mb, 1),
            partitions=_int(env, "LOYALTY_PARTITIONS", cls.partitions, 1),
            topic_receipts=g("LOYALTY_TOPIC_RECEIPTS", cls.topic_receipts),
            topic_profiles=g("LOYALTY_TOPIC_PROFILES", cls.topic_profiles),
            topic_changes=g("LOYALTY_TOPIC_CHANGES", cls.topic_changes),
            topic_dlq=g("LOYALTY_TOPIC_DLQ", cls.topic_dlq),
            topic_client_events=g("LOYALTY_TOPIC_CLIENT_EVENTS", cls.topic_client_events),
            due_interval=_float(env, "LOYALTY_DUE_INTERVAL", cls.due_interval),
            due_max_delay=_float(env, "LOYALTY_DUE_MAX_DELAY", cls.due_max_delay),
            clock=clock,
            guarantee=guarantee,
            web_host=g("LOYALTY_WEB_HOST", cls.web_host),
            web_port=_int(env, "LOYALTY_WEB_PORT", cls.web_port, 1),
            lookup_port=_int(env, "LOYALTY_LOOKUP_PORT", cls.lookup_port, 1),
            lookup_cache=_int(env, "LOYALTY_LOOKUP_CACHE", cls.lookup_cache, 0),
            loop=_choice(env, "LOYALTY_LOOP", ("uvloop", "asyncio")),
            api_token=g("LOYALTY_API_TOKEN", cls.api_token),
            stall_timeout=_float(env, "LOYALTY_STALL_TIMEOUT", cls.stall_timeout),
            log_level=g("LOYALTY_LOG_LEVEL", cls.log_level),
            producer_buffer=_int(env, "LOYALTY_PRODUCER_BUFFER", cls.producer_buffer, 100),
            stall_action=_choice(env, "LOYALTY_STALL_ACTION", ("none", "seek", "exit")),
            fast_drain=g("LOYALTY_FAST_DRAIN", "false").lower() in ("1", "true", "yes"),
            fetch_max_wait_ms=_int(env, "LOYALTY_FETCH_MAX_WAIT_MS", cls.fetch_max_wait_ms, 1),
            batch_max=_int(env, "LOYALTY_BATCH_MAX", cls.batch_max, 1),
            batch_within=_float(env, "LOYALTY_BATCH_WITHIN", cls.batch_within),
            log_format=_choice(env, "LOYALTY_LOG_FORMAT", ("text", "json")),
            fault_stall_partition=int(g("LOYALTY_FAULT_STALL_PARTITION", "-1") or -1),
            topic_actions=g("LOYALTY_TOPIC_ACTIONS", cls.topic_actions),
            topic_actions_dlq=g("LOYALTY_TOPIC_ACTIONS_DLQ", cls.topic_actions_dlq),
            scenarios=tuple(x.strip() for x in g("LOYALTY_SCENARIOS", "all").split(",") if x.strip()),
            webhook_url=g("LOYALTY_WEBHOOK_URL", cls.webhook_url),
            webhook_attempts=_int(env, "LOYALTY_WEBHOOK_ATTEMPTS", cls.webhook_attempts, 1),
            webhook_backoff=_float(env, "LOYALTY_WEBHOOK_BACKOFF", cls.webhook_backoff),
        )
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(settings.timezone)
        except Exception:
            raise SettingsError("LOYALTY_TIMEZONE", f"unknown time zone {settings.timezone!r}") from None
        return settings

    def clock_fn(self) -> Callable[[], datetime]:
        """The service's notion of now: the wall clock, or a fixed instant."""
        if self.clock == "wall":
            return lambda: datetime.now(UTC)
        fixed = _fixed_instant(self.clock)
        return lambda: fixed


def _fixed_instant(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise SettingsError("LOYALTY_CLOCK", "'wall' or an ISO 8601 instant with offset") from None
    if t.tzinfo is None:
        raise SettingsError("LOYALTY_CLOCK", "the instant needs a UTC offset")
    return t
