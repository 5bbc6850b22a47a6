"""The cancel listener: a redis-py pub/sub thread on which the API names jobs whose client
went away (``protocol.CANCEL_CHANNEL``; every worker listens, each acts on its own jobs).

It owns nothing: it forwards a cancellation to ``engine.cancel`` for a job this worker runs,
or holds it for a job still starting (worker/starting.py), so that none is lost between a
job's cancel check and the engine having it.
"""

import contextlib
import logging
import time
from typing import Any

import redis

from shared import protocol
from worker.engine_api import Engine
from worker.reporter import Reporter
from worker.starting import StartingJobs

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1.0
"""After losing Redis, how long the listener waits before it subscribes again; also how
often its thread looks for a stop."""


class CancelListener:
    def __init__(
        self,
        connection: redis.Redis,
        worker_name: str,
        engine: Engine,
        reporter: Reporter,
        starting: StartingJobs,
    ) -> None:
        self._connection = connection
        self._worker_name = worker_name
        self._engine = engine
        self._reporter = reporter
        self._starting = starting
        self._thread: Any = None
        self._listener: Any = None

    def start(self) -> None:
        self._listener = listener = redis.Redis(
            connection_pool=self._connection.connection_pool
        ).pubsub()

        def on_message(message: dict) -> None:
            self.on_cancel(protocol.cancelled_job_id(message))

        def on_error(exc: BaseException, pubsub: Any, thread: Any) -> None:
            log.warning("worker %s: cancellation listener lost Redis (%s)", self._worker_name, exc)
            time.sleep(RETRY_AFTER_S)

        listener.subscribe(**{protocol.CANCEL_CHANNEL: on_message})
        self._thread = listener.run_in_thread(
            sleep_time=RETRY_AFTER_S, daemon=True, exception_handler=on_error
        )
        self._thread.name = "mlxq-cancel-listener"

    def stop(self) -> None:
        """Stop the thread and wait for it: leaving the channel wakes it at once (the reply
        is a message), so it does not wait out its second."""
        if self._thread is None:
            return
        self._thread.stop()
        with contextlib.suppress(redis.RedisError, OSError):
            self._listener.unsubscribe()
        self._thread.join(timeout=RETRY_AFTER_S)
        with contextlib.suppress(redis.RedisError, OSError):
            self._listener.close()

    def on_cancel(self, job_id: str) -> None:
        """The listener's thread: the API says this job's client went away."""
        if self._starting.hold_cancel(job_id):
            log.info("job %s: client went away while it started", job_id)
        elif self._reporter.is_running(job_id):
            log.info("job %s: client went away, cancelling", job_id)
            self._engine.cancel(job_id)
