"""The worker's side: RQ's bookkeeping for several jobs at once, in one process.

``ConcurrentWorkerBase`` is RQ's ``SimpleWorker`` (never forks, so a loaded MLX model is safe)
with public names for the internals that worker/rq_worker.py builds its loop on: RQ's own
start and endings of a job, split so that mlxq's writes share their round trips.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rq import worker_registration
from rq.exceptions import DequeueTimeout
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.results import Result
from rq.suspension import is_suspended
from rq.utils import utcformat
from rq.worker import SimpleWorker, WorkerStatus

from shared.rq_bridge.job_records import add_strip_payload
from shared.rq_bridge.queues import add_refused


class ConcurrentWorkerBase(SimpleWorker):
    """RQ's ``SimpleWorker`` (never forks) with public names for the internals a worker that
    runs several jobs at once needs. ``worker/rq_worker.py`` builds its loop on these."""

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def stop_after_running_jobs(self) -> None:
        self._stop_requested = True

    def install_signal_handlers(self) -> None:
        self._install_signal_handlers()

    def _shutdown(self) -> None:
        # RQ raises StopRequested from the signal handler when idle, which can land between
        # taking a job and handing it over; a flag checked each second never loses one.
        self.stop_after_running_jobs()
        self.set_shutdown_requested_date()
        self.on_stop_signal()

    def unsubscribe(self) -> None:
        """RQ's, with its listener thread told to stop before the channel is left: the
        unsubscribe's reply then wakes it to see that. In RQ's order the thread may take the
        reply first and wait for a new subscription, and the stop waits out the join's second."""
        if self.pubsub_thread:
            self.pubsub_thread.stop()
            self.pubsub.unsubscribe()
            self.pubsub_thread.join(timeout=1)
            self.pubsub.close()

    def on_stop_signal(self) -> None:
        """Called in the signal handler after a stop was requested (SIGINT, SIGTERM)."""

    def serve_first(self, queue: Queue) -> None:
        """Take jobs from ``queue`` ahead of the others (a worker's own queue)."""
        self.queues.insert(0, queue)
        self._ordered_queues = self.queues[:]

    def rejoin(self) -> None:
        """Register again after the reaper forgot this worker (it was silent, then woke):
        RQ's ``register_birth`` without its check, since heartbeats already wrote the key."""
        self.executions.clear()  # the jobs they tracked were given to other workers
        with self.connection.pipeline() as pipeline:
            pipeline.delete(self.key, self.executions_key)
            self.birth_date = self.last_heartbeat = datetime.now(UTC)
            pipeline.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipeline)
            pipeline.expire(self.key, self.worker_ttl + 60)
            pipeline.execute()

    def is_suspended(self) -> bool:
        """``rq suspend`` is in force: take no new job."""
        return bool(is_suspended(self.connection, self))

    def serving_queues(self) -> list[Queue]:
        """The queues this worker takes jobs from, in the order it serves them."""
        return list(self._ordered_queues)

    def dequeue(self, timeout_s: float, queues: list[Queue]) -> tuple[Job, Queue] | None:
        """The next job from ``queues`` (the first that has one), through RQ's intermediate
        queue. ``timeout_s`` may be a fraction: RQ hands it to BLPOP / BLMOVE, which take one."""
        timeout: Any = timeout_s
        try:
            return self.queue_class.dequeue_any(
                queues,
                timeout,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
            )
        except DequeueTimeout:
            return None

    def give_back(self, job: Job, queue: Queue) -> None:
        """A job taken but not started goes back to the front of its queue."""
        with self.connection.pipeline() as pipeline:
            pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.lpush(queue.key, job.id)
            pipeline.execute()

    def add_start(self, pipeline: Any, job: Job, queue: Queue) -> Execution:
        """RQ's ``prepare_execution`` and ``prepare_job_execution`` for one job, queued on the
        caller's pipeline so that its own writes go in the same round trip."""
        ttl = self.get_heartbeat_ttl(job)
        execution = Execution.create(job, ttl, pipeline=pipeline, worker_name=self.name)
        self.executions[execution.id] = execution
        self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
        self.heartbeat(ttl, pipeline=pipeline)
        job.heartbeat(datetime.now(UTC), ttl, pipeline=pipeline)
        job.prepare_for_execution(self.name, pipeline=pipeline)
        pipeline.persist(job.key)
        pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
        return execution

    def undo_start(self, execution: Execution) -> None:
        """The other half of ``add_start``: its round trip failed, so the execution it
        recorded in this worker's own table never started."""
        self.executions.pop(execution.id, None)

    def end_finished(
        self, job: Job, queue: Queue, execution: Execution, result: dict[str, Any]
    ) -> None:
        """End a job that answered: RQ's result, registries and worker statistics."""
        job.ended_at = datetime.now(UTC)
        job._result = result
        job._status = JobStatus.FINISHED
        self.handle_job_success(job, queue, queue.started_job_registry, execution)

    def end_failed(
        self, job: Job, queue: Queue, execution: Execution, why: str, keep_s: int | None = None
    ) -> None:
        """End a job that failed; its record keeps no prompt, and only ``keep_s`` seconds
        when given (a refused request needs no day of diagnosis)."""
        job.ended_at = datetime.now(UTC)
        job._status = JobStatus.FAILED
        if keep_s is not None:
            job.failure_ttl = keep_s
        self.handle_job_failure(job, queue, exc_string=why, execution=execution)
        with self.connection.pipeline() as pipeline:
            add_strip_payload(pipeline, job)
            if keep_s is not None:  # a refusal: counted apart from failures (queues.py)
                add_refused(pipeline, queue.name, job.id, keep_s)
            pipeline.execute()

    def end_cancelled(self, job: Job, queue: Queue, execution: Execution, keep_s: int) -> None:
        """A job whose client went away is RQ's "canceled", not "failed": it did not break."""
        job.ended_at = datetime.now(UTC)
        job.failure_ttl = keep_s
        with self.connection.pipeline() as pipeline:
            add_strip_payload(pipeline, job)
            job.set_status(JobStatus.CANCELED, pipeline=pipeline)
            pipeline.hset(job.key, "ended_at", utcformat(job.ended_at))
            queue.canceled_job_registry.add(job, ttl=job.failure_ttl or 0, pipeline=pipeline)
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            if job.failure_ttl:
                pipeline.expire(job.key, job.failure_ttl)
            pipeline.execute()

    def fail_foreign(self, job: Job, queue: Queue, why: str, keep_s: int) -> None:
        """Fail a job that is not mlxq's own without RQ's failure handling, which would run
        the callbacks, webhooks, retries and repeats the job names: only its status, the
        failed registry (for ``keep_s`` seconds) and a record without its payload."""
        with self.connection.pipeline() as pipeline:
            pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            job.set_status(JobStatus.FAILED, pipeline=pipeline)
            queue.failed_job_registry.add(job, ttl=keep_s, exc_string=why, pipeline=pipeline)
            Result.create_failure(
                job, keep_s, exc_string=why, worker_name=self.name, pipeline=pipeline
            )
            add_strip_payload(pipeline, job)
            pipeline.expire(job.key, keep_s)
            pipeline.execute()

    def show_state(self, *, suspended: bool, running: int) -> None:
        """RQ's worker state, as ``rq info`` and dashboards show it."""
        if suspended:
            self.set_state(WorkerStatus.SUSPENDED)
        else:
            self.set_state(WorkerStatus.BUSY if running else WorkerStatus.IDLE)
