"""An RQ worker that runs many jobs at once in one process, through a batching engine.

RQ has no public way to run several jobs concurrently in one process, so this worker keeps
RQ's bookkeeping (registration, heartbeats, executions, started/finished/failed registries,
results) but replaces its one-job-at-a-time loop: the main thread takes a job whenever a
batch slot is free and hands it to the engine; the reporter thread finishes jobs through
RQ's own ``handle_job_success`` / ``handle_job_failure``. It never forks, so a loaded MLX
model is safe. It relies on RQ 3.0 internals; rq is pinned exactly in pyproject.toml.
"""

import collections
import logging
import os
import queue
import socket
import threading
import time
from datetime import UTC, datetime

import redis
from rq.exceptions import DequeueTimeout
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker, WorkerStatus

from shared import keys
from shared.errors import Cancelled, GenerationFailed, InvalidRequest, JobTimedOut, MlxqError
from shared.jobs import ALLOWED_FUNCTIONS
from shared.schemas import GenerationRequest, StartedEvent
from worker.engine_api import Engine, Failed
from worker.publisher import EventPublisher
from worker.reporter import Reporter, RunningJob

log = logging.getLogger(__name__)

DEQUEUE_TIMEOUT_S = 1
"""How long one blocking dequeue waits: bounds how late a stop request is noticed."""
HEARTBEAT_INTERVAL_S = 1.0
"""mlxq's own liveness heartbeat; the API declares a worker dead after WORKER_LIVENESS_S."""
MAX_BACKOFF_S = 10.0
TOKEN_RATE_WINDOW_S = 10.0


