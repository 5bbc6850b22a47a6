"""Every use of RQ's (and redis-py's) private or version-specific internals, in one package.

mlxq keeps RQ's bookkeeping so that RQ's tools see ordinary jobs, but runs many jobs at once
in one process, enqueues from an event loop and recovers jobs of dead workers itself; RQ has
no public API for any of that. This package is the only code that touches RQ privates
(``_stop_requested``, ``_ordered_queues``, ``executions``, ``job._result`` / ``job._status``,
the steps of ``prepare_execution``), RQ's Redis keys, or a redis-py pipeline's
``command_stack``. ``rq`` is pinned exactly in pyproject.toml for it: an RQ upgrade is this
package's work. One module per side, each importable from here (``rq_bridge.queue_key``):

- ``enqueue``: the API enqueues (recorded, replayed on redis.asyncio) and withdraws a job;
- ``concurrent_worker``: the worker's base class, RQ's start and endings of a job;
- ``recovery``: the reaper requeues or fails a dead worker's jobs, and forgets the worker;
  a job taken but never started goes back to its queue;
- ``queues``: queue names and depths, moving a waiting job between queues;
- ``job_records``: one job's record, fetched, and stripped of its prompt once ended.
"""

from shared.rq_bridge.concurrent_worker import (
    ConcurrentWorkerBase,
)
from shared.rq_bridge.enqueue import (
    EnqueueRecorder,
    RecordedCommand,
    pushed_queue_length,
    withdraw_queued_job,
)
from shared.rq_bridge.job_records import (
    add_strip_payload,
    fetch_job,
    is_started,
    job_queue,
)
from shared.rq_bridge.queues import (
    QueueDepth,
    add_refused,
    forget_queue,
    forget_queue_async,
    home_command,
    move_queued_job_home,
    queue_depths,
    queue_key,
    queue_names,
    queued_job_ids,
    release_queue,
)
from shared.rq_bridge.recovery import (
    ATTEMPTS_FIELD,
    add_failure,
    add_requeue_at_front,
    forget_worker,
    recover_taken_job,
    runs_so_far,
)

__all__ = [
    "ATTEMPTS_FIELD",
    "QueueDepth",
    "add_refused",
    "ConcurrentWorkerBase",
    "EnqueueRecorder",
    "RecordedCommand",
    "add_failure",
    "add_requeue_at_front",
    "add_strip_payload",
    "fetch_job",
    "forget_queue",
    "forget_queue_async",
    "forget_worker",
    "home_command",
    "is_started",
    "job_queue",
    "move_queued_job_home",
    "pushed_queue_length",
    "queue_depths",
    "queue_key",
    "queue_names",
    "queued_job_ids",
    "recover_taken_job",
    "release_queue",
    "runs_so_far",
    "withdraw_queued_job",
]
