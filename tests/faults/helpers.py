"""Shared pieces of the fault tests: the slow engine's environment, workers' names, RQ state."""

import concurrent.futures
import time

import httpx
import redis
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared import protocol
from shared.keys import queue_name_for_model
from shared.settings import DEMO_MODEL_ID

SLOW_ENGINE = "tests.support.engines:SlowEngine"
STEP_S = 0.1


def slow_env(base: dict[str, str], **overrides: str) -> dict[str, str]:
    """Workers whose engine makes one word per 0.1 s: jobs last long enough to hurt."""
    return {**base, "MLXQ_ENGINE": SLOW_ENGINE, "MLXQ_TEST_STEP_S": str(STEP_S), **overrides}


def rq_queue(redis_url: str) -> Queue:
    connection = redis.Redis.from_url(redis_url)
    return Queue(
        queue_name_for_model(DEMO_MODEL_ID), connection=connection, serializer=JSONSerializer
    )


def live_worker_names(redis_url: str) -> set[str]:
    return {
        n.decode() for n in redis.Redis.from_url(redis_url).zrange(protocol.LIVE_WORKERS, 0, -1)
    }


def running_jobs(redis_url: str, worker: str) -> int:
    return redis.Redis.from_url(redis_url).scard(protocol.worker_jobs_key(worker))


def ask_in_background(
    pool: concurrent.futures.Executor, api: str, body: dict, timeout: float = 60
) -> concurrent.futures.Future:
    def ask() -> tuple[httpx.Response, float]:
        response = httpx.post(f"{api}/ask", json=body, timeout=timeout)
        return response, time.monotonic()

    return pool.submit(ask)


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))
