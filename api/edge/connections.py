"""How many connections the API holds, in all and per client, and which it refuses.

Front ends that face many clients (nginx's ``limit_conn``, HAProxy's ``maxconn``) bound
connections in all and per client, and so does this: a total sized from the process's
open-file limit (a connection is a file; a fixed 1,024 turned 2,000 concurrent requests into
984 refusals), and a share per client address, so that one client holding a thousand
half-open sockets (until the head timeout closes them) cannot take them all.

A refused connection is answered at once, before any byte of it is read: a JSON 503 in
mlxq's own error shape with ``Retry-After``, counted (``/metrics``) and logged at most once
per LOG_EVERY_S.
"""

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("mlxq.api")

RESERVED_FILES = 256
"""Open files kept for everything but client connections: Redis pools, the pub/sub
connection, logs, the model-free rest of the process."""
PER_CLIENT_SHARE = 4
"""A client address may hold at most a quarter of all connections by default."""
LOG_EVERY_S = 10.0
RETRY_AFTER_S = 1


def default_max_connections(open_file_limit: int) -> int:
    """The total when MLXQ_MAX_CONNECTIONS is not set: what the open-file limit allows."""
    return max(64, open_file_limit - RESERVED_FILES)


@dataclass
class ConnectionBudget:
    """Counts the open connections of one API process by client address; every connection
    protocol of the process asks it before it serves a connection."""

    max_total: int
    max_per_client: int
    _open: Counter[str] = field(default_factory=Counter)
    _total: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """Refusals by reason since the process started (for /metrics)."""
    _unlogged: int = 0
    _logged_at: float = float("-inf")

    def admit(self, client: str) -> str | None:
        """Take a place for a new connection of ``client``; None when admitted, else why not
        (the reason, also counted)."""
        if self._total >= self.max_total:
            reason = "total"
        elif self._open[client] >= self.max_per_client:
            reason = "per_client"
        else:
            self._total += 1
            self._open[client] += 1
            return None
        self.refused[reason] += 1
        self._log_refusal(client, reason)
        return reason

    @property
    def open(self) -> int:
        return self._total

    def release(self, client: str) -> None:
        self._total -= 1
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]

    def message(self, reason: str) -> str:
        if reason == "total":
            return (
                f"The API holds {self.max_total} connections, its limit (MLXQ_MAX_CONNECTIONS); "
                "try again shortly."
            )
        return (
            f"This client holds {self.max_per_client} connections, its limit "
            "(MLXQ_MAX_CONNECTIONS_PER_CLIENT); try again shortly."
        )

    def _log_refusal(self, client: str, reason: str) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_S:
            return
        log.warning(
            "refused %d connection(s) in the last %gs (latest: %s, %s)",
            self._unlogged,
            LOG_EVERY_S,
            client,
            reason,
        )
        self._logged_at, self._unlogged = now, 0


class ConnectionMetrics(Collector):
    """The budget's figures for ``/metrics``, read when Prometheus scrapes."""

    def __init__(self, budget: ConnectionBudget) -> None:
        self._budget = budget

    def collect(self) -> Iterator[Metric]:
        open_now = GaugeMetricFamily("mlxq_connections_open", "Client connections held now.")
        open_now.add_metric([], self._budget.open)
        limit = GaugeMetricFamily("mlxq_connections_limit", "MLXQ_MAX_CONNECTIONS in force.")
        limit.add_metric([], self._budget.max_total)
        refused = CounterMetricFamily(
            "mlxq_connections_refused",
            "Connections answered 503 at once: over the total, or over one client's share.",
            labels=["reason"],
        )
        for reason in ("total", "per_client"):
            refused.add_metric([reason], self._budget.refused[reason])
        yield from (open_now, limit, refused)
