"""An RQ worker that runs many jobs at once in one process, through a batching engine.

RQ has no public way to run several jobs concurrently in one process, so this worker keeps
RQ's bookkeeping (registration, heartbeats, executions, started/finished/failed registries,
results) but replaces its one-job-at-a-time loop: the main thread takes a job whenever a
batch slot is free and hands it to the engine; the reporter thread finishes jobs through
RQ's own ``handle_job_success`` / ``handle_job_failure``. It never forks, so a loaded MLX
model is safe. It relies on RQ 3.0 internals; rq is pinned exactly in pyproject.toml.
"""

import logging
import queue
import threading
import time
from datetime import UTC, datetime

import redis
from rq.exceptions import DequeueTimeout
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker, WorkerStatus

from shared import keys
from shared.errors import GenerationFailed, InvalidRequest, JobTimedOut, MlxqError
from shared.jobs import ALLOWED_FUNCTIONS
from shared.schemas import GenerationRequest, StartedEvent
from worker.engine_api import Engine, Failed
from worker.publisher import EventPublisher
from worker.reporter import Reporter, RunningJob

log = logging.getLogger(__name__)

DEQUEUE_TIMEOUT_S = 1
"""How long one blocking dequeue waits: bounds how late a stop request is noticed."""
HEARTBEAT_INTERVAL_S = 1.0


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
        **kwargs,
    ) -> None:
        super().__init__(queues, **kwargs)
        self.engine = engine
        self._outputs = outputs
        self._slots = threading.Semaphore(concurrency)
        self._drain_timeout_s = drain_timeout_s
        self._publisher = EventPublisher(self.connection, event_ttl_s)
        self._reporter = Reporter(self, self._publisher, outputs, self._job_done)
        self._last_heartbeat = 0.0
        self._backoff_s = 1.0

    # -- the loop --------------------------------------------------------------------------

    def work(self, burst: bool = False, logging_level: str | None = None, **_ignored) -> bool:
        self.bootstrap(logging_level or "INFO")
        self._install_signal_handlers()
        self.engine.start()
        self._reporter.start()
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
                self._start_job(*dequeued)
                worked = True
        finally:
            self._drain()
            self.engine.stop()
            self._reporter.stop()
            self._deregister()
            self.teardown()
        return worked

    def _deregister(self) -> None:
        try:
            self.connection.zrem(keys.LIVE_WORKERS, self.name)
        except redis.RedisError as exc:
            log.warning("worker %s: could not deregister (%s)", self.name, exc)

    def _shutdown(self) -> None:
        # RQ raises StopRequested from the signal handler when idle, which can land between
        # taking a job and handing it over; a flag checked each second never loses one.
        self._stop_requested = True
        self.set_shutdown_requested_date()
        log.info(
            "worker %s: stopping; finishing %d running job(s)",
            self.name,
            self._reporter.running_count,
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

    def _stats(self) -> dict[str, str | int]:
        return {
            "model": self.engine.model_id,
            "queues": ",".join(self.queue_names()),
            "running": self._reporter.running_count,
            "peak_batch": self.engine.peak_batch_size,
        }

    def _dequeue(self) -> tuple[Job, Queue] | None:
        try:
            result = self.queue_class.dequeue_any(
                self._ordered_queues,
                DEQUEUE_TIMEOUT_S,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
            )
            self._backoff_s = 1.0
            return result
        except DequeueTimeout:
            return None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning(
                "worker %s: cannot reach Redis (%s); retrying in %.0fs",
                self.name,
                exc,
                self._backoff_s,
            )
            time.sleep(self._backoff_s)
            self._backoff_s = min(self._backoff_s * 2, 30.0)
            return None

    # -- one job ---------------------------------------------------------------------------

    def _start_job(self, job: Job, job_queue: Queue) -> None:
        execution = self.prepare_execution(job)
        self.prepare_job_execution(job, remove_from_intermediate_queue=True)
        job.started_at = datetime.now(UTC)
        running = RunningJob(job, job_queue, execution)
        self._reporter.track(running)
        try:
            request = self._read_request(job)
            prepared = self.engine.prepare(job.id, request, float(job.timeout or 600))
            # "started" means accepted: a refused request's first event is its error.
            self._publisher.publish(job.id, StartedEvent(seq=running.take_seq(), worker=self.name))
        except MlxqError as error:
            self._outputs.put(Failed(job.id, error))
            return
        except Exception as exc:
            log.exception("job %s: could not prepare the request", job.id)
            self._outputs.put(
                Failed(job.id, GenerationFailed(f"Could not prepare the request: {exc}"))
            )
            return
        self.engine.submit(prepared)

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
