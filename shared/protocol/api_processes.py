"""API processes: each beats once a second, and a job stops when the API process waiting for
it is gone (nobody would read its answer)."""

from __future__ import annotations

from typing import Any

import redis

from shared.protocol.common import PREFIX

API_ALIVE_TTL_S = 5
"""An API process beats once a second; silent this long, it is gone."""
WAITER_GRACE_S = 3.0
"""A worker stops a job only after its API process has been missing this long (a Redis
restart loses the beats for a moment)."""


def api_alive_key(instance: str) -> str:
    return f"{PREFIX}:api:{instance}:alive"


def beat_api(connection: redis.Redis, instance: str) -> float:
    """Say this API process is alive; returns how long the Redis server has been up (s)."""
    with connection.pipeline(transaction=False) as pipeline:
        pipeline.set(api_alive_key(instance), 1, ex=API_ALIVE_TTL_S)
        pipeline.info("server")
        _, server = pipeline.execute()
    return float(server["uptime_in_seconds"])


def add_waiter_check(pipeline: Any, instance: str) -> None:
    """Queue a check whose reply (an int) says whether that API process is alive."""
    pipeline.exists(api_alive_key(instance))


def missing_waiters(connection: redis.Redis, instances: set[str]) -> set[str]:
    """The API processes, among these, that stopped beating."""
    ordered = sorted(instances)
    if not ordered:
        return set()
    with connection.pipeline(transaction=False) as pipeline:
        for instance in ordered:
            add_waiter_check(pipeline, instance)
        alive = pipeline.execute()
    return {instance for instance, up in zip(ordered, alive, strict=True) if not up}


def api_anchor_channel(instance: str) -> str:
    """A channel the API's event hub always holds, so its reader always waits on a socket."""
    return f"{PREFIX}:api:{instance}"
