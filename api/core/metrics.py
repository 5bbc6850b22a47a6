"""Prometheus metrics for ``GET /metrics``, named and shaped the way vLLM's users read them.

Counted here, per model: requests by route and status, prompt and generated tokens, queue
wait, time to first token, end-to-end latency and time between tokens (histograms), finish
reasons, and errors by code. A non-streamed request's time to first token is the queue wait
the API saw plus the worker's own time to its first token (``DoneEvent.first_token_s``); a
streamed one's is the arrival of its first piece. Read from Redis at scrape time: queue depths
(failed jobs and refused requests apart), and the per-worker figures that workers publish
with their heartbeats (busy slots, tokens/s, KV and prefix cache use).

``docs/grafana/mlxq-fleet.json`` is a dashboard on these names (a test keeps it true).
"""

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.fleet_view import snapshot
from shared.history import ApiTally
from shared.schemas import DoneEvent

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1)
"""Seconds between tokens: milliseconds on an accelerator, a tenth of a second on a CPU."""


class Metrics:
    def __init__(self, connection: redis.Redis) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mlxq_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.queue_wait = self._histogram(
            "mlxq_queue_wait_seconds", "From enqueue until a worker accepted the job."
        )
        self.first_token = self._histogram(
            "mlxq_time_to_first_token_seconds",
            "From enqueue until the first token: its arrival at the API when streamed, else "
            "the queue wait plus the worker's time to its first token.",
        )
        self.e2e = self._histogram(
            "mlxq_e2e_request_latency_seconds", "From enqueue until the answer was complete."
        )
        self.token_gap = self._histogram(
            "mlxq_inter_token_latency_seconds",
            "A request's mean time between generated tokens, as its worker measured it.",
            _TOKEN_GAP_BUCKETS,
        )
        self.tokens = Counter(
            "mlxq_generated_tokens",
            "Tokens generated for answered requests.",
            ["model"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "mlxq_prompt_tokens",
            "Prompt tokens of answered requests (cached ones included).",
            ["model"],
            registry=self.registry,
        )
        self.finished = Counter(
            "mlxq_request_finish_reasons",
            "Answered choices by finish reason (stop, length, tool_calls).",
            ["model", "reason"],
            registry=self.registry,
        )
        self.errors = Counter(
            "mlxq_request_errors",
            "Requests that ended in an error, by code: a client's (invalid_request, "
            "context_length_exceeded) apart from the fleet's (no_worker, worker_lost...).",
            ["model", "code"],
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

    def _histogram(
        self, name: str, documentation: str, buckets: tuple[float, ...] = _LATENCY_BUCKETS
    ) -> Histogram:
        return Histogram(name, documentation, ["model"], buckets=buckets, registry=self.registry)

    def watch(self, model: str) -> "RequestWatch":
        return RequestWatch(self, model)


class RequestWatch:
    """One request's figures as its job's events arrive (times are seconds since enqueue)."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self._started_at: float | None = None
        self._first_token_seen = False

    def started(self, at: float) -> None:
        self._started_at = at
        self._metrics.queue_wait.labels(model=self._model).observe(at)

    def token(self, at: float) -> None:
        if not self._first_token_seen:
            self._first_token_seen = True
            self._first_token(at)

    def done(self, event: DoneEvent, at: float) -> None:
        metrics, model = self._metrics, self._model
        if not self._first_token_seen and event.first_token_s is not None:
            self._first_token((self._started_at or 0.0) + event.first_token_s)
        metrics.e2e.labels(model=model).observe(at)
        metrics.tokens.labels(model=model).inc(event.completion_tokens)
        metrics.prompt_tokens.labels(model=model).inc(event.prompt_tokens)
        for choice in event.choices:
            metrics.finished.labels(model=model, reason=choice.finish_reason).inc()
        longest = max((choice.completion_tokens for choice in event.choices), default=0)
        if event.first_token_s is not None and event.last_token_s is not None and longest > 1:
            gap = (event.last_token_s - event.first_token_s) / (longest - 1)
            metrics.token_gap.labels(model=model).observe(gap)

    def failed(self, code: str) -> None:
        self._metrics.errors.labels(model=self._model, code=code).inc()

    def _first_token(self, at: float) -> None:
        self._metrics.first_token.labels(model=self._model).observe(at)
        self._metrics.recent.observe_first_token(at)


def _ratio(used: int, budget: int) -> float:
    return used / budget if budget > 0 else 0.0


class _FleetCollector(Collector):
    """Queue depths and worker figures, read from Redis when Prometheus scrapes."""

    def __init__(self, connection: redis.Redis) -> None:
        self._connection = connection

    def collect(self):
        try:
            fleet = snapshot(self._connection)
        except redis.RedisError:
            return
        yield from self._queues(fleet["queues"])
        yield from self._workers(fleet["workers"])
        live = GaugeMetricFamily("mlxq_live_workers", "Workers with a recent heartbeat.")
        live.add_metric([], len(fleet["workers"]))
        yield live

    def _queues(self, queues: list[dict]):
        labels = ["queue", "model"]
        queued = GaugeMetricFamily("mlxq_queue_depth", "Jobs waiting.", labels=labels + ["lane"])
        failed = GaugeMetricFamily(
            "mlxq_failed_jobs",
            "Failed jobs RQ keeps (refused requests not counted: mlxq_refused_jobs).",
            labels=["queue"],
        )
        refused = GaugeMetricFamily(
            "mlxq_refused_jobs",
            "Requests a worker refused (invalid, too long for the context, past their "
            "deadline) that RQ keeps among its failed jobs.",
            labels=["queue"],
        )
        for q in queues:
            queued.add_metric([q["queue"], q["model"] or "", q["lane"]], q["queued"])
            failed.add_metric([q["queue"]], q["failed"])
            refused.add_metric([q["queue"]], q["refused"])
        return queued, failed, refused

    def _workers(self, workers: list[dict]):
        labels = ["worker", "host", "model"]

        def gauge(name: str, documentation: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, labels=labels)

        busy = gauge("mlxq_worker_busy_slots", "Jobs a worker is running.")
        slots = gauge("mlxq_worker_slots", "Jobs a worker can run at once.")
        rate = gauge("mlxq_worker_tokens_per_second", "A worker's generation rate (10 s window).")
        kv = gauge(
            "mlxq_kv_cache_usage_ratio",
            "KV cache its running sequences hold (their tokens times a token's KV bytes), as a "
            "fraction of every slot at full context.",
        )
        prefix = gauge(
            "mlxq_prefix_cache_usage_ratio",
            "KV its prefix cache holds, as a fraction of its budget (MLXQ_PREFIX_CACHE_BYTES).",
        )
        cache_bytes = gauge("mlxq_prefix_cache_bytes", "KV bytes a worker's prefix cache holds.")
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
        proposed = CounterMetricFamily(
            "mlxq_draft_tokens_proposed",
            "Draft tokens a worker's speculative decoding proposed (prompt lookup).",
            labels=labels,
        )
        accepted = CounterMetricFamily(
            "mlxq_draft_tokens_accepted",
            "Draft tokens the model accepted: each saved one decode step.",
            labels=labels,
        )
        for w in workers:
            key = [w["name"], w["host"] or "", w["model"] or ""]
            proposed.add_metric(key, w["draft_tokens_proposed"])
            accepted.add_metric(key, w["draft_tokens_accepted"])
            busy.add_metric(key, w["running"])
            slots.add_metric(key, w["slots"])
            rate.add_metric(key, w["tokens_per_s"])
            kv.add_metric(key, _ratio(w["kv_cache_bytes"], w["kv_cache_budget_bytes"]))
            prefix.add_metric(key, _ratio(w["prefix_cache_bytes"], w["prefix_cache_budget_bytes"]))
            cache_bytes.add_metric(key, w["prefix_cache_bytes"])
            queried.add_metric(key, w["prefix_cache_queried_tokens"])
            hits.add_metric(key, w["prefix_cache_hit_tokens"])
        return busy, slots, rate, kv, prefix, cache_bytes, queried, hits, proposed, accepted
