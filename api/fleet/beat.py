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

import redis

from api.fleet.reaper import reap
from shared import history, protocol, rq_bridge
from shared.history import ApiTally

log = logging.getLogger(__name__)

BEAT_INTERVAL_S = 1.0
"""How often each API process beats (and so looks for workers that stopped heartbeating)."""


async def beat_forever(
    connection: redis.Redis, event_ttl_s: int, instance: str, tally: ApiTally
) -> None:
    """Beat, reap and record every BEAT_INTERVAL_S until cancelled (the API stops)."""
    while True:
        try:
            await asyncio.to_thread(protocol.beat_api, connection, instance)
            await asyncio.to_thread(reap, connection, event_ttl_s)
            await asyncio.to_thread(record_history, connection, tally.take())
        except redis.RedisError as exc:
            log.debug("api beat: Redis unavailable (%s)", exc)
        except Exception:
            log.exception("api beat failed")
        await asyncio.sleep(BEAT_INTERVAL_S)


def record_history(connection: redis.Redis, tally: ApiTally) -> None:
    """This API process's share of the fleet's history: what it saw since the last beat,
    and the queue depths as they are now."""
    depths = {name: queued for name, queued, _ in rq_bridge.queue_depths(connection)}
    history.record_api_beat(connection, tally, depths, time.time())
