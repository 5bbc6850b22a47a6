"""Prometheus metrics for ``GET /metrics``.

Counted here: requests by route and status, queue wait and time to first token, tokens
generated. Read from Redis at scrape time: queue depths and the per-worker figures that
workers publish with their heartbeats (busy slots, tokens/s).
"""

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.fleet_view import snapshot
from shared.history import ApiTally

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, connection: redis.Redis) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mlxq_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "mlxq_queue_wait_seconds",
            "From enqueue until a worker accepted the job.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_token = Histogram(
            "mlxq_time_to_first_token_seconds",
            "From enqueue until the first streamed token reached the API.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "mlxq_generated_tokens",
            "Tokens generated for answered requests.",
            ["model"],
            registry=self.registry,
        )
        self.reroutes = Counter(
            "mlxq_route_fallbacks",
            "Requests routed to a worker's own queue that another worker took instead.",
            registry=self.registry,
        )
        self.registry.register(_FleetCollector(connection))
        self.recent = ApiTally()
        """Requests and times to first token since the last beat, for the fleet's history."""


class _FleetCollector(Collector):
    """Queue depths and worker figures, read from Redis when Prometheus scrapes."""

    def __init__(self, connection: redis.Redis) -> None:
        self._connection = connection

    def collect(self):
        try:
            fleet = snapshot(self._connection)
        except redis.RedisError:
            return
        queued = GaugeMetricFamily("mlxq_queue_depth", "Jobs waiting.", labels=["queue", "model"])
        failed = GaugeMetricFamily("mlxq_failed_jobs", "Failed jobs kept by RQ.", labels=["queue"])
        for q in fleet["queues"]:
            queued.add_metric([q["queue"], q["model"] or ""], q["queued"])
            failed.add_metric([q["queue"]], q["failed"])
        labels = ["worker", "host", "model"]
        busy = GaugeMetricFamily(
            "mlxq_worker_busy_slots", "Jobs a worker is running.", labels=labels
        )
        slots = GaugeMetricFamily(
            "mlxq_worker_slots", "Jobs a worker can run at once.", labels=labels
        )
        rate = GaugeMetricFamily(
            "mlxq_worker_tokens_per_second",
            "A worker's generation rate (10 s window).",
            labels=labels,
        )
        cache_bytes = GaugeMetricFamily(
            "mlxq_prefix_cache_bytes", "KV bytes a worker's prefix cache holds.", labels=labels
        )
        queried = CounterMetricFamily(
            "mlxq_prefix_cache_queries_tokens",
            "Prompt tokens looked up in a worker's prefix cache.",
            labels=labels,
        )
        hits = CounterMetricFamily(
            "mlxq_prefix_cache_hits_tokens",
            "Prompt tokens whose KV came from a worker's prefix cache.",
            labels=labels,
        )
        for w in fleet["workers"]:
            key = [w["name"], w["host"] or "", w["model"] or ""]
            busy.add_metric(key, w["running"])
            slots.add_metric(key, w["slots"])
            rate.add_metric(key, w["tokens_per_s"])
            cache_bytes.add_metric(key, w["prefix_cache_bytes"])
            queried.add_metric(key, w["prefix_cache_queried_tokens"])
            hits.add_metric(key, w["prefix_cache_hit_tokens"])
        live = GaugeMetricFamily("mlxq_live_workers", "Workers with a recent heartbeat.")
        live.add_metric([], len(fleet["workers"]))
        yield from (queued, failed, busy, slots, rate, cache_bytes, queried, hits, live)
