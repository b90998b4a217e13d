"""The lookup server's Prometheus metrics, kept as plain numbers and read at scrape time:
requests by status, a latency histogram, memory hits, Redis reads by kind, and whether
the cache's invalidation subscription is live."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Stats(Collector):
    """Requests by status and a latency histogram, kept as plain numbers, read at scrape."""

    def __init__(self) -> None:
        self.status: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.memory_hits = 0
        self.reads = {"document": 0, "hash": 0}  # rows read from Redis, by kind
        self.live = False

    def observe(self, status: int, seconds: float) -> None:
        self.status[status] = self.status.get(status, 0) + 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("loyalty_lookup_requests", "Lookup server requests",
                                       labels=["status"])
        for status, n in sorted(self.status.items()):
            requests.add_metric([str(status)], n)
        yield requests
        cumulative, acc = [], 0
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], self.buckets, strict=True):
            acc += n
            cumulative.append((bound, acc))
        yield HistogramMetricFamily("loyalty_lookup_seconds",
                                    "Lookup server latency, request parsed to response written",
                                    buckets=cumulative, sum_value=self.total)
        yield CounterMetricFamily("loyalty_lookup_memory_hits",
                                  "Lookups answered from the cache without a Redis read",
                                  value=self.memory_hits)
        reads = CounterMetricFamily("loyalty_lookup_reads",
                                    "Clients read from Redis: document (pre-rendered by the "
                                    "projection), hash (rendered here)",
                                    labels=["kind"])
        for kind, n in self.reads.items():
            reads.add_metric([kind], n)
        yield reads
        yield GaugeMetricFamily("loyalty_lookup_invalidation_live",
                                "1 while the cache's invalidation subscription is up",
                                value=1 if self.live else 0)
