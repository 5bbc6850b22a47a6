"""``api.fleet.reaper``: the rule for a started job whose worker died (``decide``), and ``reap``
carrying it out on a real Redis, with workers that exist only as their heartbeat records
(shared/protocol/) and a started RQ job made with RQ's own calls. No process."""

import logging
import time
import uuid
import zlib
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer

from api.fleet.reaper import MAX_ATTEMPTS, decide, reap
from shared import fleet_view, protocol, rq_bridge
from shared.errors import ErrorCode
from shared.job_functions import EMBED_FUNCTION, GENERATE_FUNCTION
from shared.keys import queue_name_for_model, worker_queue_name
from shared.schemas import (
    ChatMessage,
    EmbeddingRequest,
    ErrorEvent,
    GenerationRequest,
    StartedEvent,
    TokenEvent,
)
from shared.settings import DEMO_EMBEDDING_MODEL_ID, DEMO_MODEL_ID

STARTED = StartedEvent(seq=0, worker="w")
TOKEN = TokenEvent(seq=1, text="Hel")

# -- decide ----------------------------------------------------------------------------------


def test_a_job_that_had_not_streamed_is_retried_once_on_a_live_worker() -> None:
    for events in ([], [STARTED]):
        assert decide(1, events, model_is_served=True).action == "retry"


def test_a_job_that_already_streamed_text_fails() -> None:
    decision = decide(1, [STARTED, TOKEN], model_is_served=True)
    assert decision.action == "fail"
    assert decision.reason == "it had already streamed part of its answer"


def test_a_job_already_retried_fails() -> None:
    for attempts in (MAX_ATTEMPTS, MAX_ATTEMPTS + 1):
        decision = decide(attempts, [STARTED], model_is_served=True)
        assert decision.action == "fail"
        assert decision.reason == "it was already retried once"


def test_a_job_whose_model_no_live_worker_serves_fails() -> None:
    decision = decide(1, [STARTED], model_is_served=False)
    assert decision.action == "fail"
    assert decision.reason == "no other live worker serves its model"


def test_streamed_text_is_the_reason_given_first() -> None:
    """Several reasons at once: the client-visible one (text it already has) is named."""
    decision = decide(MAX_ATTEMPTS, [STARTED, TOKEN], model_is_served=False)
    assert decision.reason == "it had already streamed part of its answer"


# -- reap, on a real Redis -------------------------------------------------------------------

DEAD = "dead-worker"
LIVE = "live-worker"
EVENT_TTL_S = 60


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def queue(connection: redis.Redis) -> Queue:
    name = queue_name_for_model(DEMO_MODEL_ID)
    return Queue(name, connection=connection, serializer=JSONSerializer)


def heartbeat(
    connection: redis.Redis, name: str, seconds_ago: float = 0, suspended: bool = False
) -> None:
    """A worker as the fleet sees it: its stats and its last beat, ``seconds_ago``."""
    stats = protocol.WorkerStats(
        model=DEMO_MODEL_ID, queues=[queue_name_for_model(DEMO_MODEL_ID)], suspended=suspended
    )
    with connection.pipeline() as pipeline:
        protocol.add_heartbeat(pipeline, name, stats, ttl_s=EVENT_TTL_S, running=[])
        pipeline.execute()
    connection.zadd(protocol.LIVE_WORKERS, {name: time.time() - seconds_ago})


def enqueue(queue: Queue) -> Job:
    request = GenerationRequest(
        request_id=uuid.uuid4().hex,
        model=DEMO_MODEL_ID,
        messages=[ChatMessage(role="user", content="hi")],
        deadline=time.time() + 60,
    )
    return queue.enqueue(GENERATE_FUNCTION, kwargs={"request": request.model_dump(mode="json")})


def start(connection: redis.Redis, queue: Queue, job: Job, worker: str) -> None:
    """What a worker does on taking a job: off the queue, RQ's execution in the started
    registry, status started, and the job in the worker's own running set."""
    assert connection.lrem(queue.key, 1, job.id) == 1
    with connection.pipeline() as pipeline:
        Execution.create(job, ttl=60, pipeline=pipeline, worker_name=worker)
        job.set_status(JobStatus.STARTED, pipeline=pipeline)
        protocol.add_running_job(pipeline, worker, job.id)
        pipeline.execute()
    assert job.id in queue.started_job_registry.get_job_ids()


