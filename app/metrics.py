"""Prometheus metrics of the service (bounded labels: never a client id)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LAG = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 21600, 86400, 604800)


class Spec(NamedTuple):
    """One metric of :class:`Metrics` (``docs/reference/prometheus-metrics.md`` is generated from these)."""

    attr: str
    kind: type[Counter] | type[Gauge] | type[Histogram]
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    def build(self, registry: CollectorRegistry) -> Any:
        extra: dict[str, Any] = {"buckets": self.buckets} if self.buckets else {}
        return self.kind(self.name, self.help, list(self.labels), registry=registry, **extra)


SPECS: tuple[Spec, ...] = (
    Spec("receipts", Counter, "loyalty_receipts", "Receipts handled", ("outcome",)),
    Spec("communications", Counter, "loyalty_communications", "Communication events handled",
         ("outcome",)),
    Spec("rejected", Counter, "loyalty_receipts_rejected", "Rejected input by reason", ("reason",)),
    Spec("dlq_writes", Counter, "loyalty_dlq_writes", "Messages written to the DLQ", ("source",)),
    Spec("transitions", Counter, "loyalty_segment_transitions", "Segment changes",
         ("dimension", "from_segment", "to_segment")),
    Spec("segment_clients", Gauge, "loyalty_segment_clients",
         "Clients per segment, cluster-wide (one worker exports it: the one with client-events partition 0)",
         ("dimension", "segment")),
    Spec("processing", Histogram, "loyalty_processing_seconds", "Handling time per message", ("kind",),
         buckets=_LATENCY),
    Spec("event_time_lag", Histogram, "loyalty_event_time_lag_seconds",
         "Now minus receipt occurred_at at processing", buckets=_LAG),
    Spec("due_backlog", Gauge, "loyalty_due_backlog", "Time-based transitions due and not yet fired"),
    Spec("due_lateness", Histogram, "loyalty_due_lateness_seconds",
         "Publish time minus due instant of time-based changes", buckets=_LAG),
    Spec("consumer_lag", Gauge, "loyalty_consumer_lag", "Messages behind the end of the partition",
         ("topic", "partition")),
    Spec("partition_stalled", Gauge, "loyalty_partition_stalled", "1: lag but no progress", ("topic", "partition")),
    Spec("ready", Gauge, "loyalty_ready", "1 when the worker is ready"),
    Spec("projection_lag", Gauge, "loyalty_projection_lag_seconds", "Age of the oldest unprojected change"),
    Spec("projection_errors", Counter, "loyalty_projection_errors", "Redis projection errors"),
    Spec("scenario_actions", Counter, "loyalty_scenario_actions", "Scenario actions", ("scenario",)),
    Spec("scenario_conversions", Counter, "loyalty_scenario_conversions", "Converted actions", ("scenario",)),
    Spec("scenario_skipped", Counter, "loyalty_scenario_skipped",
         "Scenario triggers that gave no action, by reason (cooldown, capped, contact_cap, no_consent, stale...)",
         ("scenario", "reason")),
    Spec("blocked", Gauge, "loyalty_blocked", "1 while an infrastructure error stops this work (retried)",
         ("what",)),
    Spec("processing_errors", Counter, "loyalty_processing_errors",
         "Records sent to the DLQ because processing them raised (reason processing_error)", ("agent",)),
    Spec("offset_gaps", Counter, "loyalty_offset_gaps", "Records of an internal topic skipped (never delivered)",
         ("topic",)),
    Spec("population_round", Gauge, "loyalty_population_round_seconds",
         "Event-time instant (epoch s) of the last population round this worker applied (rules that read "
         "population.*)"),
    Spec("population_pending", Gauge, "loyalty_population_pending_seconds",
         "Event-time instant (epoch s) of the open population round: inputs dated from it on are held"),
)


@dataclass
class Metrics:
    registry: CollectorRegistry
    receipts: Counter
    communications: Counter
    rejected: Counter
    dlq_writes: Counter
    transitions: Counter
    segment_clients: Gauge
    processing: Histogram
    event_time_lag: Histogram
    due_backlog: Gauge
    due_lateness: Histogram
    consumer_lag: Gauge
    partition_stalled: Gauge
    ready: Gauge
    projection_lag: Gauge
    projection_errors: Counter
    scenario_actions: Counter
    scenario_conversions: Counter
    scenario_skipped: Counter
    blocked: Gauge
    processing_errors: Counter
    offset_gaps: Counter
    population_round: Gauge
    population_pending: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        r = registry or CollectorRegistry()
        return cls(registry=r, **{spec.attr: spec.build(r) for spec in SPECS})

    def transition(self, dimension: str, from_: str | None, to: str, value_dimension: bool) -> None:
        if value_dimension:  # computed ids (e.g. "545") would multiply series: keep them out
            from_, to = "*", "*"
        self.transitions.labels(dimension, from_ or "none", to).inc()
