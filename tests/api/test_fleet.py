"""Several models, readiness, the fleet view and Prometheus metrics: the API and echo workers
in this process (tests/support/fleet.py), on a real Redis."""

import httpx
import redis
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared.keys import queue_name_for_model
from tests.support.processes import wait_until


def served_by(redis_url: str, model: str) -> set[str]:
    """Names of the workers that finished jobs from the model's queue."""
    connection = redis.Redis.from_url(redis_url)
    queue = Queue(queue_name_for_model(model), connection=connection, serializer=JSONSerializer)
    jobs = [
        Job.fetch(i, connection=connection, serializer=JSONSerializer)
        for i in queue.finished_job_registry.get_job_ids()
    ]
    return {job.worker_name for job in jobs}


def worker_name(redis_url: str, model: str) -> str:
    connection = redis.Redis.from_url(redis_url)
    for key in connection.keys("mlxq:worker:*:stats"):
        if connection.hget(key, "model") == model.encode():
            return key.decode().split(":")[2]
    raise AssertionError(f"no worker for {model}")


def test_each_model_is_served_by_its_own_workers(make_fleet, redis_url: str) -> None:
    with make_fleet(workers=0, model="model-a") as fleet:
        fleet.worker()
        fleet.worker(model="model-b")
        api = fleet.api

        default = httpx.post(f"{api}/ask", json={"question": "to a"}, timeout=10)
        other = httpx.post(f"{api}/ask", json={"question": "to b", "model": "model-b"}, timeout=10)
        chat = httpx.post(
            f"{api}/v1/chat/completions",
            json={"model": "model-b", "messages": [{"role": "user", "content": "hi b"}]},
            timeout=10,
        )
        models = httpx.get(f"{api}/v1/models").json()["data"]

        assert default.json() == {"answer": "to a"} and other.json() == {"answer": "to b"}
        assert chat.json()["model"] == "model-b"
        assert chat.json()["choices"][0]["message"]["content"] == "hi b"
        assert sorted(m["id"] for m in models) == ["model-a", "model-b"]
        assert served_by(redis_url, "model-a") == {worker_name(redis_url, "model-a")}
        assert served_by(redis_url, "model-b") == {worker_name(redis_url, "model-b")}


def test_a_model_no_worker_serves_is_refused_at_once(make_fleet) -> None:
    with make_fleet(model="model-a", queue_timeout=30) as fleet:
        response = httpx.post(
            f"{fleet.api}/ask", json={"question": "hi", "model": "model-z"}, timeout=5
        )
    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"
    assert "'model-a'" in response.json()["detail"]  # it names what is served


def test_ready_needs_a_live_worker_for_the_default_model(make_fleet) -> None:
    with make_fleet(workers=0, model="model-a") as fleet:
        api = fleet.api
        not_ready = httpx.get(f"{api}/ready")
        assert not_ready.status_code == 503
        assert "No live worker serves the default model 'model-a'" in not_ready.json()["reason"]
        assert httpx.get(f"{api}/health").status_code == 200

        fleet.worker()
        ready = httpx.get(f"{api}/ready")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "model": "model-a", "workers": 1, "loaded": True}


def test_fleet_and_metrics_show_workers_queues_and_traffic(make_fleet) -> None:
    with make_fleet(model="model-a", worker_concurrency=4) as fleet:
        check_fleet_and_metrics(fleet.api)


def check_fleet_and_metrics(api: str) -> None:
    for _ in range(3):
        assert (
            httpx.post(f"{api}/ask", json={"question": "one two three"}, timeout=10).status_code
            == 200
        )
    httpx.post(f"{api}/ask", json={"question": ""}, timeout=10)
    # A job the worker refuses (a chat model computes no embeddings): a refusal, not a failure.
    embed = httpx.post(f"{api}/v1/embeddings", json={"model": "model-a", "input": "x"}, timeout=10)
    assert embed.status_code == 400

    def settled() -> bool:  # stats come with the heartbeat, once a second
        (worker,) = httpx.get(f"{api}/fleet").json()["workers"]
        return worker["running"] == 0 and worker["tokens_total"] == 9

    wait_until(settled, 5, "the worker's stats after the requests")
    fleet = httpx.get(f"{api}/fleet").json()
    (worker,) = fleet["workers"]
    assert worker["model"] == "model-a" and worker["slots"] == 4
    assert worker["host"]
    (queue,) = fleet["queues"]
    assert queue == {
        "queue": queue_name_for_model("model-a"),
        "lane": "shared",
        "model": "model-a",
        "queued": 0,
        "failed": 0,
        "refused": 1,
    }

    text = httpx.get(f"{api}/metrics").text
    assert 'mlxq_requests_total{route="/ask",status="200"} 3.0' in text
    assert 'mlxq_requests_total{route="/ask",status="422"} 1.0' in text
    assert 'mlxq_generated_tokens_total{model="model-a"} 9.0' in text
    assert 'mlxq_queue_wait_seconds_count{model="model-a"} 3.0' in text
    assert f'mlxq_failed_jobs{{queue="{queue["queue"]}"}} 0.0' in text
    assert f'mlxq_refused_jobs{{queue="{queue["queue"]}"}} 1.0' in text
    assert 'mlxq_request_errors_total{code="invalid_request",model="model-a"} 1.0' in text
    assert f'mlxq_queue_depth{{lane="shared",model="model-a",queue="{queue["queue"]}"}} 0.0' in text
    assert "mlxq_worker_slots{" in text and "mlxq_worker_tokens_per_second{" in text
    assert "mlxq_live_workers 1.0" in text
