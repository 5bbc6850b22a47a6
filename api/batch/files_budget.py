"""How many bytes of uploaded files Redis may hold, so that files never fill it.

Files live in Redis beside the queue (durable with AOF, readable by every API process). A
Redis with ``maxmemory`` and ``noeviction`` (as ``mlxq up``, the Procfile and compose start
it) refuses writes when full, and then live requests fail too. So files have a budget below
Redis' cap (MLXQ_FILES_BUDGET; default half of ``maxmemory``), and an upload is refused with
a clean 507 when it does not fit the budget, or when it would leave Redis less than
LIVE_TRAFFIC_HEADROOM free for the queue, the event streams and results.

Large files could live elsewhere (a folder every API process mounts, an S3-compatible
store); Redis keeps one moving part fewer, and with the budget it cannot be filled by files.
"""

from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.errors import RateLimited, StorageFull
from shared.settings import Settings

DEFAULT_BUDGET_BYTES = 2 * 1024**3
"""The files budget when Redis has no memory cap (and MLXQ_FILES_BUDGET is not set)."""
NEVER_FREES_RETRY_S = 3600
"""Retry-After for a key over its stored-bytes limit none of whose files expires (a file
kept without an expiry): only deleting one makes room."""
HEADROOM_SHARE = 10
"""An upload must leave a tenth of Redis' cap free for live traffic (100 MB of the 1 GB that
``mlxq up`` gives Redis: thousands of requests' records and event streams)."""


@dataclass(frozen=True)
class RedisMemory:
    used: int
    cap: int
    """``maxmemory``; 0: no cap."""

    @property
    def headroom(self) -> int:
        return self.cap // HEADROOM_SHARE


async def redis_memory(connection: aioredis.Redis) -> RedisMemory:
    info = await connection.info("memory")
    return RedisMemory(used=int(info["used_memory"]), cap=int(info.get("maxmemory", 0)))


def budget_of(settings: Settings, memory: RedisMemory) -> int:
    if settings.files_budget is not None:
        return settings.files_budget
    return memory.cap // 2 if memory.cap else DEFAULT_BUDGET_BYTES


async def room_for(connection: aioredis.Redis, settings: Settings, size: int) -> int:
    """The files budget in force, once Redis itself has room for ``size`` more bytes and
    its headroom; StorageFull (507) when it has not."""
    memory = await redis_memory(connection)
    # Twice the size: Redis holds the upload in its input buffer while it stores the copy.
    if memory.cap and memory.used + 2 * size + memory.headroom > memory.cap:
        raise StorageFull(
            f"Redis has too little memory left for a file of {size} bytes: "
            f"{memory.used} of its {memory.cap} bytes (maxmemory) are used, and "
            f"{memory.headroom} must stay free for live requests. Delete files you no longer "
            "need (DELETE /v1/files/{id}) or give Redis more memory."
        )
    return budget_of(settings, memory)


def over_budget(size: int, used: int, budget: int) -> StorageFull:
    return StorageFull(
        f"The file ({size} bytes) does not fit in the files budget: {used} of {budget} bytes "
        "are taken by stored files (MLXQ_FILES_BUDGET). Delete files you no longer need "
        "(DELETE /v1/files/{id}) or wait for them to expire."
    )


def over_key_limit(
    name: str, size: int, used: int, limit: int, frees_in_s: int | None
) -> RateLimited:
    """A key's files (``--files-bytes``) and this one would pass its limit: 429, and
    Retry-After when its next file expires."""
    return RateLimited(
        f"The file ({size} bytes) does not fit in key {name!r}'s storage limit: {used} of "
        f"{limit} bytes are taken by its files. Delete files it no longer needs "
        "(DELETE /v1/files/{id}) or wait for them to expire.",
        retry_after_s=max(1, frees_in_s) if frees_in_s is not None else NEVER_FREES_RETRY_S,
    )
