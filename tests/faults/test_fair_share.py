"""A fair share of a saturated fleet: one key's flood does not starve another key's request.

A real worker process (the slow engine: one word per 20 ms, 10 words a request, two slots,
so five requests a second) and the API in this process. Key A keeps 64 requests queued; key
B then sends one. B's request waits for the next free slot, not behind A's queue: its time
to first token is at most a third of the median of A's (docs/reliability.md has the figures).
"""

import asyncio
import statistics

import pytest
import redis

from shared.keys import key_queue_name, queue_name_for_model
from shared.rq_bridge import queue_key
from shared.settings import DEMO_MODEL_ID
from tests.faults.helpers import slow_env
from tests.support.keys import bearer, make_key
from tests.support.processes import Processes

pytestmark = pytest.mark.anyio

FLOOD = 64
BODY = {"question": "q", "max_tokens": 10, "stream": True}


async def time_to_first_token(client, headers: dict[str, str]) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.stream("POST", "/ask", headers=headers, json=BODY) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                return loop.time() - started
    raise AssertionError("the stream ended without a token")


async def test_a_lone_request_is_served_at_the_next_free_slot_not_behind_a_flood(
    make_api, redis_url: str, processes: Processes, mlxq_env: dict[str, str]
) -> None:
    a = bearer(make_key(redis_url, "a"))
    b = bearer(make_key(redis_url, "b"))
    processes.worker(slow_env(mlxq_env, MLXQ_WORKER_CONCURRENCY="2", MLXQ_TEST_STEP_S="0.02"))
    a_queue = queue_key(key_queue_name(queue_name_for_model(DEMO_MODEL_ID), "a"))
    connection = redis.Redis.from_url(redis_url)
    async with make_api() as api:
        flood = [asyncio.create_task(time_to_first_token(api.client, a)) for _ in range(FLOOD)]
        while connection.llen(a_queue) < FLOOD - 4:  # all but the few running are queued
            await asyncio.sleep(0.02)
        queued_before_b = connection.llen(a_queue)
        lone = await time_to_first_token(api.client, b)
        queued_after_b = connection.llen(a_queue)
        a_times = await asyncio.gather(*flood)
    median_a = statistics.median(a_times)
    print(
        f"\nfair share: A {FLOOD} requests, median TTFT {median_a:.2f} s (max "
        f"{max(a_times):.2f} s); B's lone request {lone:.2f} s with {queued_before_b} of A's "
        f"queued when it came ({queued_after_b} still queued when its first token came)"
    )
    assert lone <= median_a / 3, (lone, median_a)
    assert queued_after_b > FLOOD / 2  # B went ahead of most of A's queue
