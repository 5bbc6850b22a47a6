"""An RQ worker that runs many jobs at once in one process, through a batching engine.

RQ has no public way to run several jobs concurrently in one process, so this worker keeps
RQ's bookkeeping (registration, heartbeats, executions, registries, results; reached through
shared/rq_bridge/) but replaces its one-job-at-a-time loop. The worker never forks, so a
loaded MLX model is safe. It runs seven threads, each owning its state (docs/architecture.md
has the table; the second preparer starts when two jobs are prepared at once):

- the **main thread** (``BatchingWorker.work``, this module) heartbeats (worker/heartbeat.py),
  waits for a free batch slot, takes the next job and hands it to a preparer;
- two **preparer threads** (worker/job_starter.py) claim, read, tokenize and record the start
  of one job each, then hand it to the engine (``engine.submit``) or refuse it
  (``reporter.outbox.refuse``);
- an **engine thread** per model held (worker/mlx_engine.py, worker/embedding_engine.py),
  which generates and posts its outputs to the reporter's outbox; the engines are the model
  host's (worker/model_host.py), which the rest of the worker sees as one engine;
- the **loader thread** (worker/model_loader.py) loads models on demand while the others
  generate;
- the **reporter thread** (worker/reporter.py) publishes events and ends jobs in RQ, then
  frees the job's slot (``_job_done``);
- the **cancel listener** (worker/cancel_listener.py), a redis-py pub/sub thread, forwards
  the API's cancellations to ``engine.cancel`` (or holds them for a job still starting);
- **RQ's command listener**, a redis-py pub/sub thread RQ starts in ``bootstrap``
  (``Worker.subscribe``, channel ``rq:pubsub:<worker name>``), handles RQ's commands such as
  ``rq``'s ``send_shutdown_command`` (a SIGINT to this process: a graceful stop).

Rank 0 of a worker group (worker/group/) runs one more, the **group watch**, which ends the
process when another rank of its group falls silent.

Everything a worker is configured with comes in one ``WorkerConfig`` (worker/config.py).
It serves the queues of the models it holds (worker/model_queues.py); which models it loads
and unloads is its model keeper's work (worker/model_keeper.py, worker/placement.py).
"""

import logging
import threading
import time
from typing import Any

import redis
from rq.job import Job
from rq.queue import Queue

from shared.backoff import Backoff
from shared.keys import is_batch_lane
from shared.protocol import deregister_worker, forget_catalogue
from shared.rq_bridge import ConcurrentWorkerBase, release_queue
from shared.settings import Settings
from worker.cancel_listener import CancelListener
from worker.config import WorkerConfig
from worker.heartbeat import Heartbeat
from worker.job_starter import JobStarter
from worker.lanes import LaneSlots
from worker.model_host import ModelHost
from worker.model_keeper import ModelKeeper
from worker.model_queues import ModelQueues
from worker.reporter import Outbox, Reporter
from worker.starting import StartingJobs

log = logging.getLogger(__name__)

DEQUEUE_TIMEOUT_S = 1
"""How long one blocking dequeue waits: bounds how late a stop request is noticed."""
DRAIN_POLL_S = 0.05
"""While draining, how often the worker looks whether its last jobs have ended."""
IDLE_POLL_S = 1.0
"""While suspended (``rq suspend``), how often the worker looks again."""
LOADING_POLL_S = 0.1
"""While a model loads (or none is held), how long one dequeue waits: a finished load is
served within this, not a second later."""
PLACEMENT_POLL_S = 0.25
"""While the worker may load models it does not hold, how long one dequeue waits: the
placement (worker/model_keeper.py) looks for demand this often."""


