"""Overload: admission is bounded fleet-wide; beyond the bound the API answers 429 with
Retry-After, promptly, and nothing piles up in Redis. The API and the worker that comes later
run on threads of this process (tests/support/fleet.py)."""

import asyncio
import time

import httpx
import redis

from tests.faults.helpers import rq_queue
from tests.support.processes import wait_until

MAX_QUEUED = 5
CLIENTS = 60


async def flood(api: str, body: dict) -> list[tuple[int, float, str | None]]:
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=api, timeout=60, limits=limits) as client:

        async def one() -> tuple[int, float, str | None]:
            started = time.monotonic()
            response = await client.post("/ask", json=body)
            return (
                response.status_code,
                time.monotonic() - started,
                response.headers.get("retry-after"),
            )

        return await asyncio.gather(*(one() for _ in range(CLIENTS)))


def test_requests_beyond_the_queue_bound_get_429_promptly(make_fleet, redis_url: str) -> None:
    queue = rq_queue(redis_url)
    with make_fleet(workers=0, max_queued=MAX_QUEUED, queue_timeout=60) as fleet:
        api = fleet.api

        async def scenario() -> list[tuple[int, float, str | None]]:
            requests = asyncio.create_task(flood(api, {"question": "hello there"}))
            # No worker yet: the bound fills, everything beyond it is refused.
            full = (wait_until, lambda: queue.count == MAX_QUEUED, 20, "a full queue")
            await asyncio.to_thread(*full)
            await asyncio.sleep(1)
            assert queue.count == MAX_QUEUED
            assert len(redis.Redis.from_url(redis_url).keys("rq:job:*")) == MAX_QUEUED
            await asyncio.to_thread(fleet.worker)  # an echo worker on a thread
            return await requests

        results = asyncio.run(scenario())

    accepted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(accepted) == MAX_QUEUED
    assert len(refused) == CLIENTS - MAX_QUEUED
    assert all(retry_after == "2" for _, _, retry_after in refused)
    assert max(elapsed for _, elapsed, _ in refused) < 5  # refused at once, not after a wait