def test_a_dead_workers_job_goes_back_to_the_front_of_its_queue(
    connection: redis.Redis, queue: Queue
) -> None:
    heartbeat(connection, DEAD, seconds_ago=60)
    heartbeat(connection, LIVE)  # serves the model: the job can be retried
    running = enqueue(queue)
    start(connection, queue, running, DEAD)
    protocol.publish_event(connection, running.id, STARTED, EVENT_TTL_S)
    waiting = enqueue(queue)

    assert reap(connection, EVENT_TTL_S) == [DEAD]

    assert queue.get_job_ids() == [running.id, waiting.id]  # at the front: it waited already
    assert rq_bridge.runs_so_far(connection, running) == 2
    assert Job.fetch(running.id, connection, serializer=JSONSerializer).get_status() == "queued"
    assert queue.started_job_registry.get_job_ids() == []
    assert protocol.running_jobs(connection, DEAD) == []
    assert [name for name, _ in protocol.live_worker_beats(connection)] == [LIVE]
    assert connection.zscore(protocol.LIVE_WORKERS, DEAD) is None  # claimed: reaped once
    assert reap(connection, EVENT_TTL_S) == []


def test_a_dead_workers_job_with_no_other_worker_fails_and_its_client_is_told(
    connection: redis.Redis, queue: Queue
) -> None:
    heartbeat(connection, DEAD, seconds_ago=60)
    job = enqueue(queue)
    start(connection, queue, job, DEAD)
    protocol.publish_event(connection, job.id, STARTED, EVENT_TTL_S)

    assert reap(connection, EVENT_TTL_S) == [DEAD]

    assert queue.get_job_ids() == []
    assert Job.fetch(job.id, connection, serializer=JSONSerializer).get_status() == "failed"
    assert queue.failed_job_registry.get_job_ids() == [job.id]
    *_, last = protocol.read_events(connection, job.id)
    assert isinstance(last, ErrorEvent)
    assert last.seq == 1 and last.code == ErrorCode.WORKER_LOST
    assert DEAD in last.message and "no other live worker serves its model" in last.message


def test_a_suspended_worker_does_not_serve_its_model(connection: redis.Redis, queue: Queue) -> None:
    """One rule: a suspended worker takes no job, so a dead worker's job is not retried for
    it (it would wait there until its deadline); the model is still listed as loaded."""
    heartbeat(connection, DEAD, seconds_ago=60)
    heartbeat(connection, LIVE, suspended=True)
    job = enqueue(queue)
    start(connection, queue, job, DEAD)
    protocol.publish_event(connection, job.id, STARTED, EVENT_TTL_S)

    model = fleet_view.fleet_models(connection)[DEMO_MODEL_ID]
    assert model.servable_by == [] and fleet_view.servable_models(connection) == set()
    assert [name for name, _ in model.held_by] == [LIVE]  # still listed as loaded
    assert reap(connection, EVENT_TTL_S) == [DEAD]

    assert queue.get_job_ids() == []
    *_, last = protocol.read_events(connection, job.id)
    assert isinstance(last, ErrorEvent) and last.code == ErrorCode.WORKER_LOST
    assert "no other live worker serves its model" in last.message


@pytest.mark.anyio
async def test_availability_asks_the_same_question_on_redis_asyncio(
    connection: redis.Redis, redis_url: str, anyio_backend: str
) -> None:
    async_connection = aioredis.Redis.from_url(redis_url)
    heartbeat(connection, LIVE, suspended=True)
    state, _ = await fleet_view.availability(async_connection, DEMO_MODEL_ID)
    assert state != "served"
    heartbeat(connection, LIVE)
    state, _ = await fleet_view.availability(async_connection, DEMO_MODEL_ID)
    assert state == "served"
    assert fleet_view.servable_models(connection) == {DEMO_MODEL_ID}
    state, _ = await fleet_view.availability(async_connection, "another-model")
    assert state == "none"
    await async_connection.aclose()