class BatchingWorker(ConcurrentWorkerBase):
    def __init__(
        self,
        queues: list[Queue],
        *,
        engine: ModelHost,
        outbox: Outbox,
        config: WorkerConfig,
        settings: Settings,
        **rq_options: Any,
    ) -> None:
        """``queues``: the default model's shared queue (RQ registers the worker with it).
        The worker serves the queues of every model its ``engine`` (the model host) holds:
        for each, its own queue (first), the API keys' queues in turn with the shared one
        (worker/fair_share.py), and the batches' lanes (last, into at most
        ``config.batch_slots`` slots). The engines answer into ``outbox``, the reporter's.
        ``rq_options`` are RQ's own (``connection``, ``serializer``, ``name``)."""
        super().__init__(queues, **rq_options)
        self.model_queues = ModelQueues(
            self.connection, queues[0].serializer, self.name, settings.queue_of
        )
        self.keeper = ModelKeeper(self.connection, self.name, engine, self.model_queues, settings)
        self.config = config
        self.engine = engine
        self.lanes = LaneSlots(config.batch_slots)
        self._slots = threading.Semaphore(config.concurrency)
        self._state_lock = threading.Lock()
        """Held while the running count and RQ's worker state change together."""
        self._backoff = Backoff(first_s=0.5, cap_s=10.0)
        self.reporter = Reporter(
            self.connection,
            self.name,
            self,
            self._job_done,
            engine.cancel,
            outbox=outbox,
            config=config,
            claims_prefixes=engine.reuses_prefixes,
        )
        starting = StartingJobs()
        self.beat = Heartbeat(
            self, engine, self.reporter, self._state_lock, config, keeper=self.keeper
        )
        self.starter = JobStarter(
            self,
            engine,
            self.reporter,
            starting,
            self._state_lock,
            config,
            self._free_slot,
            engine.load_wait,
        )
        self.cancels = CancelListener(self.connection, self.name, engine, self.reporter, starting)

    # -- the loop --------------------------------------------------------------------------

    def work(  # type: ignore[override]  # RQ's other options do not apply
        self,
        burst: bool = False,
        logging_level: str | None = None,
        *,
        handle_signals: bool = True,
        **_: Any,
    ) -> bool:
        """Serve jobs until stopped (SIGINT, SIGTERM, ``stop_after_running_jobs``), or in
        ``burst`` mode until the queues are empty. ``handle_signals=False`` runs the loop in
        a thread other than the main one (Python lets only the main thread install signal
        handlers; the in-process tests do it): stop it with ``stop_after_running_jobs``."""
        self.bootstrap(logging_level or "INFO")
        if handle_signals:
            self.install_signal_handlers()
        self.engine.start()
        self.reporter.start()
        self.cancels.start()
        self.keeper.start()
        worked = False
        try:
            while not self.stop_requested:
                self.beat.tick()
                self.keeper.turn()
                if self.beat.suspended:
                    if burst:
                        break
                    time.sleep(IDLE_POLL_S)
                    continue
                if not self._slots.acquire(timeout=DEQUEUE_TIMEOUT_S):
                    continue
                dequeued = self._dequeue()
                if dequeued is None:
                    self._slots.release()
                    if burst and self.reporter.running_count == 0:
                        break
                    continue
                if self.stop_requested:
                    self._give_back(*dequeued)
                    break
                self.starter.start(*dequeued)
                worked = True
        finally:
            self._drain()
            self.engine.stop()
            self.reporter.stop()
            self.cancels.stop()
            self._deregister()
            self.teardown()
        return worked

    def on_stop_signal(self) -> None:
        log.info("worker %s: stopping; finishing %d job(s)", self.name, self.reporter.running_count)

    def _dequeue(self) -> tuple[Job, Queue] | None:
        """The next job of a model this worker holds: interactive queues first, at every
        dequeue (this worker's own, then each model's keys' and shared queues, model by model
        in turn); the batches' lanes, in turn, only while batch lines hold fewer than their
        share of the slots. While a model loads, or none is held, it waits briefly."""
        if self.model_queues.empty:
            time.sleep(LOADING_POLL_S)
            return None
        timeout: float = DEQUEUE_TIMEOUT_S
        if self.engine.loading():
            timeout = LOADING_POLL_S
        elif self.keeper.may_load_more:
            timeout = PLACEMENT_POLL_S
        try:
            queues = self.model_queues.interactive()
            if self.lanes.batch_has_room():
                queues += self.model_queues.lanes()
            result = self.dequeue(timeout, queues)
        except redis.RedisError as exc:  # unreachable, or full (a dequeue writes: BLMOVE)
            log.warning("worker %s: cannot take a job from Redis (%s); retrying", self.name, exc)
            self._backoff.sleep()
            return None
        self._backoff.reset()
        if result is not None:
            job, job_queue = result
            self.lanes.taken(job.id, is_batch_lane(job_queue.name))
            self.engine.taken(job.id, self.model_queues.model_of(job_queue.name) or "")
            self.model_queues.served(job_queue.name)
        return result

    def _give_back(self, job: Job, job_queue: Queue) -> None:
        """A job taken while the stop signal arrived goes back to the front of its queue."""
        self.give_back(job, job_queue)
        self._free_slot(job.id)
        log.info("worker %s: stopping; job %s goes back to the queue", self.name, job.id)

    # -- batch slots -------------------------------------------------------------------------

    def _free_slot(self, job_id: str) -> None:
        """A preparer (a job that never reached the reporter) or the reporter (a job that
        ended): the job's slot is free again."""
        self.lanes.freed(job_id)
        self.engine.released(job_id)
        self._slots.release()

    def _job_done(self, job_id: str) -> None:
        """Reporter thread: a job has ended in RQ; its slot is free again."""
        self._free_slot(job_id)
        with self._state_lock:
            if self.reporter.running_count == 0 and not self.beat.suspended:
                try:
                    self.show_state(suspended=False, running=0)
                except redis.RedisError as exc:  # RQ's display only; the next start sets it
                    log.warning("worker %s: could not show its idle state (%s)", self.name, exc)

    # -- stopping ------------------------------------------------------------------------------

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.drain_timeout_s
        self.starter.shutdown()  # jobs being prepared start, then drain
        while self.reporter.running_count and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)
        if self.reporter.running_count:
            log.warning(
                "worker %s: %d job(s) still running after the drain timeout",
                self.name,
                self.reporter.running_count,
            )

    def _deregister(self) -> None:
        """Leave the live set, and hand requests still routed to this worker to the others."""
        try:
            deregister_worker(self.connection, self.name)
            forget_catalogue(self.connection, self.name)
            moved = sum(release_queue(self.connection, q) for q in self.model_queues.own_queues())
            if moved:
                log.info("worker %s: %d routed request(s) go to the shared queue", self.name, moved)
        except redis.RedisError as exc:
            log.warning("worker %s: could not deregister (%s)", self.name, exc)
