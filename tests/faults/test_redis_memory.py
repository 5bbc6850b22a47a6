"""Redis memory is bounded: ended jobs keep no prompt, refused ones expire quickly, and a
full Redis (maxmemory, noeviction) is a 503 while the API stays up, never a crash."""

import concurrent.futures
import json
import zlib
from pathlib import Path

import httpx
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.faults.helpers import rq_queue
from tests.support.processes import Processes, wait_until
from tests.support.redis_server import RedisServer

SECRET = "the secret words of this prompt"


def _job_payloads(connection: redis.Redis) -> list[str]:
    return [
        zlib.decompress(connection.hget(key, "data")).decode()
        for key in connection.keys("rq:job:*")
        if connection.hget(key, "data")
    ]


def test_refused_and_failed_jobs_keep_no_prompt(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = {**mlxq_env, "MLXQ_ENGINE": "tests.support.engines:TinyContextEngine"}
    processes.worker(env)
    api = processes.api(env)
    long_prompt = " ".join([SECRET] * 20)  # more words than the 64-token context
    refused = httpx.post(f"{api}/ask", json={"question": long_prompt}, timeout=30)
    assert refused.status_code == 400 and refused.json()["code"] == "context_length_exceeded"
    connection = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    queue = rq_queue(env["MLXQ_REDIS_URL"])
    wait_until(lambda: queue.failed_job_registry.count == 1, 5, "RQ to record the refusal")
    (job_id,) = queue.failed_job_registry.get_job_ids()
    job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    assert job.kwargs["request"]["redacted"] is True
    assert all(SECRET not in payload for payload in _job_payloads(connection))
    assert 0 < connection.ttl(job.key) <= 300  # MLXQ_REFUSED_TTL, not a day


def test_failed_generation_keeps_no_prompt(processes: Processes, mlxq_env: dict[str, str]):
    env = {**mlxq_env, "MLXQ_ENGINE": "tests.support.engines:FailingEngine"}
    processes.worker(env)
    api = processes.api(env)
    assert httpx.post(f"{api}/ask", json={"question": SECRET}, timeout=30).status_code == 500
    connection = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    queue = rq_queue(env["MLXQ_REDIS_URL"])
    wait_until(lambda: queue.failed_job_registry.count == 1, 5, "RQ to record the failure")
    assert all(SECRET not in payload for payload in _job_payloads(connection))
    (job_id,) = queue.failed_job_registry.get_job_ids()
    assert connection.ttl(f"rq:job:{job_id}") > 3600  # a real failure is kept for diagnosis


def test_a_full_redis_is_a_503_and_the_api_stays_up(
    processes: Processes, mlxq_env: dict[str, str], tmp_path: Path
) -> None:
    with RedisServer(
        tmp_path, options=["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"]
    ) as server:
        env = {
            **mlxq_env,
            "MLXQ_REDIS_URL": server.url,
            "MLXQ_ENGINE": "echo",
            "MLXQ_MAX_CLIENT_BYTES_PER_SECOND": "0",  # this client floods on purpose
        }
        processes.worker(env)
        api = processes.api(env)
        prompt = "word " * 60_000  # 300 kB: each answer (echoed) is kept in Redis too

        def ask(_: int) -> int:
            body = {"question": prompt}
            return httpx.post(f"{api}/ask", json=body, timeout=60).status_code

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(ask, range(60)))
        assert set(statuses) <= {200, 503}, statuses
        assert 503 in statuses and 200 in statuses
        assert httpx.get(f"{api}/health").status_code == 200
        full = httpx.post(f"{api}/ask", json={"question": prompt}, timeout=60)
        if full.status_code == 503:
            assert "full" in json.loads(full.text)["detail"] or "Redis" in full.text
        server.client().flushdb()  # memory frees up: requests go through again
        small = httpx.post(f"{api}/ask", json={"question": "one two"}, timeout=30)
        assert small.status_code == 200 and small.json()["answer"] == "one two"


def test_per_request_footprint(processes: Processes, mlxq_env: dict[str, str]) -> None:
    """What one answered request leaves in Redis until its keys expire (reported in
    docs/reliability.md): the job hash, its result and its event stream."""
    env = {**mlxq_env, "MLXQ_ENGINE": "echo"}
    processes.worker(env)
    api = processes.api(env)
    connection = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    httpx.post(f"{api}/ask", json={"question": "warm up"}, timeout=30)
    before = connection.info("memory")["used_memory"]
    n = 200
    for i in range(n):
        body = {"question": f"question {i} " * 20}
        assert httpx.post(f"{api}/ask", json=body, timeout=30).status_code == 200
    per_request = (connection.info("memory")["used_memory"] - before) / n
    print(f"per-request footprint: {per_request:.0f} bytes (200 words asked and answered)")
    assert per_request < 16_000
