"""The Redis records mlxq's own processes exchange, written and read here and nowhere else.

One module per kind of record; each is importable from here (``protocol.add_event``):

- ``job_events``: a job's numbered events (stream and pub/sub channel) and cancellations;
- ``worker_records``: heartbeats, worker stats, the jobs each worker runs, the reaper's mark;
- ``ownership``: which worker runs a job (set once; events only while it still does), and
  which worker holds a conversation's prefix;
- ``api_processes``: the API processes' own beats, by which workers stop orphaned jobs.

RQ's own keys (queues, registries, workers) are RQ's: see shared/rq_bridge/. The fleet's
recent past, for charts, is shared/history.py's.
"""

from shared.protocol.api_processes import (
    API_ALIVE_TTL_S,
    WAITER_GRACE_S,
    add_waiter_check,
    api_alive_key,
    api_anchor_channel,
    beat_api,
    missing_waiters,
)
from shared.protocol.common import (
    PREFIX,
)
from shared.protocol.job_events import (
    CANCEL_CHANNEL,
    STREAM_MAXLEN,
    add_cancel_check,
    add_cancel_request,
    add_event,
    cancelled_job_id,
    decode_event,
    job_cancel_key,
    job_events_channel,
    job_events_stream,
    next_seq,
    publish_event,
    read_events,
    read_events_async,
    tell_waiter,
)
from shared.protocol.ownership import (
    PUBLISH_IF_RUNNING,
    add_prefix_claims,
    add_release_job,
    claim_job,
    job_owner_key,
    job_suspect_key,
    longest_prefix_owner,
    prefix_owner_key,
    publish_if_running,
)
from shared.protocol.worker_records import (
    HEARTBEAT_INTERVAL_S,
    LIVE_WORKERS,
    STATS_GRACE_S,
    WORKER_LIVENESS_S,
    WorkerStats,
    add_heartbeat,
    add_reaped_mark,
    add_running_job,
    claim_silent_worker,
    deregister_worker,
    forget_running_jobs,
    live_worker_beats,
    read_live_stats_async,
    read_stats,
    remove_running_job,
    running_jobs,
    silent_workers,
    worker_connection_name,
    worker_has_room,
    worker_jobs_key,
    worker_reaped_key,
    worker_stats_key,
)

__all__ = [
    "API_ALIVE_TTL_S",
    "CANCEL_CHANNEL",
    "HEARTBEAT_INTERVAL_S",
    "LIVE_WORKERS",
    "PREFIX",
    "PUBLISH_IF_RUNNING",
    "STATS_GRACE_S",
    "STREAM_MAXLEN",
    "WAITER_GRACE_S",
    "WORKER_LIVENESS_S",
    "WorkerStats",
    "add_cancel_check",
    "add_cancel_request",
    "add_event",
    "add_heartbeat",
    "add_prefix_claims",
    "add_reaped_mark",
    "add_release_job",
    "add_running_job",
    "add_waiter_check",
    "api_alive_key",
    "api_anchor_channel",
    "beat_api",
    "cancelled_job_id",
    "claim_job",
    "claim_silent_worker",
    "decode_event",
    "deregister_worker",
    "forget_running_jobs",
    "job_cancel_key",
    "job_events_channel",
    "job_events_stream",
    "job_owner_key",
    "job_suspect_key",
    "live_worker_beats",
    "longest_prefix_owner",
    "missing_waiters",
    "next_seq",
    "prefix_owner_key",
    "publish_event",
    "publish_if_running",
    "read_events",
    "read_events_async",
    "read_live_stats_async",
    "read_stats",
    "remove_running_job",
    "running_jobs",
    "silent_workers",
    "tell_waiter",
    "worker_connection_name",
    "worker_has_room",
    "worker_jobs_key",
    "worker_reaped_key",
    "worker_stats_key",
]
