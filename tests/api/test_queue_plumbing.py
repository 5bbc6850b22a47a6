"""The queue path with the zero-cost echo engine: HTTP -> Redis/RQ -> worker -> HTTP, and
what RQ records about it. The API and a real RQ worker run on threads of this process
(tests/support/fleet.py)."""

import json
import zlib

import httpx
import redis
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from shared.keys import queue_name_for_model
from shared.settings import DEMO_MODEL_ID
from tests.support.processes import wait_until


def test_answer_goes_through_rq_and_is_recorded(fleet, redis_url: str) -> None:
    response = httpx.post(
        f"{fleet.api}/ask", json={"question": "one two three", "max_tokens": 2}, timeout=30
    )

    assert response.status_code == 200
    assert response.json() == {"answer": "one two"}
    client = redis.Redis.from_url(redis_url)
    queue = Queue(queue_name_for_model(DEMO_MODEL_ID), connection=client, serializer=JSONSerializer)
    wait_until(lambda: queue.finished_job_registry.count == 1, 5, "RQ to record the job")
    (job_id,) = FinishedJobRegistry(queue=queue).get_job_ids()
    job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
    assert job.func_name == "worker.jobs.generate"
    assert job.return_value()["choices"][0]["text"] == "one two"
    assert job.timeout == 600 and job.result_ttl == 300 and job.failure_ttl == 86400
    assert json.loads(zlib.decompress(client.hget(job.key, "data")))  # JSON serializer, not pickle


def test_failing_generation_is_a_500_with_the_message(make_fleet, redis_url: str) -> None:
    with make_fleet(engine="tests.support.engines:FailingEngine") as fleet:
        response = httpx.post(f"{fleet.api}/ask", json={"question": "hello"}, timeout=30)

    assert response.status_code == 500
    assert response.json() == {
        "detail": "Generation failed: out of unicorns",
        "code": "generation_failed",
    }
    client = redis.Redis.from_url(redis_url)
    queue = Queue(queue_name_for_model(DEMO_MODEL_ID), connection=client, serializer=JSONSerializer)
    wait_until(lambda: FailedJobRegistry(queue=queue).count == 1, 5, "RQ to record the failure")
    assert queue.started_job_registry.count == 0


def test_worker_refuses_jobs_naming_other_functions(make_fleet, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    queue = Queue(queue_name_for_model(DEMO_MODEL_ID), connection=client, serializer=JSONSerializer)
    planted = queue.enqueue("os.remove", "/tmp/mlxq-must-not-be-removed")
    with make_fleet():
        wait_until(lambda: planted.get_status(refresh=True) == "failed", 10, "the planted job")
    assert "Refused" in planted.latest_result().exc_string
