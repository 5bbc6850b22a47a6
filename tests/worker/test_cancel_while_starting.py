"""A cancellation that reaches the worker while a job starts is not lost: it arrives after
the job's cancel check (which found nothing) and before the job counts as running."""

import time
import uuid

import pytest
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared.job_functions import GENERATE_FUNCTION
from shared.redis_clients import worker_client
from shared.schemas import ChatMessage, GenerationRequest, JobRequest
from shared.settings import Settings
from worker.config import WorkerConfig
from worker.engine_api import Engine, EngineRequest
from worker.model_host import ModelHost
from worker.reporter import Outbox
from worker.rq_worker import BatchingWorker


class RecordingEngine(Engine):
    """Takes every job and remembers what it was told; generates nothing."""

    model_id = "m"
    peak_batch_size = 1
    generated_tokens = 0

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []

    def prepare(self, job_id: str, request: JobRequest, timeout_s: float) -> EngineRequest:
        return EngineRequest(job_id, request, [[]], [1], time.monotonic() + timeout_s)

    def submit(self, request: EngineRequest) -> None:
        self.submitted.append(request.job_id)

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)


@pytest.fixture
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
def worker(redis_url: str, engine: RecordingEngine):
    connection = worker_client(redis_url)
    queue = Queue("mlxq-test", connection=connection, serializer=JSONSerializer)
    settings = Settings(worker_concurrency=1, event_ttl=60, job_timeout=60, drain_timeout=1)
    worker = BatchingWorker(
        [queue],
        engine=ModelHost.serving(engine, settings),
        outbox=Outbox(),
        config=WorkerConfig.from_settings(settings),
        settings=settings,
        connection=connection,
        serializer=JSONSerializer,
    )
    yield worker
    worker.starter.shutdown()
    connection.close()


def _queued_job(worker: BatchingWorker):
    queue = worker.queues[0]
    request = GenerationRequest(
        request_id="r",
        model="m",
        messages=[ChatMessage(role="user", content="q")],
        deadline=time.time() + 60,
    )
    job = queue.create_job(
        GENERATE_FUNCTION, kwargs={"request": request.model_dump(mode="json")}, job_id="j"
    )
    return queue.enqueue_job(job), queue


def test_a_cancel_that_arrives_while_the_job_starts_stops_it(
    worker: BatchingWorker, engine: RecordingEngine
) -> None:
    job, queue = _queued_job(worker)
    worker.engine.taken(job.id, "m")  # as the worker's dequeue counts it
    track = worker.reporter.track

    def cancel_then_track(running):
        # The start's round trip has checked the cancel key (nothing yet); the API's cancel
        # lands now, and its message reaches the listener before the job is tracked.
        worker.cancels.on_cancel(running.job.id)
        track(running)

    worker.reporter.track = cancel_then_track  # type: ignore[method-assign]
    worker.starter.prepare_and_start(job, queue)
    assert engine.submitted == [job.id]
    assert engine.cancelled == [job.id]  # once the engine has it: it stops within a step


def test_cancels_for_running_and_unknown_jobs(
    worker: BatchingWorker, engine: RecordingEngine
) -> None:
    job, queue = _queued_job(worker)
    worker.engine.taken(job.id, "m")  # as the worker's dequeue counts it
    worker.cancels.on_cancel(uuid.uuid4().hex)  # another worker's job
    worker.starter.prepare_and_start(job, queue)
    assert engine.cancelled == []
    worker.cancels.on_cancel(job.id)
    assert engine.submitted == [job.id] and engine.cancelled == [job.id]
