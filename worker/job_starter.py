"""Starting a job the main thread took, on one of two preparer threads.

Tokenizing a long prompt takes seconds, and the main thread must go on taking jobs (and
heartbeating) meanwhile, so it hands each job over (``start``) to a preparer thread, which:

1. refuses a job that does not name mlxq's own function (RQ would import any dotted path);
2. claims the job (``mlxq:job:<id>:owner``, set once: a job taken twice runs once);
3. reads its request (shared/job_functions.py) and has the engine check and tokenize it;
4. records its start the way RQ's ``prepare_execution`` / ``prepare_job_execution`` do, with
   its cancel check and its ``started`` event, in one round trip (under the state lock, so
   that RQ's BUSY and the reporter's IDLE never cross);
5. hands it to the engine (``engine.submit``), or refuses it (``Outbox.refuse``).

A preparer owns nothing long-lived: each holds one job at a time. A job that never reaches
the reporter gives its batch slot back here (``free_slot``).
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import redis
from rq.job import Job
from rq.queue import Queue

from shared import protocol
from shared.errors import (
    Cancelled,
    ErrorCode,
    GenerationFailed,
    InvalidRequest,
    JobTimedOut,
    MlxqError,
)
from shared.job_functions import ALLOWED_FUNCTIONS, UnreadableJob, is_mlxq_job, read_job_request
from shared.rq_bridge import ConcurrentWorkerBase
from shared.schemas import ErrorEvent, JobRequest, StartedEvent
from worker.config import WorkerConfig
from worker.engine_api import Engine, EngineRequest
from worker.reporter import Reporter, RunningJob
from worker.starting import StartingJobs

log = logging.getLogger(__name__)

PREPARERS = 2
"""Threads that read, check and tokenize taken jobs; two, so one long prompt never holds up
the next job (and prompts are tokenized in parallel where the tokenizer releases the GIL)."""


class JobStarter:
    def __init__(
        self,
        worker: ConcurrentWorkerBase,
        engine: Engine,
        reporter: Reporter,
        starting: StartingJobs,
        state_lock: threading.Lock,
        config: WorkerConfig,
        free_slot: Callable[[str], None],
        load_wait: Callable[[str, float | None], float] = lambda model, enqueued_at: 0.0,
    ) -> None:
        """``load_wait``: seconds a job of a model, enqueued at a time, waited for the model to
        load (its started event says so: worker/model_host.py)."""
        self._worker = worker
        self._load_wait = load_wait
        self._engine = engine
        self._reporter = reporter
        self._starting = starting
        self._state_lock = state_lock
        self._config = config
        self._free_slot = free_slot
        self._preparers = ThreadPoolExecutor(PREPARERS, thread_name_prefix="mlxq-prepare")

    def start(self, job: Job, job_queue: Queue) -> None:
        """Main thread: a preparer thread starts the job; the batch slot is already taken."""
        future = self._preparers.submit(self._start_or_free_slot, job, job_queue)
        future.add_done_callback(_log_failure)

    def shutdown(self) -> None:
        """Wait for the jobs being prepared: they start (and then drain) or are refused."""
        self._preparers.shutdown(wait=True)

    def _start_or_free_slot(self, job: Job, job_queue: Queue) -> None:
        """An unexpected error must not cost a batch slot for good: a job that never reached
        the reporter gives its slot back here."""
        try:
            self.prepare_and_start(job, job_queue)
        except Exception:
            if not self._reporter.is_running(job.id):
                self._free_slot(job.id)
            raise

    def prepare_and_start(self, job: Job, job_queue: Queue) -> None:
        """A preparer thread's work for one job (see the module doc)."""
        if not is_mlxq_job(job):
            self._refuse_foreign(job, job_queue)
            return
        if not self._claim(job):
            return
        # Read and check the request before any other Redis write, so that one round trip
        # records the start in RQ, checks for a cancellation and tells the API, all at once.
        prepared: EngineRequest | None = None
        refusal: MlxqError | None = None
        request: JobRequest | None = None
        try:
            request = self._read_request(job)
            timeout_s = min(
                float(job.timeout or self._config.job_timeout_s), request.deadline - time.time()
            )
            prepared = self._engine.prepare(job.id, request, timeout_s)
        except MlxqError as error:
            refusal = error
        except Exception as exc:
            log.exception("job %s: could not prepare the request", job.id)
            refusal = GenerationFailed(f"Could not prepare the request: {exc}")
        running = RunningJob(job, job_queue, execution=None, request=request)
        # From before its cancel check until the engine has it, a cancellation for the job
        # is held (worker/starting.py): it would find no running job to stop, and be lost.
        self._starting.begin(job.id)
        submitted = False
        try:
            submitted = self._record_and_submit(running, prepared, refusal)
        finally:
            held = self._starting.end(job.id)
        if held and submitted:
            log.info("job %s: client went away while it started, cancelling", job.id)
            self._engine.cancel(job.id)

    def _record_and_submit(
        self, running: RunningJob, prepared: EngineRequest | None, refusal: MlxqError | None
    ) -> bool:
        """Record the job's start and hand it to the engine, or refuse it; returns whether
        the engine has it."""
        job = running.job
        try:
            cancelled = self._record_start(running, prepared)
        except redis.RedisError as exc:  # down, or full and refusing writes
            log.error("job %s: Redis failed while starting it (%s)", job.id, exc)
            if running.execution is not None:
                self._worker.undo_start(running.execution)
            self._tell_redis_failed(job.id, exc)
            self._free_slot(job.id)
            return False
        if cancelled:
            refusal = Cancelled("The client went away before the job started.")
        if refusal is not None or prepared is None:
            self._reporter.outbox.refuse(job.id, refusal or GenerationFailed("Not prepared."))
            return False
        if self._config.log_content:
            log.info("job %s: request %s", job.id, prepared.request.model_dump_json())
        self._engine.submit(prepared)
        return True

    def _claim(self, job: Job) -> bool:
        """Become the job's one runner. A job can be taken twice: the API puts a job back in
        its queue when the worker that took it does not start it (a worker that paused with
        the job in its hands); whichever worker starts it first runs it, the other drops it."""
        connection, name = self._worker.connection, self._worker.name
        try:
            claimed = protocol.claim_job(connection, job.id, name, self._config.event_ttl_s)
        except redis.RedisError as exc:  # down, or full and refusing writes
            log.error("job %s: Redis failed while taking it (%s)", job.id, exc)
            self._tell_redis_failed(job.id, exc)
            self._free_slot(job.id)
            return False
        if not claimed:
            log.info("job %s: another worker runs it; dropped", job.id)
            self._free_slot(job.id)
        return claimed

    def _tell_redis_failed(self, job_id: str, exc: Exception) -> None:
        """The job cannot start; its client hears why at once, not at its deadline."""
        message = (
            "Redis is full (maxmemory) and refuses new work; try again shortly."
            if isinstance(exc, redis.exceptions.OutOfMemoryError)
            else f"Redis failed while the request was starting: {exc}"
        )
        event = ErrorEvent(seq=0, code=ErrorCode.REDIS_UNAVAILABLE, message=message)
        with contextlib.suppress(redis.RedisError):
            protocol.tell_waiter(self._worker.connection, job_id, event)

    def _record_start(self, running: RunningJob, prepared: EngineRequest | None) -> bool:
        """RQ's start of a job and mlxq's own writes, in one round trip; returns whether the
        job's client has already gone away."""
        job, worker = running.job, self._worker
        with worker.connection.pipeline() as pipeline:
            running.execution = worker.add_start(pipeline, job, running.queue)
            protocol.add_cancel_check(pipeline, job.id)
            cancelled_at = len(pipeline) - 1
            protocol.add_running_job(pipeline, worker.name, job.id)  # its events may be sent
            if prepared is not None:  # "started" means accepted: a refused job's first
                # event is its error. It counts the prompt's tokens (Anthropic's message_start).
                tokens = prepared.prompt_tokens or None  # an engine that does not tokenize: 0
                started = StartedEvent(
                    seq=running.take_seq(),
                    worker=worker.name,
                    prompt_tokens=tokens,
                    load_s=self._waited(running),
                )
                protocol.add_event(pipeline, job.id, started, self._config.event_ttl_s)
            # RQ's BUSY and the reporter's IDLE (when the last job ends) must not cross: the
            # start and the count it changes happen together, under the state lock.
            with self._state_lock:
                results = pipeline.execute()
                self._reporter.track(running)
        return bool(results[cancelled_at])

    def _waited(self, running: RunningJob) -> float:
        if running.request is None:
            return 0.0
        enqueued = running.job.enqueued_at
        return self._load_wait(running.request.model, enqueued.timestamp() if enqueued else None)

    def _refuse_foreign(self, job: Job, job_queue: Queue) -> None:
        """Only mlxq's own job function runs here: RQ would import any dotted path it is given.
        A job planted by someone with access to Redis is failed before RQ does anything else
        with it: no callbacks, no webhooks, no retries or repeats it may carry."""
        log.warning("job %s: refused, not an mlxq job", job.id)
        why = f"Refused: an mlxq worker runs only {sorted(ALLOWED_FUNCTIONS)}."
        try:
            self._worker.fail_foreign(job, job_queue, why, self._config.refused_ttl_s)
        except Exception:  # it stays in RQ as it is; it never runs either way
            log.exception("job %s: could not record its refusal", job.id)
        self._free_slot(job.id)

    def _read_request(self, job: Job) -> JobRequest:
        """The job's request, of the kind its function names (generation or embedding)."""
        try:
            request = read_job_request(job)
        except UnreadableJob as exc:
            raise InvalidRequest(f"Malformed job payload: {exc}.") from exc
        if time.time() > request.deadline:
            raise JobTimedOut("The request's deadline passed while it waited in the queue.")
        return request


def _log_failure(future: Future[None]) -> None:
    if future.exception() is not None:
        log.error("could not start a job", exc_info=future.exception())
