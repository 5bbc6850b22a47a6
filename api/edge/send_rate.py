"""How many request-body bytes one client may send per second.

Every byte a client sends costs the API's one event loop work before anything can refuse it
(reading, JSON, validation, hashing for routing, the job's serialization): three clients
looping 1 MB prompts slowed everyone else's requests 4-10x on two cores. A token bucket per
client address (MLXQ_MAX_CLIENT_BYTES_PER_SECOND, a burst of one largest body) bounds that
cost; a client over its rate is answered 429 with ``Retry-After`` before its body is read.
File uploads are bounded by the files budget instead and are not counted here.
"""

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_CLIENTS_TRACKED = 10_000
"""Buckets kept; the least recently seen client's is dropped first (it refills anyway)."""


class SendRate:
    def __init__(
        self, bytes_per_s: int, burst_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.bytes_per_s = bytes_per_s
        self._burst = max(burst_bytes, bytes_per_s)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, size: int) -> float:
        """Spend ``size`` bytes of the client's allowance; 0 when allowed, else how many
        seconds until it would be (nothing is spent then)."""
        now = self._clock()
        level, then = self._buckets.pop(client, (float(self._burst), now))
        level = min(float(self._burst), level + (now - then) * self.bytes_per_s)
        if size > level:
            self._remember(client, level, now)
            return (min(size, self._burst) - level) / self.bytes_per_s
        self._remember(client, level - size, now)
        return 0.0

    def _remember(self, client: str, level: float, now: float) -> None:
        self._buckets[client] = (level, now)
        if len(self._buckets) > MAX_CLIENTS_TRACKED:
            self._buckets.popitem(last=False)
