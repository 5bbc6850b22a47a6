"""Every Redis client mlxq makes, built here so that timeouts and pools are chosen once.

Two kinds: clients for commands, which fail fast while Redis is down (a 503 within a
second, not a hang), and subscribers, whose blocked reads must never time out (redis-py 8
defaults to a 5 s socket timeout, which would break a pub/sub read that waits for minutes).
"""

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff

CONNECT_TIMEOUT_S = 0.5
"""Loopback or LAN Redis answers a connect in milliseconds; longer means it is down."""
COMMAND_TIMEOUT_S = 5.0
"""No mlxq command blocks in Redis for long except the worker's 1 s dequeue."""
API_POOL_SIZE = 64
"""Connections for the API's commands: waits share one pub/sub connection, so this bounds
bursts of enqueues only; a burst waits for a free connection instead of failing."""
API_POOL_WAIT_S = 30.0
"""A burst waits this long for a free connection: thousands of requests arriving at once
queue here (2,000 at once took over 5 s on two cores) rather than fail; an unreachable
Redis still fails at once (a refused connect, not a wait)."""


def _fail_fast_retry() -> AsyncRetry:
    return AsyncRetry(ExponentialBackoff(cap=0.1, base=0.02), 1)


def command_client(url: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> redis.Redis:
    """A synchronous client: workers, the API's fleet queries and reaper, the CLI."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=connect_timeout_s, socket_timeout=COMMAND_TIMEOUT_S
    )


def worker_client(url: str, client_name: str | None = None) -> redis.Redis:
    """A worker's client: RQ's dequeue blocks for a second on it, and pub/sub threads share
    its pool, so it keeps no socket timeout of its own (RQ passes timeouts per command).
    ``client_name``: set on every connection (CLIENT SETNAME)."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=2.0, socket_keepalive=True, client_name=client_name
    )


def async_command_client(url: str) -> aioredis.Redis:
    """The API's client for commands (enqueue, cancel, catch-up reads)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=API_POOL_SIZE,
        timeout=API_POOL_WAIT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=_fail_fast_retry(),
    )
    return aioredis.Redis.from_pool(pool)  # its own pool: closed with the client


def async_subscriber(url: str) -> aioredis.Redis:
    """The API's one pub/sub connection: a blocked read must not time out."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=None,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=30,
        retry=_fail_fast_retry(),
    )


def is_reachable(url: str, timeout_s: float = 1.0) -> bool:
    try:
        return bool(command_client(url, connect_timeout_s=timeout_s).ping())
    except redis.RedisError:
        return False
