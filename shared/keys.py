"""Redis key and channel names that the API and the workers must agree on."""

import hashlib
import re

PREFIX = "mlxq"


def queue_name_for_model(model_id: str) -> str:
    """One RQ queue per model, so a worker only takes jobs for the model it loaded.

    Readable when the id is, unique always (a short hash of the exact id is appended).
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_id.rsplit("/", 1)[-1]).strip("-").lower()
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return f"{PREFIX}-{slug[:40]}-{digest}"


def job_events_stream(job_id: str) -> str:
    """Per-job Redis stream of events (started, tokens, done/error): durable, re-readable."""
    return f"{PREFIX}:job:{job_id}:events"


def job_events_channel(job_id: str) -> str:
    """Per-job pub/sub channel: the same events, pushed so the API need not poll."""
    return f"{PREFIX}:job:{job_id}:notify"


LIVE_WORKERS = f"{PREFIX}:workers:live"
"""Sorted set: worker name -> time of its last heartbeat (once a second)."""

WORKER_LIVENESS_S = 5.0
"""A worker whose last heartbeat is older than this is not counted as live."""


def worker_stats_key(worker_name: str) -> str:
    """Hash where a worker reports its model and the largest batch it has run."""
    return f"{PREFIX}:worker:{worker_name}:stats"


CANCEL_CHANNEL = f"{PREFIX}:cancel"
"""Pub/sub channel on which the API names jobs whose client went away; every worker listens."""


def job_cancel_key(job_id: str) -> str:
    """Set when a job's client went away, for a worker that takes the job afterwards."""
    return f"{PREFIX}:job:{job_id}:cancelled"


def worker_jobs_key(worker_name: str) -> str:
    """Set of the job ids a worker is running, so they can be recovered if it dies."""
    return f"{PREFIX}:worker:{worker_name}:jobs"