class BatchingWorker(SimpleWorker):
    def __init__(
        self,
        queues: list[Queue],
        *,
        engine: Engine,
        outputs: queue.Queue,
        concurrency: int,
        event_ttl_s: int,
        drain_timeout_s: float = 60.0,
        log_content: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(queues, **kwargs)
        self.engine = engine
        self._outputs = outputs
        self._slots = threading.Semaphore(concurrency)
        self._drain_timeout_s = drain_timeout_s
        self._log_content = log_content
        self._publisher = EventPublisher(self.connection, event_ttl_s)
        self._reporter = Reporter(self, self._publisher, outputs, self._job_done, log_content)
        self._concurrency = concurrency
        self._last_heartbeat = 0.0
        self._token_samples: collections.deque[tuple[float, int]] = collections.deque()
        self._backoff_s = 0.5
        self._cancel_listener = None

    # -- the loop --------------------------------------------------------------------------

    def work(self, burst: bool = False, logging_level: str | None = None, **_ignored) -> bool:
        self.bootstrap(logging_level or "INFO")
        self._install_signal_handlers()
        self.engine.start()
        self._reporter.start()
        self._listen_for_cancellations()
        worked = False
        try:
            while not self._stop_requested:
                self._keep_alive()
                if not self._slots.acquire(timeout=DEQUEUE_TIMEOUT_S):
                    continue
                dequeued = self._dequeue()
                if dequeued is None:
                    self._slots.release()
                    if burst and self._reporter.running_count == 0:
                        break
                    continue
                if self._stop_requested:
                    self._give_back(*dequeued)
                    break
                self._start_job(*dequeued)
                worked = True
        finally:
            self._drain()
            self.engine.stop()
            self._reporter.stop()
            if self._cancel_listener is not None:
                self._cancel_listener.stop()
            self._deregister()
            self.teardown()
        return worked

    def _shutdown(self) -> None:
        # RQ raises StopRequested from the signal handler when idle, which can land between
        # taking a job and handing it over; a flag checked each second never loses one.
        self._stop_requested = True
        self.set_shutdown_requested_date()
        log.info(
            "worker %s: stopping; finishing %d job(s)", self.name, self._reporter.running_count
        )

    def _keep_alive(self) -> None:
        if time.monotonic() - self._last_heartbeat < HEARTBEAT_INTERVAL_S:
            return
        self._last_heartbeat = time.monotonic()
        try:
            with self.connection.pipeline() as pipeline:
                self.heartbeat(pipeline=pipeline)
                pipeline.hset(keys.worker_stats_key(self.name), mapping=self._stats())
                pipeline.expire(keys.worker_stats_key(self.name), self.worker_ttl + 60)
                pipeline.zadd(keys.LIVE_WORKERS, {self.name: time.time()})
                pipeline.execute()
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("worker %s: Redis unreachable (%s)", self.name, exc)

    def _stats(self) -> dict[str, str | int | float]:
        return {
            "model": self.engine.model_id,
            "queues": ",".join(self.queue_names()),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slots": self._concurrency,
            "running": self._reporter.running_count,
            "peak_batch": self.engine.peak_batch_size,
            "tokens_total": self.engine.generated_tokens,
            "tokens_per_s": round(self._tokens_per_s(), 2),
        }

    def _tokens_per_s(self) -> float:
        """Generation rate over the last TOKEN_RATE_WINDOW_S seconds."""
        now, total = time.monotonic(), self.engine.generated_tokens
        self._token_samples.append((now, total))
        while now - self._token_samples[0][0] > TOKEN_RATE_WINDOW_S:
            self._token_samples.popleft()
        first_time, first_total = self._token_samples[0]
        return (total - first_total) / (now - first_time) if now > first_time else 0.0

    def _dequeue(self) -> tuple[Job, Queue] | None:
        try:
            result = self.queue_class.dequeue_any(
                self._ordered_queues,
                DEQUEUE_TIMEOUT_S,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
            )
            self._backoff_s = 0.5
            return result
        except DequeueTimeout:
            return None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._wait_for_redis(exc)
            return None

    def _wait_for_redis(self, exc: Exception) -> None:
        log.warning(
            "worker %s: cannot reach Redis (%s); retrying in %.1fs", self.name, exc, self._backoff_s
        )
        time.sleep(self._backoff_s)
        self._backoff_s = min(self._backoff_s * 2, MAX_BACKOFF_S)

    def _give_back(self, job: Job, job_queue: Queue) -> None:
        """A job taken while the stop signal arrived goes back to the front of its queue."""
        with self.connection.pipeline() as pipeline:
            pipeline.lrem(job_queue.intermediate_queue_key, 1, job.id)
            pipeline.lpush(job_queue.key, job.id)
            pipeline.execute()
        self._slots.release()
        log.info("worker %s: stopping; job %s goes back to the queue", self.name, job.id)

    def _listen_for_cancellations(self) -> None:
        """A pub/sub thread: the API names jobs whose client went away."""
        listener = redis.Redis(connection_pool=self.connection.connection_pool).pubsub()

        def on_cancel(message: dict) -> None:
            job_id = message["data"].decode()
            if self._reporter.is_running(job_id):
                log.info("job %s: client went away, cancelling", job_id)
                self.engine.cancel(job_id)

        def on_error(exc: BaseException, pubsub, thread) -> None:
            log.warning("worker %s: cancellation listener lost Redis (%s)", self.name, exc)
            time.sleep(1.0)

        listener.subscribe(**{keys.CANCEL_CHANNEL: on_cancel})
        self._cancel_listener = listener.run_in_thread(
            sleep_time=1.0, daemon=True, exception_handler=on_error
        )

    # -- one job ---------------------------------------------------------------------------

    def _start_job(self, job: Job, job_queue: Queue) -> None:
        # Read and check the request before any Redis write, so that one round trip records
        # the start in RQ, checks for a cancellation and tells the API, all at once.
        prepared, refusal = None, None
        try:
            request = self._read_request(job)
            timeout_s = min(float(job.timeout or 600), request.deadline - time.time())
            prepared = self.engine.prepare(job.id, request, timeout_s)
        except MlxqError as error:
            refusal = error
        except Exception as exc:
            log.exception("job %s: could not prepare the request", job.id)
            refusal = GenerationFailed(f"Could not prepare the request: {exc}")
        running = RunningJob(job, job_queue, execution=None)
        try:
            cancelled = self._record_start(running, announce=prepared is not None)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # RQ's maintenance fails jobs left in its intermediate queue.
            log.error("job %s: Redis lost while starting it (%s)", job.id, exc)
            self._slots.release()
            return
        self._reporter.track(running)
        if cancelled:
            refusal = Cancelled("The client went away before the job started.")
        if refusal is not None:
            self._outputs.put(Failed(job.id, refusal))
            return
        assert prepared is not None
        if self._log_content:
            log.info("job %s: request %s", job.id, prepared.request.model_dump_json())
        self.engine.submit(prepared)

    def _record_start(self, running: RunningJob, announce: bool) -> bool:
        """RQ's prepare_execution and prepare_job_execution, in one pipeline with mlxq's own
        writes; returns whether the job's client has already gone away."""
        job, job_queue = running.job, running.queue
        ttl = self.get_heartbeat_ttl(job)
        with self.connection.pipeline() as pipeline:
            running.execution = Execution.create(job, ttl, pipeline=pipeline, worker_name=self.name)
            self.executions[running.execution.id] = running.execution
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            self.heartbeat(ttl, pipeline=pipeline)
            job.heartbeat(datetime.now(UTC), ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            pipeline.lrem(job_queue.intermediate_queue_key, 1, job.id)
            pipeline.exists(keys.job_cancel_key(job.id))
            cancelled_at = len(pipeline) - 1
            if announce:  # "started" means accepted: a refused job's first event is its error
                started = StartedEvent(seq=running.take_seq(), worker=self.name)
                self._publisher.add(pipeline, job.id, started)
                pipeline.sadd(keys.worker_jobs_key(self.name), job.id)
            results = pipeline.execute()
        return bool(results[cancelled_at])

    def _read_request(self, job: Job) -> GenerationRequest:
        """Only mlxq's own job function runs here: RQ would import any dotted path it is given."""
        if job.func_name not in ALLOWED_FUNCTIONS:
            log.warning("job %s: refused, it names %r", job.id, job.func_name)
            raise InvalidRequest(f"Refused: an mlxq worker runs only {sorted(ALLOWED_FUNCTIONS)}.")
        try:
            request = GenerationRequest.model_validate(job.kwargs["request"])
        except Exception as exc:
            raise InvalidRequest(f"Malformed job payload: {exc}") from exc
        if time.time() > request.deadline:
            raise JobTimedOut("The request's deadline passed while it waited in the queue.")
        return request

    def _job_done(self) -> None:
        self._slots.release()
        if self._reporter.running_count == 0:
            self.set_state(WorkerStatus.IDLE)

    def _drain(self) -> None:
        deadline = time.monotonic() + self._drain_timeout_s
        while self._reporter.running_count and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._reporter.running_count:
            log.warning(
                "worker %s: %d job(s) still running after the drain timeout",
                self.name,
                self._reporter.running_count,
            )

    def _deregister(self) -> None:
        try:
            self.connection.zrem(keys.LIVE_WORKERS, self.name)
        except redis.RedisError as exc:
            log.warning("worker %s: could not deregister (%s)", self.name, exc)
