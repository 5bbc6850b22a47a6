"""Each API process's once-a-second beat: it says it is alive, recovers the jobs of dead
workers, and adds what it saw to the fleet's history.

The three share one loop because each must happen every second in every API process, and in
this order: the process's own liveness first (workers stop the jobs of an API process that
stops beating), recovery next, the charts' figures last (they must never stand in the way of
recovering jobs).
"""

import asyncio
import logging
import time
from collections.abc import Callable

import redis

from api.fleet.reaper import reap
from shared import history, protocol, rq_bridge
from shared.history import ApiTally

log = logging.getLogger(__name__)

BEAT_INTERVAL_S = 1.0
"""How often each API process beats (and so looks for workers that stopped heartbeating)."""


REAP_GRACE_S = protocol.WORKER_LIVENESS_S + 2 * protocol.HEARTBEAT_INTERVAL_S
"""After Redis was away (or restarted), how long it must have answered before silent
workers are judged dead: a worker cannot heartbeat into a Redis that is down, so its beats
missing then say nothing about it."""


class RedisWatch:
    """Since when Redis has answered this process's beats without a break (and been up)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._answering_since: float | None = None
        self._outage_seen = False

    def answered(self, uptime_s: float) -> None:
        now = self._clock()
        if self._answering_since is None:
            # The first answer after an outage starts the grace; the process's very first
            # one does not (only Redis' own uptime can say it was away just before).
            self._answering_since = now if self._outage_seen else now - REAP_GRACE_S
        # A restart between two beats is seen in the server's uptime.
        self._answering_since = max(self._answering_since, now - uptime_s)

    def failed(self) -> None:
        self._answering_since = None
        self._outage_seen = True

    def workers_judgeable(self) -> bool:
        """Silent workers may be judged dead: Redis has taken beats for REAP_GRACE_S."""
        since = self._answering_since
        return since is not None and self._clock() - since >= REAP_GRACE_S


async def beat_forever(
    connection: redis.Redis, event_ttl_s: int, instance: str, tally: ApiTally
) -> None:
    """Beat, reap and record every BEAT_INTERVAL_S until cancelled (the API stops)."""
    watch = RedisWatch()
    while True:
        try:
            uptime_s = await asyncio.to_thread(protocol.beat_api, connection, instance)
            watch.answered(uptime_s)
            if watch.workers_judgeable():
                await asyncio.to_thread(reap, connection, event_ttl_s)
            await asyncio.to_thread(record_history, connection, tally.take())
        except redis.RedisError as exc:
            watch.failed()
            log.debug("api beat: Redis unavailable (%s)", exc)
        except Exception:
            log.exception("api beat failed")
        await asyncio.sleep(BEAT_INTERVAL_S)


def record_history(connection: redis.Redis, tally: ApiTally) -> None:
    """This API process's share of the fleet's history: what it saw since the last beat,
    and the queue depths as they are now."""
    depths = {depth.queue: depth.queued for depth in rq_bridge.queue_depths(connection)}
    history.record_api_beat(connection, tally, depths, time.time())
