"""The Faust app, built in one place from settings. Nothing connects at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from faust.transport.producer import ProducerBuffer

from app.errors import SettingsError
from app.metrics import Metrics
from app.settings import Settings
from app.stream import faust_patches, sensors
from app.wire.kafka_conn import faust_credentials, options
from app.wire.kafka_io import topic_configs
from rules import Engine, load_ruleset


def build_engine(settings: Settings) -> Engine:
    return Engine([load_ruleset(spec) for spec in settings.rules], tz=settings.timezone)


def rocksdb_options(settings: Settings) -> dict[str, Any]:
    """Per-partition RocksDB options: a bounded block cache instead of rocksdict's 2 GiB."""
    return {
        "block_cache_size": settings.rocksdb_cache_mb * 1024 * 1024,
        "write_buffer_size": 16 * 1024 * 1024,
        "max_write_buffer_number": 2,
        "max_open_files": 512,
    }


def create_app(settings: Settings, metrics: Metrics | None = None) -> tuple[faust.App, Any]:
    """Return (app, pipeline). Registers agents, timer, tables and web views."""
    from agents.due_index import DueIndex
    from agents.pipeline import Pipeline, register
    from agents.population import Rounds
    from agents.population_io import register_population
    from agents.scenarios import build_runner, calendar_fingerprint, register_actions

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(",") if b.strip()],
        broker_credentials=faust_credentials(settings),
        topic_replication_factor=settings.replication_factor,
        canonical_url=settings.canonical_url,
        store=settings.store,
        datadir=settings.data_dir,
        autodiscover=False,
        processing_guarantee=settings.guarantee,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        key_serializer="raw",
        value_serializer="raw",
        stream_buffer_maxsize=16384,
        broker_max_poll_records=2000,
        consumer_max_fetch_size=4 * 1024 * 1024,
        producer_linger=0.0,  # the clients agent waits for change-event acks
        producer_max_batch_size=256 * 1024,
        broker_commit_every=10_000,
        broker_commit_interval=2.8,
        table_standby_replicas=0,
        web_stats_enabled=False,
        web_graph_enabled=False,
    )
    # Faust's table writes go through its producer buffer (the clients agent's own do not
    # under at-least-once: agents.batching.ClientTable); the conductor stops consuming while
    # it holds more than max_messages (default 100), which throttled the agent to a few
    # hundred events/s here. A larger buffer lets those changelog sends batch.
    ProducerBuffer.max_messages = settings.producer_buffer
    faust_patches.apply(settings.fast_drain, settings.fetch_max_wait_ms)
    metrics = metrics or Metrics.create()
    sensors.install(app, metrics.registry, pattern="/metrics")
    n = settings.partitions
    configs = topic_configs(settings)
    engine = build_engine(settings)
    if engine.spec.stats and not settings.store.startswith("rocksdb"):
        raise SettingsError("LOYALTY_STORE", "rules that read population.* or a predictive metric need the "
                            "rocksdb:// store (population rounds scan each partition's database)")
    runner = build_runner(settings, engine.rulesets)
    if runner is not None:
        runner.models_at = engine.models_at  # predictive metrics a scenario reads
    engine.fingerprint = calendar_fingerprint(engine.fingerprint, runner)  # see its docstring
    pipeline = Pipeline(
        app=app,
        engine=engine,
        metrics=metrics,
        clock=settings.clock_fn(),
        receipts=app.topic(settings.topic_receipts, key_type=bytes, value_type=bytes),
        profiles=app.topic(settings.topic_profiles, key_type=bytes, value_type=bytes),
        communications=app.topic(settings.topic_communications, key_type=bytes, value_type=bytes),
        facts=(app.topic(settings.facts_topic, key_type=bytes, value_type=bytes)
               if settings.facts_topic else None),
        client_events=app.topic(settings.topic_client_events, key_type=bytes, value_type=bytes,
                                partitions=n, internal=True, config=configs),
        changes=app.topic(settings.topic_changes, key_type=bytes, value_type=bytes),
        dlq=app.topic(settings.topic_dlq, key_type=bytes, value_type=bytes),
        clients=app.Table("clients", key_type=bytes, value_type=bytes, partitions=n,
                          options=rocksdb_options(settings), extra_topic_configs=configs),
        due_index=DueIndex(),
        inflight={},
        fault_stall_partition=settings.fault_stall_partition,
        input_next={},
        batch_max=settings.batch_max,
        batch_within=settings.batch_within,
        direct_sends=settings.guarantee == "at_least_once",
        kafka=options(settings),
        scenarios=runner,
        actions=register_actions(app, settings) if runner is not None else None,
        earliest=settings.earliest,
        lateness=round(settings.allowed_lateness),
        idle_s=settings.watermark_idle,
        partitions=n,
        rounds=Rounds.create(engine, settings.population_cadence, n, settings.earliest),
        population_topic=settings.topic_population,
    )
    register(pipeline, settings.due_interval)
    register_population(app, pipeline, options(settings))
    from agents.monitor import register_monitor

    register_monitor(app, pipeline, settings)
    from app.serving.web import register_web

    register_web(app, pipeline, settings)
    from agents.projector import register_projector

    register_projector(app, pipeline, settings)
    return app, pipeline