# -- a job the reaper cannot read strands nothing ---------------------------------------------

SECRET = "confidential-prompt-text"
"""In every planted payload: none of it may reach the log (MLXQ_LOG_CONTENT is off)."""


def heartbeat_model(connection: redis.Redis, name: str, model: str) -> None:
    stats = protocol.WorkerStats(model=model, queues=[queue_name_for_model(model)])
    with connection.pipeline() as pipeline:
        protocol.add_heartbeat(pipeline, name, stats, ttl_s=EVENT_TTL_S, running=[])
        pipeline.execute()


def enqueue_embedding(connection: redis.Redis) -> tuple[Job, Queue]:
    queue = Queue(
        queue_name_for_model(DEMO_EMBEDDING_MODEL_ID),
        connection=connection,
        serializer=JSONSerializer,
    )
    request = EmbeddingRequest(
        request_id=uuid.uuid4().hex,
        model=DEMO_EMBEDDING_MODEL_ID,
        inputs=[SECRET, f"another {SECRET}"],
        deadline=time.time() + 60,
    )
    job = queue.enqueue(EMBED_FUNCTION, kwargs={"request": request.model_dump(mode="json")})
    return job, queue


def plant(queue: Queue, function: str, request: object) -> Job:
    """A job mlxq's API never makes, as someone with access to Redis could write it."""
    return queue.enqueue(function, kwargs={"request": request})


def test_one_unreadable_job_strands_none_of_the_others(
    connection: redis.Redis, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    heartbeat(connection, DEAD, seconds_ago=60)
    heartbeat(connection, LIVE)  # serves the chat model
    heartbeat_model(connection, "embedding-worker", DEMO_EMBEDDING_MODEL_ID)
    chat = enqueue(queue)
    embedding, embedding_queue = enqueue_embedding(connection)
    invalid = plant(queue, GENERATE_FUNCTION, {"model": DEMO_MODEL_ID, "messages": SECRET})
    foreign = plant(queue, "os.system", {"model": DEMO_MODEL_ID, "command": SECRET})
    not_json = plant(queue, GENERATE_FUNCTION, {})
    readable, unreadable = [chat, embedding], [invalid, foreign, not_json]
    for job in readable + unreadable:
        start(connection, rq_bridge.job_queue(connection, job), job, DEAD)
        protocol.publish_event(connection, job.id, STARTED, EVENT_TTL_S)
    connection.hset(not_json.key, "data", zlib.compress(f"{{not json {SECRET}".encode()))
    own_queue = Queue(
        worker_queue_name(queue.name, DEAD), connection=connection, serializer=JSONSerializer
    )
    routed = enqueue(own_queue)

    assert reap(connection, EVENT_TTL_S) == [DEAD]

    assert queue.get_job_ids() == [routed.id, chat.id]  # both retried, at the front
    assert embedding_queue.get_job_ids() == [embedding.id]
    for job in unreadable:
        assert Job.fetch(job.id, connection, serializer=JSONSerializer).get_status() == "failed"
        *_, last = protocol.read_events(connection, job.id)
        assert isinstance(last, ErrorEvent)  # its waiter is answered, not left to time out
        assert last.seq == 1 and last.code == ErrorCode.WORKER_LOST
        assert DEAD in last.message and "could not be read" in last.message
        assert SECRET not in last.message
    assert sorted(queue.failed_job_registry.get_job_ids()) == sorted(j.id for j in unreadable)
    assert queue.started_job_registry.get_job_ids() == []
    assert embedding_queue.started_job_registry.get_job_ids() == []
    assert protocol.running_jobs(connection, DEAD) == []
    assert own_queue.name not in rq_bridge.queue_names(connection)
    assert SECRET not in caplog.text
    # no traceback logged; asyncio's records are left out: it logs another test's task that
    # the garbage collector ends during this one (a clean-clone run failed on that)
    assert not any(r.exc_info for r in caplog.records if r.name.split(".")[0] != "asyncio")
    for job in unreadable:
        assert job.id in caplog.text  # each is named in the log, without its payload
